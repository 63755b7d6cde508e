"""DC: dataset condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021), with any target.

The matched representation is the gradient of the cross-entropy w.r.t. the weights of a ConvNet:
the synthetic images of class c move so that the gradient they produce points where the gradient
of the real images of class c points. Each iteration draws a fresh network, of which every method
trains its own copy (:mod:`~fairdistill.backbones.bilevel`); then ``outer_loop`` times:

1. per class c: the real gradient ``g_T(c)`` of the target's loss on the step's real batch of c,
   the synthetic gradient ``g_S(c)`` of the mean CE on the synthetic images of c (kept
   differentiable w.r.t. the pixels, the same DSA transform as the real batch), and the gradient
   distance ``D(g_T(c), g_S(c))``; then one step of the image optimiser;
2. except after the last outer step: train the method's network on its current (detached)
   synthetic set for ``inner_loop`` epochs (plain SGD, lr ``lr_net``, batch 256, DSA if on).

Targets (SPEC section 2). A weighted target (population, barycenter, uniform-sampling) is ONE
backward pass of a per-sample-weighted CE: sample i of group a in class c gets weight
``w(c, a) / n(c, a)`` (:meth:`~fairdistill.targets.Target.sample_weights`). The gradient is linear
in the per-sample losses, so this is ``sum_a w(c, a)`` times the mean-CE gradient of group a; with
the barycenter's ``w = 1/|A_c|`` it is the mean of the group gradients (COBRA-DC) at the cost of
vanilla DC (fact 2). Real samples without a group label (group -1) get weight 0 under group
targets and their share of the class under ``population``. A per-group target (group-sync, FairDD)
matches every present group's own gradient: a forward and backward per group, one distance term
per group. The generalised barycenters (``bary-*``) have no such form and are refused at the start.
On a CPU a real gradient of more than 32 images is computed in pieces of 32 whose gradients are
summed (``real_grad_chunk``; the same gradient up to the rounding of the sum over the images, faster
because a piece's activations stay in cache); ``real_grad_chunk=0`` takes one backward pass.

IDC (:mod:`~fairdistill.backbones.idc`) is this backbone with multi-formation and a network trained
on real data: it changes :meth:`DC.class_images`, :meth:`DC.between` and the initial images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distances import GRADIENT_DISTANCES
from ..errors import FairDistillError
from ..models import GRADIENT_CHUNK, forward_chunk, uses_batch_statistics
from ..targets import GroupSync
from ..training import train
from .base import BACKBONES
from .bilevel import Bilevel, Iteration, inner_sgd
from .engine import Engine, MethodRun, RealBatch


def weighted_gradient(
    net: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor, weights: Tensor, chunk: int | None = None
) -> list[Tensor]:
    """Gradient of ``sum_i weights[i] * CE(net(x_i), y_i)`` w.r.t. ``params``: one forward, one backward
    (``chunk``: one per piece of ``chunk`` images, the pieces' gradients summed).

    With ``weights = w(c, a_i) / n(c, a_i)`` this is ``sum_a w(c, a) * grad mean_{i in a} CE_i``.
    Needs per-sample outputs (instance norm, or BN in eval mode).
    """
    return _summed_gradient(net, params, x, y, weights, chunk)


def group_gradients(
    net: nn.Module,
    params: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    groups: Tensor,
    which: Sequence[int],
    chunk: int | None = None,
) -> list[list[Tensor]]:
    """The mean-CE gradient of each group in ``which``, each from a forward and backward on that group alone
    (``chunk``: a group of more images in pieces, as :func:`weighted_gradient`).

    Outputs are per-sample, so this equals slicing one shared forward; but a backward from a
    shared forward runs over the whole batch every time (G full backwards), whereas per-group
    passes cost about one pass over the batch in total.
    """
    out = []
    for gid in which:
        m = groups == gid
        out.append(_summed_gradient(net, params, x[m], y[m], None, chunk))
    return out


def _summed_gradient(
    net: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor, weights: Tensor | None, chunk: int | None
) -> list[Tensor]:
    """The gradient of the weighted CE summed over ``x`` (``weights`` None: the mean CE), in one backward
    pass when ``x`` fits in one piece (or the net needs the whole batch), else one per piece, summed in
    the pieces' order. Summing per piece moves only the order of the sum over the images (rounding)."""
    if chunk is None or len(x) <= chunk or uses_batch_statistics(net):
        if weights is None:
            return list(torch.autograd.grad(F.cross_entropy(net(x), y), params))
        ce = F.cross_entropy(net(x), y, reduction="none")
        return list(torch.autograd.grad((weights * ce).sum(), params))
    total: list[Tensor] = []
    for s in range(0, len(x), chunk):
        piece = slice(s, s + chunk)
        ce = F.cross_entropy(net(x[piece]), y[piece], reduction="none")
        loss = (weights[piece] * ce).sum() if weights is not None else ce.sum() / len(x)
        grads = torch.autograd.grad(loss, params)
        if total:
            for acc, g in zip(total, grads, strict=True):
                acc.add_(g)
        else:
            total = list(grads)
    return total


@BACKBONES.register("dc", "gradient matching: CE gradients of a ConvNet trained on the synthetic set in between")
class DC(Bilevel):
    name = "dc"
    draws = "dc"
    shards_classes = True  # per-class matching; the inner loop trains on the gathered set
    distances = GRADIENT_DISTANCES
    default_distance = "layer-cosine"
    # DC draws a fresh network each iteration and trains it itself (inner loop): no other embedder applies
    embedders = ("random",)
    # the generalised barycenters have no per-sample weights: one weighted real gradient cannot express them
    feature_targets = False

    def class_images(self, engine: Engine, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The training images (kept differentiable) that one class's stored images stand for: DC's are themselves."""
        return images, labels

    def match(self, engine: Engine, run: MethodRun, state: Iteration, it: int, step: int) -> float:
        """Match every class's gradients; each class back-propagates alone, freeing its double-backward graph."""
        net = self.ready(engine, run, state, it, step)
        batch = engine.real_batch(run.sampling, it, step)
        ipc, dsa, params = engine.config.ipc, engine.dsa, list(net.parameters())
        chunk = forward_chunk(batch.x.device, engine.config.real_grad_chunk, GRADIENT_CHUNK)
        sizes = torch.bincount(batch.y, minlength=batch.counts.counts.shape[0]).tolist()  # real images per class
        weights = run.target.sample_weights(batch.counts, batch.y, batch.a)
        xs, ys, as_ = batch.x.split(sizes), batch.y.split(sizes), batch.a.split(sizes)
        ws = weights.split(sizes) if weights is not None else None
        # a class the batch defines no target for (e.g. only unlabelled samples under a group target) is skipped
        matched = run.target.matched_classes(batch.counts).tolist()
        total = run.images.new_zeros(())
        first = engine.shard.owned.start
        for c, n in enumerate(sizes):
            if n == 0 or not matched[c]:  # (every class of another process has n == 0)
                continue
            sl = slice((c - first) * ipc, (c - first + 1) * ipc)
            x_syn, y_syn = self.class_images(engine, run.images[sl], engine.syn_labels[sl])
            if dsa is not None and engine.dsa_params is not None:
                x_syn = dsa.apply(x_syn, engine.dsa_params, y_syn)
            g_syn = torch.autograd.grad(F.cross_entropy(net(x_syn), y_syn), params, create_graph=True)
            if ws is not None:
                loss = run.distance(weighted_gradient(net, params, xs[c], ys[c], ws[c], chunk), g_syn)
            else:
                loss = _per_group_loss(run, net, params, xs[c], ys[c], as_[c], batch, c, g_syn, chunk)
            loss.backward(inputs=[run.images])
            total = total + loss.detach()
        return float(total)

    def between(self, engine: Engine, state: Iteration, it: int, step: int) -> None:
        """DC trains each method's network on that method's (detached) synthetic set."""
        if engine.inner <= 0:
            return
        for run in engine.runs:
            assert run.net is not None
            train(
                run.net,
                engine.gather(run.images.detach()),  # the whole synthetic set, from every process
                engine.all_labels,
                epochs=engine.inner,
                generator=engine.generator("inner", it, step),
                sgd=inner_sgd(engine.config),
                dsa=engine.train_dsa,
            )

    def meta(self, engine: Engine, run: MethodRun) -> dict:
        return {"outer_loop": engine.updates, "inner_loop": engine.inner, "final_loss": run.last_loss}


def _per_group_loss(
    run: MethodRun,
    net: nn.Module,
    params: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    a: Tensor,
    batch: RealBatch,
    c: int,
    g_syn: Sequence[Tensor],
    chunk: int | None = None,
) -> Tensor:
    """A per-group target's loss for class ``c``: one distance term per present group, reduced by the target."""
    if not isinstance(run.target, GroupSync):
        raise FairDistillError(
            f"target {run.target.name!r} gives no cell weights and is not a group-sync target; "
            "the dc backbone cannot match it"
        )
    present = batch.counts.present[c]
    which = present.nonzero().flatten()
    grads = group_gradients(net, params, x, y, a, which.tolist(), chunk)
    per_group = torch.stack([run.distance(gr, g_syn) for gr in grads])
    per_cell = per_group.new_zeros(present.shape[0]).index_copy(0, which, per_group)
    return run.target.reduce_groups(per_cell.unsqueeze(0), present.unsqueeze(0))[0]
