"""A decoded-data cache: decode a benchmark's source files once, memory-map the arrays afterwards.

An entry is a folder of ``.npy`` arrays (uint8 pixels, int64 labels...) and a ``meta.json`` naming
the builder's parameters and, for every source file, its path, size and modification time. An entry
is used only when all of them still match; otherwise it is rebuilt. Entries are written to a
temporary folder and renamed into place, so a killed run never leaves a half-written entry behind,
and a damaged entry is rebuilt rather than trusted.

Where: ``cache_dir=`` if given, else ``$FAIRDISTILL_CACHE``, else ``$XDG_CACHE_HOME/fairdistill``
(``~/.cache/fairdistill``). ``FAIRDISTILL_CACHE=off`` turns caching off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "FAIRDISTILL_CACHE"
#: bump when the layout of an entry or a decoder's output changes
CACHE_FORMAT = 1

log = logging.getLogger(__name__)


def default_cache_dir() -> Path | None:
    """The cache folder from the environment (None when ``$FAIRDISTILL_CACHE`` is ``off``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return None if env.lower() in ("off", "0", "none", "false") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fairdistill"


def resolved_paths(paths: Sequence[str | Path]) -> list[str]:
    """``str(Path(p).resolve())`` of each path, each folder resolved once.

    A file's path is its folder's resolved path joined with its name, unless the file itself is a
    symbolic link (then it is resolved alone): the same strings, with one ``lstat`` per file instead
    of one per path component (a source list of 10^5 images in a few folders).
    """
    folders: dict[str, str] = {}
    out = []
    for p in paths:
        head, name = os.path.split(os.fspath(p))
        if name in ("", ".", ".."):
            out.append(str(Path(p).resolve()))
            continue
        if head not in folders:
            folders[head] = str(Path(head or ".").resolve())
        full = os.path.join(folders[head], name)
        out.append(str(Path(full).resolve()) if os.path.islink(full) else full)
    return out


def source_stamp(paths: Sequence[Path], resolved: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Path, size and modification time (ns) of each source file, in the order given (``resolved``: the
    paths' :func:`resolved_paths`, when known)."""
    stamps = []
    for r in resolved if resolved is not None else resolved_paths(paths):
        st = os.stat(r)
        stamps.append({"path": r, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return stamps


def _entry_name(key: str, params: Mapping[str, Any], resolved: Sequence[str]) -> str:
    ident = {"format": CACHE_FORMAT, "params": params, "sources": list(resolved)}
    text = json.dumps(ident, sort_keys=True, default=str)
    return f"{key}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _load(folder: Path, meta: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The entry's arrays, memory-mapped copy-on-write; None when the entry is stale or damaged."""
    try:
        stored = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if {k: stored.get(k) for k in meta} != dict(meta):
        return None
    arrays = {}
    try:
        for name, shape in stored["arrays"].items():
            arr = np.load(folder / f"{name}.npy", mmap_mode="c", allow_pickle=False)
            if list(arr.shape) != shape:
                return None
            arrays[name] = arr
    except (OSError, ValueError, KeyError):
        log.warning("cache entry %s is damaged; rebuilding it", folder)
        return None
    return arrays


def _store(folder: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write an entry atomically: a temporary sibling folder renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        info = {**meta, "arrays": {name: list(arr.shape) for name, arr in arrays.items()}}
        (tmp / "meta.json").write_text(json.dumps(info, indent=1, default=str))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_arrays(
    key: str,
    sources: Sequence[Path],
    params: Mapping[str, Any],
    build: Callable[[], Mapping[str, np.ndarray]],
    *,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> dict[str, np.ndarray]:
    """The arrays ``build()`` decodes from ``sources``, from the cache when it is still valid.

    ``params`` are the decoding parameters (image size...) that, with the sources' paths, name the
    entry; the sources' sizes and modification times decide whether it is still valid. Returns
    memory-mapped (copy-on-write) arrays from the cache, or the freshly built ones.
    """
    folder_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if not cache or folder_root is None:
        return dict(build())
    resolved = resolved_paths(sources)
    folder = folder_root / _entry_name(key, params, resolved)
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "params": json.loads(json.dumps(params, default=str)),
        "sources": source_stamp(sources, resolved),
    }
    found = _load(folder, meta)
    if found is not None:
        log.info("%s: decoded arrays from the cache %s", key, folder)
        return found
    log.info("%s: decoding the source files (cached in %s)", key, folder)
    arrays = dict(build())
    try:
        _store(folder, arrays, meta)
    except OSError as err:  # a read-only or full disk must not stop the run
        log.warning("could not write the cache entry %s: %s", folder, err)
        return arrays
    return _load(folder, meta) or arrays
