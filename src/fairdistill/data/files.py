"""Finding a benchmark's files under a local data root, and saying exactly what is missing.

A data root is a folder the user owns; each benchmark key looks for its files in a few folder
layouts that the usual download scripts produce (``<root>/MNIST/raw``, ``<root>/mnist``...).
Nothing is ever downloaded: when the files are not there, the error lists the layout expected
under the root, the folders that were searched and what was found in them.

The root comes from ``data_root=`` (``--data-root``), else from the environment variable
``FAIRDISTILL_DATA``; some keys have a system-wide fallback (FashionMNIST from Debian's
``dataset-fashion-mnist`` package).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FairDistillError

DATA_ENV = "FAIRDISTILL_DATA"


class MissingDataError(FairDistillError):
    """A benchmark's files are missing or unreadable; the message says what was expected."""


def data_root_from(data_root: str | Path | None) -> Path | None:
    """The data root given, else ``$FAIRDISTILL_DATA``, else None (a given root must be a folder)."""
    if data_root is None:
        env = os.environ.get(DATA_ENV)
        if not env:
            return None
        data_root, origin = env, f"${DATA_ENV}"
    else:
        origin = "data root"
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FairDistillError(f"{origin} {str(root)!r} does not exist or is not a folder")
    return root


@dataclass(frozen=True)
class Layout:
    """Where a benchmark's files may lie and which must be there.

    ``folders``: candidate folders relative to the root (``"."`` is the root itself), tried in order;
    ``files``: for each required file, the accepted names (``train-images-idx3-ubyte`` or its ``.gz``);
    ``dirs``: required sub-folders; ``fallbacks``: absolute folders tried after the root's.
    """

    key: str
    folders: Sequence[str]
    files: Sequence[Sequence[str]] = ()
    dirs: Sequence[str] = ()
    fallbacks: Sequence[Path] = field(default_factory=tuple)
    note: str = ""

    def expected(self) -> str:
        want = [" or ".join(names) for names in self.files] + [f"{d}/" for d in self.dirs]
        where = " or ".join(f"<root>/{f}" if f != "." else "<root>" for f in self.folders)
        text = f"{where} holding: {', '.join(want)}"
        return f"{text} ({self.note})" if self.note else text

    def candidates(self, root: Path | None) -> list[Path]:
        found = [root / f if f != "." else root for f in self.folders] if root is not None else []
        return found + [Path(p) for p in self.fallbacks]

    def missing_in(self, folder: Path) -> list[str]:
        """The required entries that ``folder`` lacks (the first accepted name of each)."""
        lacking = [names[0] for names in self.files if not any((folder / n).is_file() for n in names)]
        return lacking + [f"{d}/" for d in self.dirs if not (folder / d).is_dir()]

    def pick(self, folder: Path, names: Sequence[str]) -> Path:
        """The first of ``names`` present in ``folder``."""
        for n in names:
            if (folder / n).is_file():
                return folder / n
        raise self.error(None, [folder], f"no file {' or '.join(names)} in {folder}")

    def find(self, root: Path | None) -> Path:
        """The first candidate folder that holds every required entry, or a :class:`MissingDataError`."""
        tried = self.candidates(root)
        for folder in tried:
            if folder.is_dir() and not self.missing_in(folder):
                return folder
        raise self.error(root, tried)

    def error(self, root: Path | None, tried: Sequence[Path], problem: str = "") -> MissingDataError:
        lines = []
        if root is None and not self.fallbacks:
            lines.append(f"dataset {self.key!r} needs a data root: pass --data-root DIR or set ${DATA_ENV}")
        else:
            lines.append(problem or f"dataset {self.key!r}: files not found")
        lines.append(f"expected {self.expected()}")
        for folder in tried:
            if not folder.is_dir():
                lines.append(f"  {folder}: no such folder")
                continue
            lacking = self.missing_in(folder)
            present = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
            shown = ", ".join(present[:12]) + (f", ... ({len(present)} entries)" if len(present) > 12 else "")
            state = f"missing {', '.join(lacking)}" if lacking else "complete"
            lines.append(f"  {folder}: {state}; found: {shown or 'nothing'}")
        lines.append("fairdistill never downloads data; put the files there (see README, 'Data')")
        return MissingDataError("\n".join(lines))


def corrupt(path: Path, problem: str) -> MissingDataError:
    """The error for a file that exists but cannot be decoded."""
    return MissingDataError(f"{path}: {problem} (truncated or corrupt? replace the file with an intact copy)")
