"""User-facing errors.

Every mistake a user can make (an unknown name, a bad number, a missing file, NaNs in the data)
raises :class:`FairDistillError`. The CLI prints its message on one line and exits non-zero; the
library never calls ``exit()``.
"""

from __future__ import annotations

from collections.abc import Iterable


class FairDistillError(ValueError):
    """A problem with the user's input, explained in one line."""


def unknown_name(kind: str, name: str, allowed: Iterable[str]) -> FairDistillError:
    """Build the error for a name that is not one of the allowed ones."""
    choices = ", ".join(sorted(allowed))
    return FairDistillError(f"unknown {kind} {name!r}; allowed: {choices}")
