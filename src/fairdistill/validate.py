"""The boundary: everything that enters the program from outside is checked here, once.

Files and values a user hands in (a dataset folder's ``meta.json``, a saved set's metadata, a
checkpoint's header, a partial evaluation file, a ``summary.json``) are parsed into typed models
(pydantic) and every failure becomes one :class:`~fairdistill.errors.FairDistillError` line that
names the file and the field. Sizes are bounded *before* anything is allocated from them.

The pieces every reader shares:

* :func:`read_json_text` / :func:`read_json_file`: JSON with a size and a nesting-depth bound (a
  100,000-deep document is an error, not a RecursionError), and no NaN / Infinity literals;
* :func:`parse` : a pydantic model from a parsed document, its errors in one line;
* :func:`one_line` : any message cut to one bounded line (a label of 10^6 must not print 8 MB).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeVar

from .errors import FairDistillError

#: the deepest JSON nesting any of our files may have (ours are a few levels deep)
MAX_JSON_DEPTH = 64
#: the largest JSON document read from a user's file, in bytes
MAX_JSON_BYTES = 64 * 2**20
#: the longest one-line error message, in characters
MAX_MESSAGE = 400

M = TypeVar("M")


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line (newlines become spaces), at most ``limit`` characters ("..." marks a cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text (strings skipped), without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def read_json_text(text: str | bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON ``text`` read from ``what`` (a file name, for the message), bounded in size and depth.

    NaN, Infinity and -Infinity are refused: they are not JSON, and a non-finite number is never a
    valid value in our files.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_JSON_BYTES:
            raise FairDistillError(f"{what}: {len(text)} bytes of JSON, more than the {MAX_JSON_BYTES} allowed")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise FairDistillError(f"{what}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if len(text) > MAX_JSON_BYTES:
        raise FairDistillError(f"{what}: {len(text)} characters of JSON, more than the {MAX_JSON_BYTES} allowed")
    deepest = _depth(text)
    if deepest > max_depth:
        raise FairDistillError(f"{what}: JSON nested {deepest} levels deep, more than the {max_depth} allowed")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as err:  # JSONDecodeError is a ValueError; so is a NaN literal
        raise FairDistillError(f"{what}: not valid JSON ({one_line(str(err), 120)})") from None


def read_json_file(path: str | Path, what: str | None = None, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """:func:`read_json_text` of a file, refusing one larger than :data:`MAX_JSON_BYTES` before reading it."""
    path = Path(path)
    label = what or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise FairDistillError(f"{label}: {size} bytes, more than the {MAX_JSON_BYTES} allowed for a JSON file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise FairDistillError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise FairDistillError(f"{label}: is a folder, not a JSON file") from None
    except OSError as err:
        raise FairDistillError(f"{label}: cannot be read ({err.strerror or err})") from None
    return read_json_text(data, label, max_depth=max_depth)


def parse(model: type[M], data: Any, what: str) -> M:
    """``model.model_validate(data)`` with the first validation error as one line naming ``what`` and the field."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)  # type: ignore[attr-defined]
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "the document"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise FairDistillError(one_line(f"{what}: {where}: {first.get('msg', 'invalid')}{more}")) from None


def finite(value: float, name: str) -> float:
    """``value`` as a float, refusing NaN and infinities with a message naming ``name``."""
    v = float(value)
    if not math.isfinite(v):
        raise FairDistillError(f"{name} must be a finite number, got {value!r}")
    return v
