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

A checkpoint is checked before anything of it is used, and every problem is one line:

* its content: the file records the SHA-256 of its tensors and of its JSON document; a flipped bit
  anywhere is "corrupt" (a checkpoint of format 1, written before the hashes, cannot be verified
  and is refused: rerun without ``--resume``);
* its document: a pydantic schema (types, ranges: ``lr: "abc"`` or ``momentum: null`` are refused),
  then its tensors against it (the names expected and no others, optimiser tensors shaped like the
  images, everything finite);
* its identity: the run's settings and the dataset's content fingerprint must be the ones of the
  run being resumed;
* when restored: the optimiser state against the optimiser of the run (same groups, same kinds of
  values) and the carried counters against the run's (same types and shapes).

A non-finite state is never written: :func:`save_checkpoint` refuses NaN / inf images, so the last
good checkpoint stays.

A partial evaluation sweep is a JSON file holding the rows (seed and fairness report) of the
evaluation models already trained; evaluation model ``j`` is seeded from (seed, "eval", j) alone, so
skipping the finished ones changes nothing for the others. It is read with the bounded JSON reader
and a schema: every metric finite and within [0, 100] (they are stored in percent).

Nothing here unpickles: tensors come back through safetensors, everything else through JSON.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from .artifacts import (
    _jsonable,
    atomic_write_bytes,
    content_hashes,
    read_safetensors,
    remove_stale_temporaries,
    verify_content,
)
from .errors import FairDistillError
from .validate import parse, read_json_file, read_json_text

log = logging.getLogger("fairdistill")

CHECKPOINT_DIR = "checkpoint"
DISTILL_FILE = "distill.safetensors"
#: the distillation checkpoint format (2: content hashes, strict JSON); partial sweeps keep format 1
FORMAT = 2
SWEEP_FORMAT = 1
_META_KEY = "fairdistill_checkpoint"

__all__ = [
    "CHECKPOINT_DIR",
    "CheckpointError",
    "DISTILL_FILE",
    "DistillState",
    "EvalSweep",
    "MethodState",
    "canonical_json",
    "capture",
    "checkpoint_dir",
    "config_hash",
    "describe_mismatch",
    "load_checkpoint",
    "partial_name",
    "remove_stale_temporaries",
    "restore",
    "restore_field",
    "save_checkpoint",
    "tensor_hash",
]


class CheckpointError(FairDistillError):
    """A saved state that does not fit the run it is resumed into (raised while restoring it)."""


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


def identity_refusal(what: str, saved: Mapping[str, Any], current: Mapping[str, Any], hint: str) -> FairDistillError:
    """The one-line refusal of a file written for another run: the dataset's content, or the settings that differ.

    ``hint`` ends the second kind (the first can only start over).
    """
    name = current.get("dataset")
    was, now = saved.get("dataset_fingerprint"), current.get("dataset_fingerprint")
    if saved.get("dataset") == name and was != now:
        return FairDistillError(
            f"{what} was written for other contents of dataset {name!r} (fingerprint {was!r}, now {now!r}): "
            "the data changed since the run started; rerun without --resume to start over"
        )
    diffs = describe_mismatch(saved, current)
    return FairDistillError(f"{what} belongs to a run with other settings ({diffs}); {hint}")


# ---- distillation state --------------------------------------------------------------------------
@dataclass
class MethodState:
    """One method's state at an iteration boundary."""

    images: Tensor  # the synthetic images as stored (CPU copy)
    optimizer: dict[str, Any]  # ``optimizer.state_dict()`` with CPU tensor copies
    extra: dict[str, Any] = field(default_factory=dict)  # counters and last losses (JSON-able)
    #: where the state comes from, for messages ("checkpoint PATH, method 'cobra'")
    source: str = "the saved state"


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


def _kind(value: Any) -> str:
    """The kind of an optimiser setting, for comparing a saved one with the live one."""
    if value is None or isinstance(value, bool):
        return "a flag"  # torch uses None and booleans alike for foreach / fused / capturable
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return type(value).__name__


def _check_optimizer(saved: Mapping[str, Any], live: Mapping[str, Any], live_params: list[Tensor], where: str) -> None:
    """``saved`` (a state dict from a checkpoint) fits the run's optimiser, or a one-line error."""
    groups, live_groups = saved.get("param_groups", []), live["param_groups"]
    if len(groups) != len(live_groups):
        raise CheckpointError(f"{where}: {len(groups)} optimiser parameter groups, this run has {len(live_groups)}")
    order: list[int] = []
    for g, (group, now) in enumerate(zip(groups, live_groups, strict=True)):
        if len(group.get("params", [])) != len(now["params"]):
            raise CheckpointError(f"{where}: optimiser group {g} holds {len(group.get('params', []))} parameters")
        order.extend(group["params"])
        for key, value in now.items():
            if key == "params":
                continue
            if key not in group:
                raise CheckpointError(f"{where}: optimiser setting {key!r} is missing")
            if _kind(group[key]) != _kind(value):
                raise CheckpointError(
                    f"{where}: optimiser setting {key!r} is {_kind(group[key])} ({group[key]!r:.40}), "
                    f"this run's optimiser has {_kind(value)}"
                )
            if isinstance(value, list | tuple) and any(
                _kind(a) != _kind(b) for a, b in zip(group[key], value, strict=False)
            ):
                raise CheckpointError(f"{where}: optimiser setting {key!r} holds values of the wrong kind")
    position = {pid: i for i, pid in enumerate(order)}
    for pid, entries in saved.get("state", {}).items():
        if pid not in position:
            raise CheckpointError(f"{where}: optimiser state for parameter {pid}, which no group holds")
        param = live_params[position[pid]]
        for key, value in entries.items():
            if isinstance(value, Tensor) and key != "step" and tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(
                    f"{where}: optimiser tensor {key!r} has shape {tuple(value.shape)}, "
                    f"its parameter {tuple(param.shape)}"
                )


def restore(state: MethodState, images: Tensor, optimizer: torch.optim.Optimizer) -> None:
    """Put ``state``'s images into ``images`` (in place, exact) and its state into ``optimizer``.

    The saved optimiser state is checked against ``optimizer`` first (see :func:`_check_optimizer`).
    """
    if tuple(state.images.shape) != tuple(images.shape):
        raise CheckpointError(
            f"{state.source}: images have shape {tuple(state.images.shape)}, the run expects {tuple(images.shape)}"
        )
    live_params = [p for group in optimizer.param_groups for p in group["params"]]
    _check_optimizer(state.optimizer, optimizer.state_dict(), live_params, state.source)
    with torch.no_grad():
        images.copy_(state.images.to(device=images.device, dtype=images.dtype))
    try:  # a copy: the optimiser updates its buffers in place, the state may be restored again
        optimizer.load_state_dict(_cpu_copy(state.optimizer))
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{state.source}: the optimiser state does not fit this run ({err})") from None


def restore_field(current: Any, value: Any, what: str) -> Any:
    """``value`` (a counter or loss as a checkpoint's JSON gives it back) in the type and shape of ``current``.

    Tuples come back from lists, tensors from nested lists (same shape and dtype as ``current``),
    floats from numbers or null (NaN). Anything else that does not fit is a one-line error naming ``what``.
    """

    def refuse(why: str) -> FairDistillError:
        return CheckpointError(f"{what}: the saved value {why}")

    if isinstance(current, Tensor):
        try:
            out = torch.tensor(value, dtype=current.dtype, device=current.device)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise refuse(f"is not a table of {str(current.dtype).removeprefix('torch.')} numbers") from None
        if out.shape != current.shape:
            raise refuse(f"has shape {tuple(out.shape)}, the run's {tuple(current.shape)}")
        return out
    if isinstance(current, tuple | list):
        if not isinstance(value, list) or len(value) != len(current):
            raise refuse(f"is not a list of {len(current)}")
        items = [restore_field(c, v, what) for c, v in zip(current, value, strict=True)]
        return tuple(items) if isinstance(current, tuple) else items
    if isinstance(current, dict):
        if not isinstance(value, dict) or set(value) != set(current):
            raise refuse(f"does not have the keys {sorted(current)}")
        return {k: restore_field(current[k], value[k], what) for k in current}
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise refuse("is not true or false")
        return value
    if isinstance(current, float):
        if value is None:
            return float("nan")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse(f"{value!r:.40} is not a number")
        return float(value)
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse(f"{value!r:.40} is not an integer")
        return value
    if current is not None and type(value) is not type(current):
        raise refuse(f"is {type(value).__name__}, the run's {type(current).__name__}")
    return value


# ---- the checkpoint file -------------------------------------------------------------------------
def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


_FLOAT_TAG = "$float"


def _tag_floats(obj: Any) -> Any:
    """The document with non-finite floats as ``{"$float": "nan" | "inf" | "-inf"}``: strict JSON, exact round trip."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT_TAG: repr(obj)}
    if isinstance(obj, dict):
        return {str(k): _tag_floats(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tag_floats(v) for v in obj]
    return obj


def _untag_floats(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_FLOAT_TAG} and obj[_FLOAT_TAG] in ("nan", "inf", "-inf"):
            return float(obj[_FLOAT_TAG])
        return {k: _untag_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_untag_floats(v) for v in obj]
    return obj


def _finite_images(state: DistillState) -> None:
    for name, ms in state.methods.items():
        if not bool(torch.isfinite(ms.images).all()):
            raise FairDistillError(f"{name}: synthetic images became NaN/inf by iteration {state.done}")
        for entries in ms.optimizer.get("state", {}).values():
            for key, value in entries.items():
                if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    raise FairDistillError(f"{name}: optimiser tensor {key!r} became NaN/inf by iteration {state.done}")


def save_checkpoint(path: str | Path, state: DistillState, identity: Mapping[str, Any], **info: Any) -> Path:
    """Write ``state`` and the run's ``identity`` to ``path`` as one safetensors file, atomically.

    A state with NaN / inf images (or optimiser tensors) is refused (FairDistillError) and the file
    already at ``path``, the last good checkpoint, is left as it is. The file records the SHA-256
    of its tensors and of its JSON document.
    """
    from safetensors.torch import save

    _finite_images(state)
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
    # strict JSON; a NaN loss is tagged, so it comes back as NaN, not null (floats round-trip exactly through repr)
    text = json.dumps(_tag_floats(_paths_as_text(doc)), allow_nan=False)
    meta = {_META_KEY: text, **content_hashes(tensors, text)}
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def _paths_as_text(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _paths_as_text(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_paths_as_text(v) for v in obj]
    return obj


# the checkpoint document's schema
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
NonNegFloat = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
StrictText = Annotated[str, Field(strict=True)]
_Small = Annotated[int, Field(strict=True)] | Annotated[float, Field(strict=True)] | bool | StrictText | None


class _ParamGroup(BaseModel):
    """One optimiser parameter group (SGD's keys typed; other keys are compared with the live optimiser's)."""

    model_config = ConfigDict(extra="allow")

    params: list[NonNegInt] = Field(min_length=1)
    lr: NonNegFloat
    momentum: NonNegFloat | None = None
    dampening: NonNegFloat | None = None
    weight_decay: NonNegFloat | None = None
    nesterov: Annotated[bool, Field(strict=True)] | None = None
    maximize: Annotated[bool, Field(strict=True)] | None = None
    differentiable: Annotated[bool, Field(strict=True)] | None = None
    foreach: Annotated[bool, Field(strict=True)] | None = None
    fused: Annotated[bool, Field(strict=True)] | None = None

    @field_validator("momentum", "dampening", "weight_decay", "nesterov", "maximize", "differentiable", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null")
        return value


class _MethodDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(strict=True, min_length=1)]
    param_groups: list[_ParamGroup] = Field(min_length=1)
    state: dict[Annotated[str, Field(pattern=r"^[0-9]{1,9}$")], dict[str, _Small]]
    extra: dict[str, Any]


class _CheckpointDoc(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal[2]
    done: NonNegInt
    total: NonNegInt | None = None
    identity: dict[str, Any]
    config_hash: Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]
    methods: list[_MethodDoc] = Field(min_length=1)
    device: StrictText | None = None

    @model_validator(mode="after")
    def _consistent(self) -> _CheckpointDoc:
        if self.total is not None and self.done > self.total:
            raise ValueError(f"done ({self.done}) is past total ({self.total})")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"method names repeat: {names}")
        return self


_TENSOR_NAME = re.compile(r"^(0|[1-9][0-9]{0,8})\.(images|opt\.(0|[1-9][0-9]{0,8})\.(.+))$")


def _corrupt(path: Path, why: object) -> FairDistillError:
    return FairDistillError(
        f"checkpoint {path} is corrupt or truncated ({why}); delete it and rerun without --resume to start over"
    )


def _state_from(path: Path, doc: _CheckpointDoc, raw: dict[str, Any], tensors: dict[str, Tensor]) -> DistillState:
    """The state that the checked document (``doc``, parsed from ``raw``) and its tensors describe.

    Any inconsistency between them is a one-line error.

    Values are taken from ``raw``, exactly as written (the schema has checked them): an optimiser
    setting saved as the integer 0 comes back as 0, not 0.0.
    """
    per_method: list[dict[str, Tensor]] = [{} for _ in doc.methods]
    for key in tensors:
        m = _TENSOR_NAME.match(key)
        if m is None or int(m.group(1)) >= len(doc.methods):
            raise _corrupt(path, f"unexpected tensor {key!r:.60}")
        per_method[int(m.group(1))][m.group(2)] = tensors[key]
    methods: dict[str, MethodState] = {}
    for i, method in enumerate(doc.methods):
        where = f"checkpoint {path}, method {method.name!r}"
        saved = raw["methods"][i]
        mine = per_method[i]
        images = mine.pop("images", None)
        if images is None:
            raise _corrupt(path, f"method {method.name!r} has no images")
        if not images.is_floating_point() or images.ndim != 4:
            shape = tuple(images.shape)
            raise _corrupt(path, f"method {method.name!r}: images of dtype {images.dtype} and shape {shape}")
        if not bool(torch.isfinite(images).all()):
            raise FairDistillError(f"{where}: the images hold NaN or infinite values; rerun without --resume")
        opt_state = {int(pid): _untag_floats(dict(small)) for pid, small in saved["state"].items()}
        for key, t in mine.items():  # what is left: "opt.PID.KEY"
            _, pid_text, entry = key.split(".", 2)
            pid = int(pid_text)
            if pid not in opt_state:
                raise _corrupt(path, f"tensor {key!r:.60} of method {method.name!r} belongs to no optimiser state")
            if entry in opt_state[pid]:
                raise _corrupt(path, f"optimiser entry {entry!r:.40} is given twice")
            if entry != "step" and (not t.is_floating_point() or tuple(t.shape) != tuple(images.shape)):
                raise FairDistillError(
                    f"{where}: optimiser tensor {entry!r:.40} has shape {tuple(t.shape)} ({t.dtype}), "
                    f"the images {tuple(images.shape)}"
                )
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise FairDistillError(f"{where}: optimiser tensor {entry!r:.40} holds NaN or infinite values")
            opt_state[pid][entry] = t
        optimizer = {"state": opt_state, "param_groups": _untag_floats(saved["param_groups"])}
        methods[method.name] = MethodState(images, optimizer, _untag_floats(saved["extra"]), source=where)
    return DistillState(doc.done, methods)


def load_checkpoint(path: str | Path, identity: Mapping[str, Any] | None = None) -> tuple[DistillState, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`; with ``identity``, refuse one of another run.

    Returns the state and the JSON document (``done``, ``identity``, ``config_hash``, ...). Every
    check of the module docstring is made here, before the state is returned.
    """
    path = Path(path)
    if not path.is_file():
        raise FairDistillError(f"no checkpoint to resume from: {path} does not exist (run without --resume)")
    tensors, header = read_safetensors(path, "checkpoint")
    text = header.get(_META_KEY)
    if text is None:
        raise _corrupt(path, "it holds no fairdistill document")
    hint = "delete it and rerun without --resume to start over"
    try:
        hashed = verify_content(f"checkpoint {path}", tensors, text, header)
    except FairDistillError as err:
        raise FairDistillError(f"{err}; {hint}") from None
    raw = read_json_text(text, f"checkpoint {path} (corrupt or truncated?)")
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if not hashed and fmt == 1:
        raise FairDistillError(
            f"checkpoint {path} was written by an older fairdistill (format 1, without content hashes) and cannot "
            "be verified; rerun without --resume to start over"
        )
    if not hashed:
        raise FairDistillError(f"checkpoint {path} records no content hash, so it cannot be verified; {hint}")
    if fmt != FORMAT:
        raise _corrupt(path, f"unknown checkpoint format {fmt!r:.40}")
    try:
        doc = parse(_CheckpointDoc, raw, f"checkpoint {path}")
    except FairDistillError as err:
        raise FairDistillError(f"{err}; {hint}") from None
    state = _state_from(path, doc, raw, tensors)
    if identity is not None and doc.config_hash != config_hash(identity):
        hint = "rerun with the same settings, or without --resume to start over"
        raise identity_refusal(f"checkpoint {path}", doc.identity, identity, hint)
    return state, _untag_floats(raw)


# ---- partial evaluation sweeps -------------------------------------------------------------------
Percent = Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)]


class _ReportDoc(BaseModel):
    """A fairness report as :meth:`FairnessReport.to_dict` writes it: percentages (null: NaN), empty cells."""

    model_config = ConfigDict(extra="forbid")

    acc: Percent | None
    deo_m: Percent | None
    deo_a: Percent | None
    worst_group_acc: Percent | None
    suff_m: Percent | None
    suff_a: Percent | None
    tpr: list[list[Percent | None]]
    group_acc: list[Percent | None]
    class_gaps: list[Percent | None]
    empty_cells: list[tuple[NonNegInt, NonNegInt]]

    @model_validator(mode="after")
    def _rectangular(self) -> _ReportDoc:
        if len({len(row) for row in self.tpr}) > 1:
            raise ValueError("tpr rows differ in length")
        return self


class _SweepRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: Annotated[int, Field(strict=True)]
    report: _ReportDoc


class _SweepDoc(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal[1]
    identity: dict[str, Any]
    config_hash: Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]
    models: dict[Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,8})$")], _SweepRow]


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
    dataset); a file written for another identity is refused on resume, and so is one that does not
    read as a sweep (bounded JSON, the schema of :class:`_SweepDoc`: metrics finite, in [0, 100]).
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
        what = f"partial evaluation {self.path}"
        hint = "delete it and rerun without --resume"
        try:
            raw = read_json_file(self.path, what)
            if isinstance(raw, dict) and raw.get("format") != SWEEP_FORMAT:
                raise FairDistillError(f"{what}: unknown format {raw.get('format')!r:.40}")
            doc = parse(_SweepDoc, raw, what)
        except FairDistillError as err:
            raise FairDistillError(f"{err}; {hint}") from None
        if doc.config_hash != config_hash(self.identity):
            raise identity_refusal(what, doc.identity, self.identity, "rerun without --resume to start over")
        self.rows = {int(j): dict(raw["models"][j]) for j in doc.models}  # as written (the schema checked them)
        return {j: _report_from_dict(r["report"]) for j, r in self.rows.items()}

    def add(self, index: int, seed: int, report: Any) -> None:
        """Record model ``index`` as finished and rewrite the file."""
        self.rows[index] = {"seed": seed, "report": report.to_dict()}
        doc = {
            "format": SWEEP_FORMAT,
            "identity": self.identity,
            "config_hash": config_hash(self.identity),
            "models": {str(j): r for j, r in sorted(self.rows.items())},
        }
        atomic_write_bytes(self.path, (json.dumps(_jsonable(doc), indent=1) + "\n").encode())


def partial_name(name: str) -> str:
    """A file name for the partial sweep of the training set ``name``."""
    return "eval-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".json"
