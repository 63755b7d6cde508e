"""Output paths, checked before any work is done.

Every command that writes (``distill``, ``compare``, ``evaluate``, ``export``, ``report``,
``reproduce``) hands its output path to one of the checks here *before* it loads data or trains
anything, so that a path that cannot be written fails in a second with one line naming the path and
the reason, instead of after an hour of computing with an ``OSError``:

* :func:`check_out_dir`: the path of an output *folder*: not empty, no NUL byte, every name
  component within the file system's limit (:data:`NAME_MAX` bytes) and the whole path within
  :data:`MAX_PATH_BYTES`; either an existing folder we may write into, or a path whose nearest
  existing ancestor is a writable folder (so it can be created); not an existing file; and, unless
  it already exists as a folder, not a name ending in a file suffix such as ``.safetensors``
  (:data:`FILE_SUFFIXES`: ``--out run.safetensors`` is a mistake, not a folder name);
* :func:`check_out_file`: the path of an output *file* (``evaluate --out``): the same, except that
  it must not be an existing folder (an existing file is replaced) and its name leaves room for the
  temporary file that makes the write atomic and for sibling files (``<stem>.partial.json``);
* :func:`check_inside`: the files an exporter is about to write under a folder: none of their
  existing path components below that folder is a symbolic link, and none resolves outside it, so
  nothing is ever written through a link out of ``--out``.

Writability is judged with :func:`os.access`, which also reports a read-only file system for the
superuser (a permission bit does not stop root; a read-only mount or a path under a regular file
does). A check is a snapshot: a folder made read-only between the check and the write still fails
then, with the writer's own error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .errors import FairDistillError

#: the longest name of one path component, in bytes, where the file system does not say (Linux, macOS)
NAME_MAX = 255
#: the longest path the OS accepts in one call, in bytes (Linux PATH_MAX)
PATH_MAX = 4096
#: room kept below :data:`PATH_MAX` for the files a command writes inside its output folder
#: (``OUT/<method>/checkpoint/.distill.safetensors.XXXXXXXX.tmp`` and the like)
PATH_RESERVE = 512
#: the longest output path accepted, in bytes
MAX_PATH_BYTES = PATH_MAX - PATH_RESERVE
#: what an atomic write adds to a file's name for its temporary file (``.NAME.XXXXXXXX.tmp``)
TEMP_OVERHEAD = len(". .12345678.tmp")
#: endings that name a file, not a folder: an output folder may not end in one (unless it exists as a folder)
FILE_SUFFIXES = (
    ".safetensors",
    ".json",
    ".png",
    ".jpg",
    ".pt",
    ".pth",
    ".npy",
    ".npz",
    ".md",
    ".html",
    ".csv",
    ".txt",
)


def _show(path: str | Path, limit: int = 120) -> str:
    """``path`` for a message: cut in the middle when long, so that both ends stay visible."""
    text = str(path)
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return f"{text[:half]}...{text[-half:]}"


def _name_max(folder: Path) -> int:
    """The longest component name the file system of ``folder`` accepts, in bytes."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def _as_path(out: str | os.PathLike[str], what: str) -> Path:
    """``out`` as a Path, refusing what is not a path, an empty or blank one and a NUL byte."""
    if isinstance(out, bytes) or not isinstance(out, str | os.PathLike):
        raise FairDistillError(f"{what}: expected a path, got {type(out).__name__}")
    text = os.fspath(out)
    if not isinstance(text, str):
        raise FairDistillError(f"{what}: expected a text path, got {type(text).__name__}")
    if not text.strip():
        raise FairDistillError(f"{what}: the path is empty (name a folder, or '.' for the current one)")
    if "\x00" in text:
        raise FairDistillError(f"{what} {_show(text)!r}: the path contains a NUL byte")
    return Path(text)


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` that exists (``path`` itself does not); ``.`` for a bare name."""
    for parent in path.parents:
        if os.path.lexists(parent):
            return parent
    return Path(".")


def _check_lengths(path: Path, what: str, *, file_names: Sequence[str] = ()) -> None:
    """Every component of ``path`` within the file system's name limit, the whole within :data:`MAX_PATH_BYTES`.

    ``file_names``: names of files that will be written (atomically) beside or as ``path``; each
    must leave room for the temporary file's extra characters.
    """
    raw = os.fsencode(path)
    if len(raw) > MAX_PATH_BYTES:
        raise FairDistillError(
            f"{what} {_show(path)}: the path is {len(raw)} bytes long, more than the {MAX_PATH_BYTES} allowed "
            f"(the OS limit is {PATH_MAX}, and room is kept for the files inside)"
        )
    limit = NAME_MAX
    try:
        probe = path if path.is_dir() else _existing_ancestor(path)
        limit = _name_max(probe)
    except OSError:
        pass
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise FairDistillError(
                f"{what} {_show(path)}: the name {_show(part, 40)!r} is {size} bytes long, more than the "
                f"{limit} a file name may have"
            )
    for name in file_names:
        size = len(os.fsencode(name)) + TEMP_OVERHEAD
        if size > limit:
            raise FairDistillError(
                f"{what} {_show(path)}: the file name {_show(name, 40)!r} is too long: with the temporary file's "
                f"{TEMP_OVERHEAD} extra characters it needs {size} bytes, more than the {limit} a file name may have"
            )


def _check_creatable(path: Path, what: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a folder we may write into."""
    ancestor = _existing_ancestor(path)
    if os.path.islink(ancestor) and not ancestor.exists():
        raise FairDistillError(f"{what} {_show(path)}: cannot be created: {_show(ancestor)} is a broken symbolic link")
    if not ancestor.is_dir():
        raise FairDistillError(f"{what} {_show(path)}: cannot be created: {_show(ancestor)} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise FairDistillError(f"{what} {_show(path)}: cannot be created: {_show(ancestor)} is not writable")


def _exists(path: Path, what: str) -> bool:
    try:
        path.stat()
    except FileNotFoundError:
        if os.path.islink(path):
            raise FairDistillError(f"{what} {_show(path)}: is a broken symbolic link") from None
        return False
    except NotADirectoryError:
        return False  # a component above is a file: _check_creatable says which
    except OSError as err:
        raise FairDistillError(f"{what} {_show(path)}: cannot be checked ({err.strerror or err})") from None
    return True


def check_out_dir(
    out: str | os.PathLike[str],
    what: str = "output folder",
    *,
    writes: str | None = None,
    file_suffixes: Iterable[str] = FILE_SUFFIXES,
) -> Path:
    """Check that ``out`` can be an output folder; return it as a :class:`~pathlib.Path`.

    ``what`` names the path in messages (``"output folder"``); ``writes`` says what goes into it,
    for the message that refuses a name ending in one of ``file_suffixes`` (e.g. ``--out
    run.safetensors``; an existing folder of that name is accepted). Raises
    :class:`~fairdistill.errors.FairDistillError` with one line naming the path and the reason.
    """
    path = _as_path(out, what)
    _check_lengths(path, what)
    if _exists(path, what):
        if not path.is_dir():
            raise FairDistillError(f"{what} {_show(path)}: is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise FairDistillError(f"{what} {_show(path)}: is not writable")
        return path
    suffix = path.suffix.lower()
    if suffix and suffix in tuple(file_suffixes):
        inside = f" ({writes})" if writes else ""
        raise FairDistillError(
            f"{what} {_show(path)}: ends in {suffix}, which names a file; this is a folder that receives files"
            f"{inside}: pass a folder name such as {_show(path.with_suffix(''), 60)}"
        )
    _check_creatable(path, what)
    return path


def check_out_file(
    out: str | os.PathLike[str],
    what: str = "output file",
    *,
    siblings: Callable[[Path], Sequence[str]] | Sequence[str] = (),
    example: str = "results.json",
) -> Path:
    """Check that ``out`` can be an output file (written atomically; an existing file is replaced).

    ``siblings``: names of other files written into the same folder (e.g. ``<stem>.partial.json``),
    or a function of the path giving them, whose length is checked too; ``example`` is suggested when
    ``out`` is an existing folder.
    """
    path = _as_path(out, what)
    _check_lengths(path, what)
    exists = _exists(path, what)
    if path.name in ("", ".", "..") or (exists and path.is_dir()):
        raise FairDistillError(
            f"{what} {_show(path)}: is a folder; a file is expected here (e.g. {_show(path / example, 80)})"
        )
    others = siblings(path) if callable(siblings) else siblings
    _check_lengths(path, what, file_names=[path.name, *others])
    if exists:
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise FairDistillError(f"{what} {_show(path)}: its folder {_show(path.parent)} is not writable")
        return path
    parent = path.parent
    if _exists(parent, what):
        if not parent.is_dir():
            raise FairDistillError(f"{what} {_show(path)}: cannot be created: {_show(parent)} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise FairDistillError(f"{what} {_show(path)}: cannot be created: {_show(parent)} is not writable")
        return path
    _check_creatable(path, what)
    return path


def check_inside(root: str | Path, relative: Iterable[str | Path], what: str = "output folder") -> None:
    """Refuse to write ``relative`` paths under ``root`` if any would go through a symbolic link.

    For each path, every component below ``root`` that already exists must be a plain folder (the
    last one a plain file or absent), and the path must resolve inside ``root``. ``root`` itself may
    be a link (the user chose it). Checked for every path before anything is written.
    """
    base = Path(root)
    real_root = os.path.realpath(base)
    seen: set[Path] = set()
    for rel in relative:
        rel = Path(rel)
        if rel.is_absolute() or ".." in rel.parts:
            raise FairDistillError(f"{what} {_show(base)}: refusing to write {_show(rel, 60)}, which leaves it")
        current = base
        for part in rel.parts:
            current = current / part
            if current in seen:
                continue
            seen.add(current)
            if os.path.islink(current):
                raise FairDistillError(
                    f"{what} {_show(base)}: {_show(current)} is a symbolic link; refusing to write through it "
                    "(remove it or choose another --out)"
                )
            if not os.path.lexists(current):
                break
        target = os.path.realpath(base / rel)
        if os.path.commonpath([real_root, target]) != real_root:
            raise FairDistillError(f"{what} {_show(base)}: {_show(base / rel)} resolves outside it, to {_show(target)}")


__all__ = [
    "FILE_SUFFIXES",
    "MAX_PATH_BYTES",
    "NAME_MAX",
    "check_inside",
    "check_out_dir",
    "check_out_file",
]
