"""The layers CAFE matches, and its two losses: layer-wise feature alignment and discrimination.

Matched layers (:func:`layer_features`): the output of every conv block of a ConvNet before its
pooling, then the embedding (the last block's pooled output, flattened), as in CAFE's code (Wang
et al., CVPR 2022). The real batch goes through the network once and every layer's features are
summed per (class, group) cell (:func:`layer_group_stats`); a target then acts layer by layer
(:func:`feature_loss`). The discrimination term (:func:`discrimination_loss`) asks every real image
to be most similar to the centre of its own class's synthetic embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DistillConfig
from ..distances import Distance
from ..errors import FairDistillError
from ..models import forward_in_chunks
from ..targets import ALL, GroupStats, Target

_POOLS = (nn.AvgPool2d, nn.MaxPool2d)


# ---- the matched layers ----------------------------------------------------------------------------
def _check_convnet(net: nn.Module) -> None:
    if not (isinstance(getattr(net, "features", None), nn.Sequential) and hasattr(net, "classifier")):
        raise FairDistillError(
            f"the cafe backbone matches the blocks of a ConvNet-family model (features + classifier); "
            f"got {type(net).__name__}"
        )


def num_layers(net: nn.Module) -> int:
    """How many layers CAFE matches in ``net``: one per conv block, plus the embedding."""
    _check_convnet(net)
    return sum(isinstance(m, nn.Conv2d) for m in net.features) + 1


def layer_features(net: nn.Module, x: Tensor) -> list[Tensor]:
    """The features CAFE matches, each flattened to (B, D_l): every conv block's output before its
    pooling (a block ends before a pooling layer or the next conv), then the embedding ``net.embed(x)``.
    """
    _check_convnet(net)
    mods = list(net.features)
    out = []
    h = x
    for i, m in enumerate(mods):
        h = m(h)
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if not isinstance(m, _POOLS) and (nxt is None or isinstance(nxt, (nn.Conv2d, *_POOLS))):
            out.append(h.flatten(1))
    out.append(h.flatten(1))  # the embedding (what the classifier sees)
    return out


def published_layer_weights(layers: int) -> tuple[float, ...]:
    """CAFE's published weights for ``layers`` matched layers (blocks, then the embedding).

    The published ConvNet-3 weights are 0.1, 0.1, 1 on the three block outputs and 2 on the
    embedding (matched once as the pooled map and once flattened, weight 1 each); for other depths
    every block but the last keeps 0.1.
    """
    if layers < 2:
        raise FairDistillError(f"CAFE needs at least one block and the embedding, got {layers} layers")
    return (0.1,) * (layers - 2) + (1.0, 2.0)


def resolve_layer_weights(config: DistillConfig, layers: int) -> tuple[float, ...]:
    """The config's ``layer_weights`` (checked against the net's ``layers``) or the published ones."""
    if config.layer_weights is None:
        return published_layer_weights(layers)
    weights = tuple(float(w) for w in config.layer_weights)
    if len(weights) != layers:
        raise FairDistillError(
            f"layer_weights has {len(weights)} entries but the network has {layers} matched layers "
            f"({layers - 1} blocks and the embedding)"
        )
    return weights


def layer_group_stats(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    num_classes: int,
    num_groups: int,
    population_shares: Tensor | None = None,
    chunk: int | None = None,
) -> tuple[list[GroupStats], Tensor]:
    """Per-(class, group) sums of every matched layer's features from ONE forward pass of the real batch.

    Returns one :class:`GroupStats` per layer (same counts, the layer's sums) and the (N, D)
    embeddings of the batch (the discrimination term needs them per sample). ``chunk``: images per
    piece of the forward (:func:`~fairdistill.models.forward_in_chunks`; None: all at once).
    """
    with torch.no_grad():
        feats = forward_in_chunks(lambda piece: layer_features(net, piece), net, x, chunk)
    stats = [GroupStats.from_features(f, y, a, num_classes, num_groups, population_shares) for f in feats]
    return stats, feats[-1]


# ---- the loss ----------------------------------------------------------------------------------------
def feature_loss(
    target: Target,
    stats: Sequence[GroupStats],
    syn_means: Sequence[Tensor],
    distance: Distance,
    weights: Sequence[float],
    classes: slice = ALL,
) -> Tensor:
    """``sum_l w_l * target.loss(stats_l, syn_means_l, d)``: the target's aggregation, layer by layer.

    ``classes``: the synthetic means are of these classes only (one process of a class-sharded run).
    """
    terms = [
        w * target.loss(s, m, distance, classes) for s, m, w in zip(stats, syn_means, weights, strict=True) if w != 0
    ]
    return torch.stack(terms).sum() if terms else syn_means[-1].new_zeros(())


def discrimination_loss(
    real_embed: Tensor, real_labels: Tensor, syn_centres: Tensor, temperature: float = 1.0
) -> Tensor:
    """CAFE's discrimination term: ``sum_i CE(softmax_k(<e_i, P_k> / tau), y_i)``, summed over the real batch.

    ``real_embed`` (N, D) and ``real_labels`` (N,): the real batch; ``syn_centres`` (K, D): the class
    means of the synthetic embeddings. Low when every real image is most similar to the centre of its
    own class. Summed, not averaged, as published.
    """
    logits = real_embed @ syn_centres.T / temperature
    return F.cross_entropy(logits, real_labels, reduction="sum")
