"""Resuming interrupted work: distillation checkpoints, partial evaluation sweeps, configuration hashes.

A distillation checkpoint is ONE safetensors file (``<out>/checkpoint/distill.safetensors``): the
tensors (every method's synthetic images and its optimiser's tensors, e.g. SGD momentum buffers)
plus, in the file's metadata, a JSON document with the small state (iterations done, the optimiser's
hyper-parameters, per-method counters and last losses) and the identity of the run (the resolved
configuration and its hash). One file means one atomic rename: a run killed at any moment leaves
either the previous checkpoint or the new one, never a mixed pair.

What crosses an iteration boundary is all a checkpoint needs, because every random draw of an
iteration comes from a generator derived from (seed, purpose, iteration) (:mod:`fairdistill.rng`):
networks, batches, augmentations and warm-up shuffles are re-derived, not carried. Resuming from
iteration ``k`` therefore replays iterations ``k..n`` exactly as the uninterrupted run does.

A partial evaluation sweep is a JSON file holding the rows (seed and fairness report) of the
evaluation models already trained; evaluation model ``j`` is seeded from (seed, "eval", j) alone, so
skipping the finished ones changes nothing for the others.

Nothing here unpickles: tensors come back through safetensors, everything else through JSON.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .artifacts import _jsonable, atomic_write_bytes
from .errors import FairDistillError

log = logging.getLogger("fairdistill")

CHECKPOINT_DIR = "checkpoint"
DISTILL_FILE = "distill.safetensors"
FORMAT = 1
_META_KEY = "fairdistill_checkpoint"


# ---- hashing -------------------------------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON (NaN as null, tuples as lists): equal settings, equal text."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))


def config_hash(obj: Any) -> str:
    """sha256 (hex) of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def tensor_hash(*tensors: Tensor) -> str:
    """sha256 (hex) of the tensors' dtypes, shapes and bytes (CPU copies)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def describe_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any], limit: int = 3) -> str:
    """The settings that differ between two identities, as ``key: saved -> now`` (at most ``limit``)."""
    a, b = _flatten(json.loads(canonical_json(saved))), _flatten(json.loads(canonical_json(current)))
    unset = "(unset)"
    keys = sorted(a.keys() | b.keys())
    diffs = [f"{k}: {a.get(k, unset)!r} -> {b.get(k, unset)!r}" for k in keys if a.get(k, unset) != b.get(k, unset)]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


# ---- distillation state --------------------------------------------------------------------------
@dataclass
class MethodState:
    """One method's state at an iteration boundary."""

    images: Tensor  # the synthetic images as stored (CPU copy)
    optimizer: dict[str, Any]  # ``optimizer.state_dict()`` with CPU tensor copies
    extra: dict[str, Any] = field(default_factory=dict)  # counters and last losses (JSON-able)


@dataclass
class DistillState:
    """What a backbone needs to go on from iteration ``done`` exactly as if it had never stopped."""

    done: int
    methods: dict[str, MethodState]


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def capture(images: Tensor, optimizer: torch.optim.Optimizer, extra: Mapping[str, Any]) -> MethodState:
    """A detached CPU copy of a method's images, optimiser state and extra values."""
    return MethodState(images.detach().cpu().clone(), _cpu_copy(optimizer.state_dict()), _cpu_copy(dict(extra)))


def restore(state: MethodState, images: Tensor, optimizer: torch.optim.Optimizer) -> None:
    """Put ``state``'s images into ``images`` (in place, exact) and its state into ``optimizer``."""
    if tuple(state.images.shape) != tuple(images.shape):
        raise FairDistillError(
            f"checkpoint images have shape {tuple(state.images.shape)}, the run expects {tuple(images.shape)}"
        )
    with torch.no_grad():
        images.copy_(state.images.to(device=images.device, dtype=images.dtype))
    # a copy: the optimiser updates its buffers in place, the state may be restored again
    optimizer.load_state_dict(_cpu_copy(state.optimizer))


# ---- the checkpoint file -------------------------------------------------------------------------
def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


def remove_stale_temporaries(folder: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files (``.NAME.XXXX.tmp``) a killed atomic write left in ``folder``.

    ``names``: only those of these files (default: every one, for folders fairdistill owns).
    """
    removed = []
    patterns = [".*.tmp"] if names is None else [f".{glob.escape(n)}.*.tmp" for n in names]
    if folder.is_dir():
        for pattern in patterns:
            for p in folder.glob(pattern):
                if p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return removed


def save_checkpoint(path: str | Path, state: DistillState, identity: Mapping[str, Any], **info: Any) -> Path:
    """Write ``state`` and the run's ``identity`` to ``path`` as one safetensors file, atomically."""
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    methods = []
    for i, (name, ms) in enumerate(state.methods.items()):
        tensors[f"{i}.images"] = ms.images.detach().cpu().contiguous()
        opt_state: dict[str, dict[str, Any]] = {}
        for pid, entries in ms.optimizer.get("state", {}).items():
            small = {}
            for key, value in entries.items():
                if isinstance(value, Tensor):
                    tensors[f"{i}.opt.{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    small[key] = value
            opt_state[str(pid)] = small
        methods.append(
            {
                "name": name,
                "param_groups": ms.optimizer.get("param_groups", []),
                "state": opt_state,
                "extra": ms.extra,
            }
        )
    doc = {
        "format": FORMAT,
        "done": state.done,
        "identity": identity,
        "config_hash": config_hash(identity),
        "methods": methods,
        **info,
    }
    # allow_nan: a NaN loss must come back as NaN, not null (floats round-trip exactly through repr)
    meta = {_META_KEY: json.dumps(doc, allow_nan=True)}
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def _corrupt(path: Path, why: object) -> FairDistillError:
    return FairDistillError(
        f"checkpoint {path} is corrupt or truncated ({why}); delete it and rerun without --resume to start over"
    )


def load_checkpoint(path: str | Path, identity: Mapping[str, Any] | None = None) -> tuple[DistillState, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`; with ``identity``, refuse one of another run.

    Returns the state and the JSON document (``done``, ``identity``, ``config_hash``, ...).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise FairDistillError(f"no checkpoint to resume from: {path} does not exist (run without --resume)")
    data = path.read_bytes()
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        doc = json.loads(header["__metadata__"][_META_KEY])
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {doc.get('format')!r}")
        methods: dict[str, MethodState] = {}
        for i, m in enumerate(doc["methods"]):
            opt_state: dict[int, dict[str, Any]] = {}
            for pid, small in m["state"].items():
                entries = dict(small)
                prefix = f"{i}.opt.{pid}."
                entries.update({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
                opt_state[int(pid)] = entries
            methods[m["name"]] = MethodState(
                tensors[f"{i}.images"], {"state": opt_state, "param_groups": m["param_groups"]}, dict(m["extra"])
            )
        state = DistillState(int(doc["done"]), methods)
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise _corrupt(path, err) from err
    if identity is not None and doc.get("config_hash") != config_hash(identity):
        raise FairDistillError(
            f"checkpoint {path} belongs to a run with other settings ({describe_mismatch(doc['identity'], identity)}); "
            "rerun with the same settings, or without --resume to start over"
        )
    return state, doc


# ---- partial evaluation sweeps -------------------------------------------------------------------
def _report_from_dict(d: Mapping[str, Any]) -> Any:
    from .metrics import FairnessReport

    def num(x: Any) -> float:
        return float("nan") if x is None else float(x)

    def nan_for_none(x: Any) -> Any:
        return [nan_for_none(v) for v in x] if isinstance(x, list) else num(x)

    def arr(x: Any) -> np.ndarray:
        a = np.array(nan_for_none(x), dtype=np.float64)
        a.setflags(write=False)
        return a

    return FairnessReport(
        acc=num(d["acc"]),
        deo_m=num(d["deo_m"]),
        deo_a=num(d["deo_a"]),
        worst_group_acc=num(d["worst_group_acc"]),
        suff_m=num(d["suff_m"]),
        suff_a=num(d["suff_a"]),
        tpr=arr(d["tpr"]),
        group_acc=arr(d["group_acc"]),
        class_gaps=arr(d["class_gaps"]),
        empty_cells=[(int(g), int(c)) for g, c in d["empty_cells"]],
    )


class EvalSweep:
    """The finished models of one evaluation sweep, kept in a JSON file rewritten (atomically) after each model.

    ``identity`` says what is evaluated (the training set's hash, the evaluation settings, the
    dataset); a file written for another identity is refused on resume.
    """

    def __init__(self, path: str | Path, identity: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.identity = dict(identity)
        self.rows: dict[int, dict[str, Any]] = {}

    def load(self, *, required: bool = True) -> dict[int, Any]:
        """The finished models as {index: FairnessReport}; also remembers their rows for later saves."""
        if not self.path.is_file():
            if required:
                raise FairDistillError(f"nothing to resume: {self.path} does not exist (run without --resume)")
            return {}
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            rows = {int(j): dict(r) for j, r in doc["models"].items()}
            reports = {j: _report_from_dict(r["report"]) for j, r in rows.items()}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise FairDistillError(
                f"partial evaluation {self.path} is corrupt or truncated ({err}); delete it and rerun without --resume"
            ) from err
        if doc.get("config_hash") != config_hash(self.identity):
            raise FairDistillError(
                f"partial evaluation {self.path} belongs to other settings "
                f"({describe_mismatch(doc.get('identity', {}), self.identity)}); rerun without --resume to start over"
            )
        self.rows = rows
        return reports

    def add(self, index: int, seed: int, report: Any) -> None:
        """Record model ``index`` as finished and rewrite the file."""
        self.rows[index] = {"seed": seed, "report": report.to_dict()}
        doc = {
            "format": FORMAT,
            "identity": self.identity,
            "config_hash": config_hash(self.identity),
            "models": {str(j): r for j, r in sorted(self.rows.items())},
        }
        atomic_write_bytes(self.path, (json.dumps(doc, indent=1) + "\n").encode())


def partial_name(name: str) -> str:
    """A file name for the partial sweep of the training set ``name``."""
    return "eval-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".json"
