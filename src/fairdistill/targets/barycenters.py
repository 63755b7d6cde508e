"""Generalised barycenters of group statistics, and the targets that match them.

COBRA's barycenter under squared L2 is the plain mean of the group statistics (the ``barycenter``
target). Under another discrepancy d the barycenter of class y is

    b_y = argmin_m  (1/|A_y|) sum_{a in A_y} d(m(y, a), m)

over the groups A_y present in the class. :func:`solve_barycenter` solves it for every class at once:
``points`` (K, G, D), a ``present`` mask (K, G), one (K, D) answer. Discrepancies
(:data:`DISCREPANCIES`) and the targets built on them:

=========== ========= ============================ ===========================================================
target      name      d(x, m)                      how b is found
=========== ========= ============================ ===========================================================
barycenter  l2sq      ||x - m||_2^2                closed form: the mean (the ``barycenter`` target, core.py)
bary-l1     l1        ||x - m||_1                  closed form: the coordinate-wise median
bary-l2     l2        ||x - m||_2                  L-BFGS: the geometric median
bary-linf   linf      ||x - m||_inf                L-BFGS on a log-sum-exp smoothing, sharpened in two stages
bary-cosine cosine    1 - cos(x, m)                closed form: the direction of the sum of unit vectors
bary-huber  huber     sum_d huber_delta(x_d - m_d) exact per coordinate: a search over the breakpoints
=========== ========= ============================ ===========================================================

Closed forms, and the choices they leave open:

* **l1** separates over coordinates, and each coordinate is minimised by a median. With an even
  number of present groups every point between the two middle values is a minimiser; this module
  returns their midpoint (the usual median of an even sample).
* **cosine** only sees the direction of m and is smallest along ``sum_a x_a / ||x_a||``. The length
  is free; b gets the mean length of the present group statistics, so it lives on the scale of what
  it summarises. Zero vectors have no direction and are left out of the sum; if the unit vectors
  cancel, every direction is optimal and b is the mean.
* **huber** (``delta`` in feature units, default 1 as in ``torch.nn.HuberLoss``; quadratic within
  ``delta``, linear beyond) also separates over coordinates. The derivative of a coordinate's
  objective, ``sum_a clamp(m - x_a, -delta, delta)``, is continuous, non-decreasing and linear between
  the breakpoints ``x_a -/+ delta``, so its zero is found exactly by evaluating it at the sorted
  breakpoints and interpolating on the segment where it changes sign. Where it is zero on a whole
  interval (every group farther than ``delta``), b is the interval's midpoint, as for L1.

Numerical solutions (l2, linf) run :class:`torch.optim.LBFGS` (strong-Wolfe line search) on all
classes jointly: the variable is a (K, D) tensor and the objective the sum of the per-class
objectives, which are independent. Each class is first centred on its mean and divided by its
largest absolute deviation (both discrepancies are equivariant under that change of coordinates), so
the warm start (the mean, zero after centring) and the tolerances mean the same for every class and
feature scale. ``l2`` is smoothed as ``sqrt(||r||^2 + eps^2)`` with ``eps`` = :data:`L2_EPS` so its
gradient exists at a data point. ``linf`` is a max over coordinates, not smooth: L-BFGS minimises
``tau * log sum_d (exp(r_d / tau) + exp(-r_d / tau))``, which overestimates ``max_d |r_d|`` by at most
``tau * log(2D)``, for each ``tau`` of :data:`LINF_TEMPERATURES` in turn (scaled coordinates), each
stage warm-started at the previous one. On random problems this matched the exact LP optimum to
1e-5 relative or better.

Every solve runs in float64 and is detached: no gradient flows through it, so the synthetic set only
gets gradients through the distance between b and its own statistic. Whatever the solver does, a
class keeps the mean unless an iterate's exact objective is lower, so a generalised barycenter is
never a worse answer to its own problem than the mean it starts from.

The distribution-level extension, ``bary-w2``, works on per-sample features rather than group means:
for each class, the free-support Wasserstein-2 barycenter (POT, ``ot.lp.free_support_barycenter``) of
the present groups' feature clouds with uniform weights over the groups, then an entropic
optimal-transport (Sinkhorn) loss between the class's synthetic features and that barycenter. See
:func:`w2_barycenter` and :func:`sinkhorn_cost` for the choices (support size, initialisation,
regularisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..distances import Distance
from ..errors import FairDistillError
from ..registry import Registry
from .core import ALL, TARGETS, Barycenter, GroupStats, Target

#: L-BFGS iterations of a numerical solve (per smoothing stage for linf)
LBFGS_ITERS = {"l2": 50, "linf": 25}
#: the smoothing temperatures of the linf surrogate, in scaled coordinates (largest deviation = 1)
LINF_TEMPERATURES = (0.03, 0.003)
#: Huber's threshold in feature units (the default of torch.nn.HuberLoss)
HUBER_DELTA = 1.0
#: ||r||_2 is smoothed as sqrt(||r||^2 + eps^2) in scaled coordinates
L2_EPS = 1e-9

# ---- discrepancies ----------------------------------------------------------------------------------
#: (points (K, G, D), m (K, D), **kw) -> (K, G): the discrepancy of every group statistic to m
Objective = Callable[..., Tensor]
#: (points (K, G, D), present (K, G), **kw) -> (K, D): the barycenter
ClosedForm = Callable[..., Tensor]


@dataclass(frozen=True)
class Discrepancy:
    """A discrepancy d(x, m): its exact ``value`` and either a ``closed_form`` barycenter or a ``smooth``
    objective for L-BFGS (in scaled coordinates; ``None`` if the value itself is smooth enough)."""

    name: str
    value: Objective
    closed_form: ClosedForm | None = None
    smooth: Objective | None = None


DISCREPANCIES: Registry[Discrepancy] = Registry("barycenter discrepancy")


def _huber(r: Tensor, delta: float) -> Tensor:
    a = r.abs()
    return torch.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))


def _value_l2sq(points: Tensor, m: Tensor, **_: object) -> Tensor:
    return (points - m.unsqueeze(1)).pow(2).sum(-1)


def _value_l1(points: Tensor, m: Tensor, **_: object) -> Tensor:
    return (points - m.unsqueeze(1)).abs().sum(-1)


def _value_l2(points: Tensor, m: Tensor, **_: object) -> Tensor:
    return (points - m.unsqueeze(1)).norm(dim=-1)


def _value_linf(points: Tensor, m: Tensor, **_: object) -> Tensor:
    return (points - m.unsqueeze(1)).abs().amax(-1)


def _value_cosine(points: Tensor, m: Tensor, **_: object) -> Tensor:
    m = m.unsqueeze(1)
    norms = points.norm(dim=-1) * m.norm(dim=-1)
    return 1 - (points * m).sum(-1) / norms.clamp_min(torch.finfo(points.dtype).tiny)


def _value_huber(points: Tensor, m: Tensor, delta: float = HUBER_DELTA, **_: object) -> Tensor:
    return _huber(points - m.unsqueeze(1), delta).sum(-1)


def _smooth_l2(points: Tensor, m: Tensor, **_: object) -> Tensor:
    return ((points - m.unsqueeze(1)).pow(2).sum(-1) + L2_EPS**2).sqrt()


def _smooth_linf(points: Tensor, m: Tensor, tau: float = LINF_TEMPERATURES[-1], **_: object) -> Tensor:
    r = (points - m.unsqueeze(1)) / tau
    return tau * torch.logsumexp(torch.cat([r, -r], -1), -1)


def masked_mean(points: Tensor, present: Tensor, **_: object) -> Tensor:
    """(K, D) mean of the present groups' points; zero for a class with none."""
    w = present.to(points.dtype)
    return (w.unsqueeze(-1) * points).sum(1) / w.sum(1, keepdim=True).clamp_min(1)


def coordinate_median(points: Tensor, present: Tensor, **_: object) -> Tensor:
    """(K, D) coordinate-wise median of the present groups (midpoint of the two middle values for an even count)."""
    k, g, d = points.shape
    n = present.sum(1)
    ordered = torch.where(present.unsqueeze(-1), points, torch.full_like(points, torch.inf)).sort(1).values
    lo = ((n - 1).clamp_min(0) // 2).view(k, 1, 1).expand(k, 1, d)
    hi = (n // 2).clamp(max=g - 1).view(k, 1, 1).expand(k, 1, d)
    med = 0.5 * (ordered.gather(1, lo) + ordered.gather(1, hi)).squeeze(1)
    return torch.where((n > 0).unsqueeze(-1), med, torch.zeros_like(med))


def cosine_direction(points: Tensor, present: Tensor, **_: object) -> Tensor:
    """(K, D) the direction of the sum of the present groups' unit vectors, at their mean length."""
    tiny = torch.finfo(points.dtype).tiny
    norms = points.norm(dim=-1)
    use = present & (norms > 0)
    units = torch.where(use.unsqueeze(-1), points / norms.clamp_min(tiny).unsqueeze(-1), torch.zeros_like(points))
    total = units.sum(1)
    total_norm = total.norm(dim=-1, keepdim=True)
    length = masked_mean(norms.unsqueeze(-1), present)
    cancelled = total_norm <= 1e-12 * use.sum(1, keepdim=True).clamp_min(1)
    return torch.where(cancelled, masked_mean(points, present), total / total_norm.clamp_min(tiny) * length)


def huber_location(points: Tensor, present: Tensor, delta: float = HUBER_DELTA, **_: object) -> Tensor:
    """(K, D) exact minimiser of ``sum_a huber_delta(x_a - m)`` per coordinate, over the present groups."""
    if not delta > 0:
        raise FairDistillError(f"huber delta must be > 0, got {delta}")
    k, g, d = points.shape
    mean = masked_mean(points, present)
    # an absent group sits at the mean: its breakpoints only subdivide segments; it adds nothing to the slope
    x = torch.where(present.unsqueeze(-1), points, mean.unsqueeze(1))
    bp = torch.cat([x - delta, x + delta], 1).sort(1).values  # (K, 2G, D)
    w = present.to(points.dtype)
    slope = torch.zeros_like(bp)  # the derivative of the objective at every breakpoint
    for j in range(g):
        slope += w[:, j].view(k, 1, 1) * (bp - x[:, j : j + 1]).clamp(-delta, delta)

    def root(a: Tensor) -> Tensor:
        """Zero of the linear interpolation of the slope on [bp[a], bp[a + 1]]."""
        a = a.clamp(0, 2 * g - 2).unsqueeze(1)
        p0, p1 = bp.gather(1, a), bp.gather(1, a + 1)
        v0, v1 = slope.gather(1, a), slope.gather(1, a + 1)
        step = (p1 - p0) * (-v0) / (v1 - v0).clamp_min(torch.finfo(bp.dtype).tiny)
        return (p0 + step.clamp(min=0).minimum(p1 - p0)).squeeze(1)

    # rounding leaves the slope of a flat stretch at +-1e-16 rather than 0: compare with a tolerance
    tol = 8 * g * torch.finfo(bp.dtype).eps * (x.abs().amax((1, 2), keepdim=True) + delta)
    first = (slope >= -tol).to(torch.uint8).argmax(1)  # the first breakpoint where the slope reaches zero
    last = 2 * g - 1 - (slope <= tol).flip(1).to(torch.uint8).argmax(1)  # the last one where it is still zero
    lo, hi = root(first - 1), root(last)
    loc = 0.5 * (lo + hi)
    return torch.where((present.sum(1) > 0).unsqueeze(-1), loc, torch.zeros_like(loc))


DISCREPANCIES.add("l2sq", Discrepancy("l2sq", _value_l2sq, closed_form=masked_mean), "squared L2: the mean")
DISCREPANCIES.add("l1", Discrepancy("l1", _value_l1, closed_form=coordinate_median), "L1: coordinate-wise median")
DISCREPANCIES.add("l2", Discrepancy("l2", _value_l2, smooth=_smooth_l2), "L2: geometric median (L-BFGS)")
DISCREPANCIES.add(
    "linf", Discrepancy("linf", _value_linf, smooth=_smooth_linf), "L-infinity (L-BFGS on a log-sum-exp smoothing)"
)
DISCREPANCIES.add(
    "cosine", Discrepancy("cosine", _value_cosine, closed_form=cosine_direction), "1 - cosine: mean unit direction"
)
DISCREPANCIES.add(
    "huber", Discrepancy("huber", _value_huber, closed_form=huber_location), "coordinate-wise Huber (exact)"
)


def list_discrepancies(pattern: str = "*") -> list[str]:
    return DISCREPANCIES.list(pattern)


def barycenter_objective(points: Tensor, present: Tensor, m: Tensor, discrepancy: str, **kw: float) -> Tensor:
    """(K,) the exact objective ``(1/|A_y|) sum_{a in A_y} d(points[y, a], m[y])`` (0 for a class with no group)."""
    per = DISCREPANCIES.get(discrepancy).value(points, m, **kw)
    w = present.to(per.dtype)
    return (torch.where(present, per, torch.zeros_like(per)) * w).sum(1) / w.sum(1).clamp_min(1)


# ---- the solver ---------------------------------------------------------------------------------------
def _lbfgs(objective: Callable[[Tensor], Tensor], start: Tensor, iters: int) -> Tensor:
    """Minimise ``objective(z)`` (a scalar) from ``start`` with L-BFGS; returns the detached iterate."""
    z = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [z],
        lr=1.0,
        max_iter=iters,
        history_size=10,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=False)
        f = objective(z)
        f.backward()
        return f

    with torch.enable_grad():
        opt.step(closure)
    return z.detach()


@torch.no_grad()
def solve_barycenter(
    points: Tensor, present: Tensor, discrepancy: str, iters: int | None = None, **kw: float
) -> Tensor:
    """(K, D) barycenters ``argmin_m (1/|A_y|) sum_{a in A_y} d(points[y, a], m)`` of every class at once.

    ``points`` (K, G, D): group statistics (values of absent groups are ignored); ``present`` (K, G)
    bool. ``discrepancy``: a name in :data:`DISCREPANCIES`; ``iters``: L-BFGS iterations (per smoothing
    stage for linf; default :data:`LBFGS_ITERS`); ``kw``: parameters of the discrepancy (``delta`` for
    huber). Detached, in the dtype of ``points``; a class with no group present gets zeros.
    """
    disc = DISCREPANCIES.get(discrepancy)
    if points.dim() != 3 or tuple(present.shape) != tuple(points.shape[:2]):
        raise FairDistillError(
            f"barycenter points must be (K, G, D) with a (K, G) mask, got {tuple(points.shape)} and "
            f"{tuple(present.shape)}"
        )
    x = points.detach().to(torch.float64)
    present = present.to(device=x.device, dtype=torch.bool)
    mean = masked_mean(x, present)
    if disc.closed_form is not None:
        b = disc.closed_form(x, present, **kw)
        # a closed form is exact, up to rounding: never hand back something worse than the mean
        worse = barycenter_objective(x, present, b, discrepancy, **kw) > barycenter_objective(
            x, present, mean, discrepancy, **kw
        )
        return torch.where(worse.unsqueeze(-1), mean, b).to(points.dtype)
    assert disc.smooth is not None
    iters = LBFGS_ITERS.get(discrepancy, 50) if iters is None else iters

    # scaled coordinates: each class centred on its mean and divided by its largest absolute deviation
    dev = torch.where(present.unsqueeze(-1), x - mean.unsqueeze(1), torch.zeros_like(x))
    scale = dev.abs().amax((1, 2))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    z_points = dev / scale.view(-1, 1, 1)
    w = present.to(x.dtype)
    w = w / w.sum(1, keepdim=True).clamp_min(1)

    best = torch.zeros_like(mean)  # the mean, in scaled coordinates
    best_value = (disc.value(z_points, best, **kw) * w).sum(1)
    start = best
    for stage in ({"tau": t} for t in LINF_TEMPERATURES) if discrepancy == "linf" else ({},):

        def objective(z: Tensor, stage: dict = stage) -> Tensor:
            return (disc.smooth(z_points, z, **stage, **kw) * w).sum()

        cand = _lbfgs(objective, start, iters)
        value = (disc.value(z_points, cand, **kw) * w).sum(1)
        better = torch.isfinite(cand).all(-1) & torch.isfinite(value) & (value < best_value)
        best = torch.where(better.unsqueeze(-1), cand, best)
        best_value = torch.where(better, value, best_value)
        start = torch.where(torch.isfinite(cand), cand, best)
    return (mean + best * scale.unsqueeze(-1)).to(points.dtype)


# ---- Wasserstein-2 barycenter of the group feature clouds -------------------------------------------------
#: fixed-point iterations of the free-support barycenter (each solves one exact OT problem per group)
W2_ITERS = 20
#: entropic regularisation of the Sinkhorn loss, relative to the mean cost of the class's cost matrix
SINKHORN_REG = 0.05
#: log-domain Sinkhorn iterations
SINKHORN_ITERS = 100

POT_MISSING = "bary-w2 needs the optional dependency POT: pip install 'fairdistill[ot]'"


def _import_ot():
    try:
        import ot
    except ImportError as err:
        raise FairDistillError(POT_MISSING) from err
    return ot


@torch.no_grad()
def w2_barycenter(
    features: Tensor,
    labels: Tensor,
    groups: Tensor,
    num_classes: int,
    num_groups: int,
    support: int,
    iters: int = W2_ITERS,
) -> Tensor:
    """(K, support, D) free-support W2 barycenter of each class's group feature clouds (detached).

    Each present group of a class is an empirical measure (its samples, uniform weights, duplicates
    counted); the barycenter weights the groups uniformly and puts mass 1/``support`` on each of its
    ``support`` points (the DM target uses the IPC, so synthetic points and barycenter points pair up).
    Initialisation, deterministic and independent of how groups are numbered: point j is the mean over
    the present groups of each group's (j mod n_a)-th sample in batch order, i.e. the barycenter under
    an arbitrary coupling, which the fixed-point iterations of ``ot.lp.free_support_barycenter`` then
    improve. The solve runs in float64 on the CPU, in coordinates centred on the class's mean of group
    means and scaled by its root-mean-square deviation (the barycenter is equivariant under that
    change), with stop threshold 1e-9 per point on the squared displacement. A class with no sample
    gets zeros.
    """
    ot = _import_ot()
    if support < 1:
        raise FairDistillError(f"W2 barycenter support must be >= 1, got {support}")
    x = features.detach().to("cpu", torch.float64)
    y, a = labels.detach().cpu(), groups.detach().cpu()
    out = torch.zeros(num_classes, support, x.shape[1], dtype=torch.float64)
    for c in range(num_classes):
        clouds = [x[(y == c) & (a == g)] for g in range(num_groups)]
        clouds = [cl for cl in clouds if cl.shape[0] > 0]
        if not clouds:
            continue
        centre = torch.stack([cl.mean(0) for cl in clouds]).mean(0)
        scale = torch.cat([cl - centre for cl in clouds]).pow(2).sum(1).mean().sqrt()
        scale = scale if scale > 0 else torch.ones(())
        clouds = [(cl - centre) / scale for cl in clouds]
        j = torch.arange(support)
        init = torch.stack([cl[j % cl.shape[0]] for cl in clouds]).mean(0)
        weights = [torch.full((cl.shape[0],), 1.0 / cl.shape[0], dtype=torch.float64) for cl in clouds]
        # torch tensors: POT's torch backend does the products in torch (numpy's threaded BLAS was ~20x slower
        # on these small matrices on a busy two-core machine); the exact OT solves run in POT's C++ either way
        bary = ot.lp.free_support_barycenter(clouds, weights, init, numItermax=iters, stopThr=1e-9 * support)
        out[c] = bary * scale + centre
    return out.to(features.device, features.dtype)


def sinkhorn_cost(x: Tensor, y: Tensor, reg: float = SINKHORN_REG, iters: int = SINKHORN_ITERS) -> Tensor:
    """(K,) entropic OT cost between point clouds ``x`` (K, n, D) and ``y`` (K, m, D), uniform weights.

    Cost: squared Euclidean distance. Regularisation ``eps = reg * mean(C)`` per class (so the plan is
    equally sharp at every feature scale). The plan P is found by ``iters`` log-domain Sinkhorn
    iterations without autograd, and the result is ``<P, C>``: by the envelope theorem its gradient
    (P held fixed) is the gradient of the entropic OT value ``min_P <P, C> + eps KL(P | a b^T)``, so
    no gradient is propagated through the iterations. Gradients flow into ``x`` and ``y`` through C.
    """
    if not reg > 0:
        raise FairDistillError(f"sinkhorn reg must be > 0, got {reg}")
    cost = (x.unsqueeze(2) - y.unsqueeze(1)).pow(2).sum(-1)  # (K, n, m)
    with torch.no_grad():
        c = cost.detach()
        k, n, m = c.shape
        eps = (reg * c.mean((1, 2), keepdim=True)).clamp_min(torch.finfo(c.dtype).tiny)
        log_a, log_b = -math.log(n), -math.log(m)
        f = c.new_zeros(k, n, 1)
        g = c.new_zeros(k, 1, m)
        for _ in range(iters):
            f = -eps * torch.logsumexp((g - c) / eps + log_b, dim=2, keepdim=True)
            g = -eps * torch.logsumexp((f - c) / eps + log_a, dim=1, keepdim=True)
        plan = torch.exp((f + g - c) / eps + log_a + log_b)
    return (plan * cost).sum((1, 2))


# ---- targets ------------------------------------------------------------------------------------------------
class SolvedBarycenter(Target):
    """The barycenter of the present groups' statistics under :attr:`discrepancy` (solved, not a weighted mean).

    ``statistic`` is :func:`solve_barycenter` of the group means; the loss is the method's distance
    between it and the synthetic class statistic, summed over the classes present (as for every
    target). Not a weighted mean, so no cell weights: gradient matching (DC, IDC) refuses it.
    """

    discrepancy: str = ""
    feature_only = True

    def cell_weights(self, stats: GroupStats) -> None:
        return None

    def statistic(self, stats: GroupStats) -> Tensor:
        return solve_barycenter(stats.means, stats.present, self.discrepancy)


@TARGETS.register("bary-l1", "barycenter of the group statistics under L1: the coordinate-wise median")
class BarycenterL1(SolvedBarycenter):
    name = "bary-l1"
    discrepancy = "l1"


@TARGETS.register("bary-l2", "barycenter of the group statistics under L2: the geometric median")
class BarycenterL2(SolvedBarycenter):
    name = "bary-l2"
    discrepancy = "l2"


@TARGETS.register("bary-linf", "barycenter of the group statistics under L-infinity")
class BarycenterLinf(SolvedBarycenter):
    name = "bary-linf"
    discrepancy = "linf"


@TARGETS.register("bary-cosine", "barycenter of the group statistics under 1 - cosine: the mean unit direction")
class BarycenterCosine(SolvedBarycenter):
    name = "bary-cosine"
    discrepancy = "cosine"


@TARGETS.register(
    "bary-huber", f"barycenter of the group statistics under coordinate-wise Huber (delta {HUBER_DELTA:g})"
)
class BarycenterHuber(SolvedBarycenter):
    name = "bary-huber"
    discrepancy = "huber"


@TARGETS.register("bary-w2", "W2 barycenter of the group feature clouds, Sinkhorn loss on the synthetic features")
class WassersteinBarycenter(Target):
    """Match each class's synthetic features (a cloud of IPC points) to the W2 barycenter of its groups' clouds.

    Needs per-sample features (``uses_samples``): only DM supports it. The method's distance is not
    used (the loss is the entropic OT cost of :func:`sinkhorn_cost`). ``statistic`` returns the mean
    of the barycenter, which for W2 is exactly the uniform mean of the group means (the ``barycenter``
    target): each fixed-point step moves the support to a group-weighted mean of transport images.
    """

    name = "bary-w2"
    feature_only = True
    uses_samples = True

    def cell_weights(self, stats: GroupStats) -> None:
        return None

    def statistic(self, stats: GroupStats) -> Tensor:
        return Barycenter().statistic(stats)

    def loss(self, stats: GroupStats, syn: Tensor, distance: Distance, classes: slice = ALL) -> Tensor:
        raise FairDistillError(
            "target 'bary-w2' matches the synthetic features of a class as a point cloud, not its mean: "
            "call sample_loss (the dm backbone does)"
        )

    def sample_loss(self, stats: GroupStats, syn_features: Tensor, classes: slice = ALL) -> Tensor:
        if stats.features is None or stats.labels is None or stats.groups is None:
            raise FairDistillError(
                "target 'bary-w2' needs the real per-sample features: GroupStats.from_features(..., keep_samples=True)"
            )
        (k, g), ipc = stats.counts.shape, syn_features.shape[1]
        bary = w2_barycenter(stats.features, stats.labels, stats.groups, k, g, support=ipc)[classes]
        per_class = sinkhorn_cost(syn_features, bary.to(syn_features.dtype))
        return (per_class * stats.classes_present[classes]).sum()
