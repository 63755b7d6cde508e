"""Accuracy and group-fairness metrics for multi-class classifiers.

Every metric here is a function of one count table ``counts[g, c, p]``: the number of test samples
of sensitive group ``g`` whose true class is ``c`` and whose predicted class is ``p``. Building the
table once (:func:`count_table`) and deriving everything from it (:func:`report_from_counts`) keeps
the metrics mutually consistent and lets callers aggregate tables across batches or shards before
scoring.

All reported values are percentages in ``[0, 100]``.

Metrics
-------
ACC
    Overall accuracy, ``P(yhat = y)``.
TPR(g, c)
    True-positive rate of class ``c`` within group ``g``, ``P(yhat = c | y = c, a = g)``: how often a
    sample of that class from that group is recognised.
DEO_M, DEO_A
    For each class ``c`` the gap ``max_g TPR(g, c) - min_g TPR(g, c)``; DEO_M is the largest gap over
    classes and DEO_A the mean gap. The fair dataset-distillation literature calls these "equalized
    odds"; in the multi-class setting they measure per-class TPR parity (equal opportunity for
    every class) between sensitive groups. 0 means every group is recognised equally well.
Worst-group accuracy
    The accuracy of the group the model serves worst.
Sufficiency gap (suff_m, suff_a)
    PPV(g, c) = ``P(y = c | yhat = c, a = g)``, the precision of predicting ``c`` within group ``g``:
    how much a prediction of ``c`` can be trusted for members of that group. The per-class range of
    PPV over groups, maximised (suff_m) or averaged (suff_a) over classes.

Empty cells
-----------
A (group, class) cell with no test samples has no TPR, and a (group, predicted class) cell with
no predictions has no PPV. ``empty_cells="ignore"`` (the default) leaves such cells out of that
class's max/min and warns once about the empty test cells; ``empty_cells="zero"`` reproduces the
reference research code, which counts the missing rate as 0 (and so reports a gap as large as the
best group's rate). Under ``"ignore"`` a class for which fewer than two groups have a defined
rate has gap 0: there is no pair of groups to compare. That class still counts in the averages
DEO_A and suff_a, so ``deo_a == class_gaps.mean()`` always holds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from fairdistill.errors import FairDistillError, unknown_name

EmptyCells = Literal["ignore", "zero"]
_EMPTY_CELL_MODES = ("ignore", "zero")
# Long lists of empty cells (e.g. a whole absent group) are cut to keep the warning readable.
_MAX_LISTED_CELLS = 20

__all__ = ["FairnessReport", "count_table", "fairness_report", "report_from_counts"]


# --------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------


def _as_label_array(x: Any, what: str) -> np.ndarray:
    """Convert labels (numpy, torch, list) to a 1-D int64 array, or explain why not."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and other non-array input
        raise FairDistillError(f"{what} could not be read as an array: {exc}") from exc
    if arr.ndim != 1:
        raise FairDistillError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise FairDistillError(f"{what} is empty")
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        # Float labels are common (e.g. a tensor of .float() targets); accept them when exact.
        if not np.all(np.isfinite(arr)):
            raise FairDistillError(f"{what} contains NaN or infinite values")
        if not np.all(arr == np.round(arr)):
            raise FairDistillError(f"{what} must be integer valued, found non-integer values")
        return arr.astype(np.int64)
    raise FairDistillError(f"{what} must be integer labels, got dtype {arr.dtype}")


def _resolve_size(given: int | None, arrays: Sequence[np.ndarray], what: str, size_name: str) -> int:
    """Return the number of labels: ``given`` if set (checked against the data), else max + 1."""
    lo = min(int(a.min()) for a in arrays)
    hi = max(int(a.max()) for a in arrays)
    if lo < 0:
        raise FairDistillError(f"{what} contains negative label {lo}; labels must be in [0, {size_name})")
    if given is None:
        return hi + 1
    if isinstance(given, bool) or not isinstance(given, int | np.integer) or given < 1:
        raise FairDistillError(f"{size_name} must be a positive integer, got {given!r}")
    if hi >= given:
        raise FairDistillError(f"{what} contains label {hi}, out of range for {size_name}={int(given)}")
    return int(given)


def _check_mode(empty_cells: str) -> None:
    if empty_cells not in _EMPTY_CELL_MODES:
        raise unknown_name("empty_cells mode", str(empty_cells), _EMPTY_CELL_MODES)


def _check_names(names: Sequence[str] | None, n: int, what: str) -> list[str]:
    if names is None:
        return [str(i) for i in range(n)]
    names = [str(s) for s in names]
    if len(names) != n:
        raise FairDistillError(f"{what} has {len(names)} entries; expected {n}")
    return names


# --------------------------------------------------------------------------------------------------
# Count table
# --------------------------------------------------------------------------------------------------


def count_table(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    n_classes: int | None = None,
    n_groups: int | None = None,
) -> np.ndarray:
    """Count test samples by sensitive group, true class and predicted class.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
        True and predicted class labels in ``[0, n_classes)``. numpy arrays, torch tensors (on any
        device) and lists are accepted.
    sensitive_features : array-like of int, shape (n,)
        Sensitive-group label of each sample, in ``[0, n_groups)``.
    n_classes : int, optional
        Number of classes K. Defaults to one more than the largest label in ``y_true`` or
        ``y_pred``; pass it explicitly so that classes absent from the test set still get a slot.
    n_groups : int, optional
        Number of groups G. Defaults to one more than the largest group label.

    Returns
    -------
    numpy.ndarray of int64, shape (G, K, K)
        ``counts[g, c, p]`` is the number of samples with group ``g``, true class ``c`` and
        predicted class ``p``. The diagonal ``counts[g, c, c]`` holds correct predictions.

    Raises
    ------
    FairDistillError
        If the inputs are not 1-D, are empty, differ in length, are not integer valued, or hold a
        label outside the given range.
    """
    yt = _as_label_array(y_true, "y_true")
    yp = _as_label_array(y_pred, "y_pred")
    a = _as_label_array(sensitive_features, "sensitive_features")
    if not (len(yt) == len(yp) == len(a)):
        raise FairDistillError(
            f"length mismatch: y_true has {len(yt)}, y_pred has {len(yp)}, sensitive_features has {len(a)} entries"
        )
    k = _resolve_size(n_classes, [yt, yp], "y_true/y_pred", "n_classes")
    g = _resolve_size(n_groups, [a], "sensitive_features", "n_groups")
    # One flat bincount over the row-major index of (g, c, p) is a single vectorised pass.
    flat = (a * k + yt) * k + yp
    return np.bincount(flat, minlength=g * k * k).reshape(g, k, k).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array comparison has no single truth value
class FairnessReport:
    """Accuracy and fairness of a classifier across sensitive groups (all values in percent).

    Attributes
    ----------
    acc : float
        Overall accuracy.
    deo_m : float
        Largest per-class gap in true-positive rate between the best and worst group (DEO_M).
    deo_a : float
        Mean over classes of that gap (DEO_A); equals ``class_gaps.mean()``.
    worst_group_acc : float
        Accuracy of the worst-served non-empty group.
    suff_m, suff_a : float
        Largest and mean per-class range over groups of the positive predictive value
        ``P(y = c | yhat = c, a = g)`` (sufficiency gap).
    tpr : numpy.ndarray, shape (G, K)
        ``P(yhat = c | y = c, a = g)``; NaN where the (group, class) cell has no test samples,
        whatever the ``empty_cells`` mode.
    group_acc : numpy.ndarray, shape (G,)
        Accuracy within each group; NaN for groups with no samples.
    class_gaps : numpy.ndarray, shape (K,)
        Per-class TPR gap used for DEO_M / DEO_A, under the chosen ``empty_cells`` mode.
    empty_cells : list of (int, int)
        The (group, class) test cells with no samples.
    """

    acc: float
    deo_m: float
    deo_a: float
    worst_group_acc: float
    suff_m: float
    suff_a: float
    tpr: np.ndarray
    group_acc: np.ndarray
    class_gaps: np.ndarray
    empty_cells: list[tuple[int, int]]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict: floats, nested lists, ``None`` in place of NaN."""
        return {
            "acc": _json_float(self.acc),
            "deo_m": _json_float(self.deo_m),
            "deo_a": _json_float(self.deo_a),
            "worst_group_acc": _json_float(self.worst_group_acc),
            "suff_m": _json_float(self.suff_m),
            "suff_a": _json_float(self.suff_a),
            "tpr": _json_array(self.tpr),
            "group_acc": _json_array(self.group_acc),
            "class_gaps": _json_array(self.class_gaps),
            "empty_cells": [[int(g), int(c)] for g, c in self.empty_cells],
        }


def _json_float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _json_array(arr: np.ndarray) -> list[Any]:
    if arr.ndim == 0:
        return _json_float(arr)  # type: ignore[return-value]
    return [_json_array(row) for row in arr]


def _frozen(arr: np.ndarray) -> np.ndarray:
    """Make the array read-only so that the frozen report really cannot change."""
    arr.setflags(write=False)
    return arr


def _rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``100 * num / den`` with NaN where ``den == 0`` (and no divide-by-zero warning)."""
    out = np.full(num.shape, np.nan)
    np.divide(100.0 * num, den, out=out, where=den > 0)
    return out


def _class_ranges(rates: np.ndarray, mode: str) -> np.ndarray:
    """Per-class range over groups of a (G, K) rate table with NaN for undefined cells.

    Under ``"zero"`` undefined rates count as 0. Under ``"ignore"`` they are skipped, and a class
    with fewer than two defined rates gets range 0 (no pair of groups to compare).
    """
    if mode == "zero":
        filled = np.nan_to_num(rates, nan=0.0)
        return filled.max(axis=0) - filled.min(axis=0)
    defined = ~np.isnan(rates)
    hi = np.where(defined, rates, -np.inf).max(axis=0)
    lo = np.where(defined, rates, np.inf).min(axis=0)
    return np.where(defined.sum(axis=0) >= 2, hi - lo, 0.0)


def report_from_counts(
    counts: np.ndarray,
    *,
    empty_cells: EmptyCells = "ignore",
    class_names: Sequence[str] | None = None,
    group_names: Sequence[str] | None = None,
) -> FairnessReport:
    """Compute accuracy and fairness metrics from a (group, true class, predicted class) table.

    Parameters
    ----------
    counts : array-like of int, shape (G, K, K)
        ``counts[g, c, p]`` = number of test samples with group ``g``, true class ``c`` and
        predicted class ``p``, as built by :func:`count_table`. Tables from several batches can be
        summed before calling this.
    empty_cells : {"ignore", "zero"}, default "ignore"
        How to treat a (group, class) cell with no test samples (no TPR) or a (group, predicted
        class) cell with no predictions (no PPV). ``"ignore"`` leaves the cell out of that class's
        range over groups and warns once, naming the empty test cells; a class left with fewer
        than two groups gets gap 0. ``"zero"`` counts the missing rate as 0, as the reference
        research code does; it inflates the gap of any class some group lacks.
    class_names, group_names : sequence of str, optional
        Names used in the warning; default to the indices.

    Returns
    -------
    FairnessReport
        All metrics, in percent. See :class:`FairnessReport` for their meaning.

    Raises
    ------
    FairDistillError
        If ``counts`` is not a (G, K, K) table of non-negative integers with at least one sample,
        if ``empty_cells`` is not one of the allowed modes, or if a names list has the wrong length.

    Warns
    -----
    UserWarning
        Under ``empty_cells="ignore"``, once, when some (group, class) test cell is empty.
    """
    return _build_report(counts, empty_cells, class_names, group_names)


def _build_report(
    counts: Any,
    empty_cells: str,
    class_names: Sequence[str] | None,
    group_names: Sequence[str] | None,
) -> FairnessReport:
    """Shared body of the public entry points; called directly by both so that the warning's
    ``stacklevel`` points at the user's call."""
    _check_mode(empty_cells)
    if isinstance(counts, torch.Tensor):
        counts = counts.detach().cpu()
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape[1] != counts.shape[2]:
        raise FairDistillError(f"counts must have shape (groups, classes, classes), got {counts.shape}")
    if counts.dtype.kind not in "iu" and not (
        counts.dtype.kind == "f" and np.all(np.isfinite(counts)) and np.all(counts == np.round(counts))
    ):
        raise FairDistillError(f"counts must hold integer counts, got dtype {counts.dtype}")
    counts = counts.astype(np.int64)
    if counts.size and counts.min() < 0:
        raise FairDistillError("counts must be non-negative")
    total = int(counts.sum())
    if total == 0:
        raise FairDistillError("counts holds no samples; cannot compute metrics")
    n_groups, n_classes = counts.shape[0], counts.shape[1]
    gnames = _check_names(group_names, n_groups, "group_names")
    cnames = _check_names(class_names, n_classes, "class_names")

    correct = np.trace(counts, axis1=1, axis2=2)  # (G,) correct predictions per group
    diag = np.diagonal(counts, axis1=1, axis2=2)  # (G, K): counts[g, c, c]
    per_group = counts.sum(axis=(1, 2))
    acc = 100.0 * float(correct.sum()) / total
    group_acc = _rate(correct, per_group)
    worst_group_acc = float(np.nanmin(group_acc))  # total > 0, so at least one group is non-empty

    support = counts.sum(axis=2)  # (G, K) test samples per (group, true class)
    predicted = counts.sum(axis=1)  # (G, K) predictions per (group, predicted class)
    tpr = _rate(diag, support)
    ppv = _rate(diag, predicted)

    empty = [(int(g), int(c)) for g, c in np.argwhere(support == 0)]
    if empty and empty_cells == "ignore":
        listed = ", ".join(f"(group {gnames[g]!r}, class {cnames[c]!r})" for g, c in empty[:_MAX_LISTED_CELLS])
        more = len(empty) - _MAX_LISTED_CELLS
        if more > 0:
            listed += f", ... and {more} more"
        warnings.warn(
            f"empty test cells ignored in TPR: {listed}; pass empty_cells='zero' to count them as 0",
            UserWarning,
            stacklevel=3,  # _build_report -> public function -> user code
        )

    class_gaps = _class_ranges(tpr, empty_cells)
    suff_gaps = _class_ranges(ppv, empty_cells)
    return FairnessReport(
        acc=acc,
        deo_m=float(class_gaps.max()),
        deo_a=float(class_gaps.mean()),
        worst_group_acc=worst_group_acc,
        suff_m=float(suff_gaps.max()),
        suff_a=float(suff_gaps.mean()),
        tpr=_frozen(tpr),
        group_acc=_frozen(group_acc),
        class_gaps=_frozen(class_gaps),
        empty_cells=empty,
    )


def fairness_report(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    n_classes: int | None = None,
    n_groups: int | None = None,
    empty_cells: EmptyCells = "ignore",
    class_names: Sequence[str] | None = None,
    group_names: Sequence[str] | None = None,
) -> FairnessReport:
    """Score predictions for accuracy and group fairness (all values in percent).

    Shorthand for ``report_from_counts(count_table(...))``; see :func:`count_table` for the
    inputs and :func:`report_from_counts` for ``empty_cells`` and the names.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0, 1, 0, 1])
    >>> a = np.array([0, 0, 1, 1])
    >>> r = fairness_report(y, np.array([0, 1, 1, 0]), sensitive_features=a)
    >>> r.acc, r.deo_m, r.worst_group_acc
    (50.0, 100.0, 0.0)
    """
    _check_mode(empty_cells)  # fail on a bad mode before any work
    counts = count_table(y_true, y_pred, sensitive_features=sensitive_features, n_classes=n_classes, n_groups=n_groups)
    return _build_report(counts, empty_cells, class_names, group_names)
