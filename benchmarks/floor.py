"""What fairdistill's structure costs: its iteration timed against the same work written in plain PyTorch.

The "floor" is a from-scratch iteration written inside this file in the plainest way (no engine,
no registries, no records, no checks, no logging), doing the work of one fairdistill iteration:

* ``dm600`` / ``dm64``: DM with up to 600 / 64 real images per class (uniform within the class),
  DSA on; one image update. ``vanilla``: squared L2 between the mean embedding of the class's real
  batch and that of its synthetic images. ``fairdd``: the sum, over the groups present in the
  class's batch, of the squared L2 between each group's mean and the synthetic mean (every group
  weighted alike). ``cobra``: the distance between the uniform mean of the present groups' means
  (the barycenter) and the synthetic mean, after a warm start (see below).
* ``dc256``: DC with 256 real images per class, no DSA, one outer step (one image update, no inner
  training): per class, the layer-wise distance (per output unit ``1 - cos``, norm product + 1e-6,
  1-D parameters ignored) between the CE gradient of the real images and that of the synthetic
  images. ``vanilla``: the class gradient; ``fairdd``: one gradient per present group, one distance
  each, reduced as the recipe's target says (the COBRA scripts' FairDD baseline: their mean);
  ``cobra``: the gradient of the mean over groups, as one backward pass of a per-sample weighted
  CE (weight ``1 / (|A| n_a)``), the way fairdistill computes it.

Every setting comes from fairdistill's own ``cobra-paper`` recipe of that backbone (the COBRA
scripts: ConvNet width 128, depth 3, instance norm, ReLU, average pooling; IPC 10; real-image init;
image SGD at lr 1.0 (DM) / 0.1 (DC), momentum 0.5; class-uniform real batches; the DSA strategy
``color_crop_cutout_flip_scale_rotate``); only the real batch size (and, for DC, outer_loop = 1,
inner_loop = 0) is set here. The floor reads the method's target, distance and embedder from
fairdistill's spec, so ``cobra`` on DM uses the recipe's L1 distance and its warm start: the
iteration's fresh network trained for ``warm_epochs`` (10 at IPC 10) epochs on the current synthetic
set, plain SGD lr 0.01 without momentum or weight decay, batch 256, non-Siamese DSA (one operation
per batch, each image its own parameters), then frozen. The warm start is also timed on its own,
in both (fairdistill's ``WarmEmbedder.prepare`` on a network from ``make_network``; the floor's
``warm_start``), which gives ``ratio_dm600_cobra_vs_vanilla_warm`` = fairdistill's cobra iteration /
(1.2 x (fairdistill's vanilla iteration + fairdistill's warm start)): at most 1 means COBRA costs
no more than 1.2x what vanilla DM plus the warm start it asks for costs.

Real images per class: ``min(batch, images of the class)``, in both. cmnist-fg-mini has 400
training images per class, so ``dm600`` matches all 400 of every class each iteration (fairdistill's
class batch draws without replacement; the table prints the count each side used).

How it measures. fairdistill: one ``get_backbone(b).distill(data, [spec], config)`` call per block
with ``iterations = N + 1``; a callback takes a timestamp after every iteration (synchronising CUDA
first), and the block's seconds per iteration are (last stamp - first stamp) / N. So loading,
the engine's set-up (initial images, samplers, optimisers) and the first iteration (lazy
allocations, kernel selection) are excluded, and what remains is the whole iteration as a user
runs it: drawing the network, the DSA transforms and the real batch, matching, the image update,
the loss all-reduce and NaN check, the callback's state. The floor's blocks run N + 1 iterations of
its own loop and are timed the same way. Blocks alternate fairdistill, floor, fairdistill, floor...
(``--repeats`` of each, per configuration and mode) so that background load hits both alike; the
table reports the median block of each and their ratio (fairdistill / floor: 1.0 means
fairdistill's structure costs nothing above the floor). The warm starts are timed the same way
(N + 1 of them per block, the last N counted), the network's creation not included.

How the floor's computation differs from fairdistill's (same work, not the same numbers):

* One class at a time: per class, a real forward of that class's images and a synthetic forward
  of its IPC images, and (DM) the class's loss back-propagated on its own. fairdistill embeds the
  whole real batch (every class) in one forward and the whole synthetic set in one, sums features
  per (class, group) cell with ``index_add_`` and back-propagates one loss. Same FLOPs, other
  batching. The floor's group means are a Python loop over the groups present.
* DSA: the floor draws one operation per class (the reference code's Siamese DSA) and applies only
  it, in float32, to the class's real and synthetic images with the same parameters: colour
  (brightness, saturation, contrast), crop (an integer translation by a gather, zero fill), cutout
  (a zeroed square of half the image side), flip, scale and rotate (``affine_grid`` /
  ``grid_sample`` with ``align_corners=True``, as the reference). fairdistill also picks one
  operation per class and, by default, applies only what was drawn: the colour arithmetic on the
  images whose class drew colour, one composed ``grid_sample`` in float32 with
  ``align_corners=False`` (crop included) on the images whose transform is not the identity, and
  the cutout mask only when some class drew cutout (``dsa_exact=True``: the colour arithmetic on
  every image and the warp in float64).
* Randomness: the floor draws everything from one ``torch.Generator`` (seeded by ``--seed``) in
  program order; fairdistill derives a generator per purpose and iteration. So the networks, real
  batches, transforms and initial images differ: the losses and images are not comparable bit for
  bit. Both initialise conv and linear weights uniformly in +-1/sqrt(fan_in) from a generator,
  after the module constructors' own default initialisation.
* The floor's ConvNet is its own ``nn.Sequential`` (``nn.ReLU(inplace=True)``, ``GroupNorm`` with
  one group per channel as instance norm); fairdistill builds its ConvNet through the model registry.
* Warm start: the floor trains the iteration's fresh network itself; fairdistill trains a deep copy
  of it (so other methods of a lockstep run can share the original).
* DC: the floor's vanilla real gradient is of the plain mean CE; fairdistill's is of a per-sample
  weighted CE with weights 1/n (the same gradient). fairdistill's network is a deep copy per method;
  the floor's is used directly. Both back-propagate the distance into the images only.
* Nothing else: the floor keeps no loss values (no device synchronisation per step), no counts of
  matched images, no NaN check, no resumable snapshot, no records or logging.

Outputs: a table per configuration, ``results/floor.json`` (``--tag T``: ``floor-T.json``) and, as
the last line of stdout, a JSON object of the ratios (fairdistill / floor) ``ratio_dm600_vanilla`` ...
``ratio_dc256_cobra`` and ``ratio_dm600_cobra_vs_vanilla_warm`` (null where not measured).

    python benchmarks/floor.py [--configs dm600,dm64,dc256] [--modes vanilla,fairdd,cobra]
        [--iterations 3] [--repeats 3] [--threads 2] [--device cpu] [--deterministic] [--tag T]
    python benchmarks/floor.py --quick      # a smoke test of seconds, not a measurement

``--quick`` (1 iteration, 1 repeat, IPC 2, at most 8 real images per class, width 16 unless
``--width``) only checks that everything runs; it writes ``results/floor-quick.json`` (unless
``--tag``), never ``floor.json``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

from fairdistill import rng  # noqa: E402
from fairdistill.backbones import get_backbone  # noqa: E402
from fairdistill.backbones.base import initial_images, make_network, train_dsa  # noqa: E402
from fairdistill.backbones.engine import IterationState  # noqa: E402
from fairdistill.config import DistillConfig, MethodSpec  # noqa: E402
from fairdistill.data import load_dataset  # noqa: E402
from fairdistill.embedders import WARM_BATCH, WARM_LR, embedder_for, warm_epochs_for  # noqa: E402
from fairdistill.presets import get_method, profile_configs  # noqa: E402
from fairdistill.runtime import resolve_device  # noqa: E402

PROFILE = "cobra-paper"
#: configuration -> (backbone, real images per class)
CONFIGS: dict[str, tuple[str, int]] = {"dm600": ("dm", 600), "dm64": ("dm", 64), "dc256": ("dc", 256)}
MODES = ("vanilla", "fairdd", "cobra")
HEADLINE_KEYS = [f"ratio_{c}_{m}" for c in CONFIGS for m in MODES] + ["ratio_dm600_cobra_vs_vanilla_warm"]
WARM_ALLOWANCE = 1.2  # cobra may cost this much times (vanilla + warm start)

# the reference DSA's parameters (Zhao & Bilen, ParamDiffAug)
BRIGHTNESS, SATURATION, CONTRAST = 1.0, 2.0, 0.5
CROP_RATIO, CUTOUT_RATIO, SCALE_RATIO, ROTATE_DEG, FLIP_PROB = 0.125, 0.5, 1.2, 15.0, 0.5


# ==== the floor: plain PyTorch ==========================================================================
def half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


def draw_aug(op: str, n: int, gen: torch.Generator, h: int, w: int) -> dict[str, Tensor]:
    """Parameters of ``n`` transforms of operation ``op`` (n = 1: one transform shared by a whole batch)."""
    if op == "color":
        u = torch.rand(n, 3, generator=gen)
        return {
            "brightness": (u[:, 0] - 0.5) * BRIGHTNESS,
            "saturation": u[:, 1] * SATURATION,
            "contrast": u[:, 2] + CONTRAST,
        }
    if op == "crop":
        mx, my = half_up(CROP_RATIO * w), half_up(CROP_RATIO * h)
        return {
            "dx": torch.randint(-mx, mx + 1, (n,), generator=gen),
            "dy": torch.randint(-my, my + 1, (n,), generator=gen),
        }
    if op == "cutout":
        return {"cx": torch.randint(0, w, (n,), generator=gen), "cy": torch.randint(0, h, (n,), generator=gen)}
    if op == "flip":
        return {"flip": torch.rand(n, generator=gen) < FLIP_PROB}
    theta = torch.zeros(n, 2, 3)
    if op == "scale":
        s = torch.rand(n, 2, generator=gen) * (SCALE_RATIO - 1.0 / SCALE_RATIO) + 1.0 / SCALE_RATIO
        theta[:, 0, 0], theta[:, 1, 1] = s[:, 0], s[:, 1]
    elif op == "rotate":
        a = (torch.rand(n, generator=gen) - 0.5) * 2 * math.radians(ROTATE_DEG)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), a.sin(), -a.sin(), a.cos()
    else:
        raise ValueError(f"unknown DSA operation {op!r}")
    return {"theta": theta}


def apply_aug(x: Tensor, op: str, p: dict[str, Tensor]) -> Tensor:
    """Operation ``op`` with parameters ``p`` (one row per image, or one row for all), float32, differentiable."""
    b, _, h, w = x.shape
    p = {k: v.to(x.device) for k, v in p.items()}
    if op == "color":
        x = x + p["brightness"].view(-1, 1, 1, 1)
        m = x.mean(1, keepdim=True)
        x = (x - m) * p["saturation"].view(-1, 1, 1, 1) + m
        m = x.mean((1, 2, 3), keepdim=True)
        return (x - m) * p["contrast"].view(-1, 1, 1, 1) + m
    if op == "crop":  # move the content by (dx, dy) whole pixels, zeros where it leaves the frame
        rows = torch.arange(h, device=x.device).view(1, h, 1) - p["dy"].view(-1, 1, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w) - p["dx"].view(-1, 1, 1)
        valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        src = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)
        src = src.view(src.shape[0], 1, h * w).expand(b, x.shape[1], h * w)
        return x.flatten(2).gather(2, src).view_as(x) * valid.unsqueeze(1).to(x.dtype)
    if op == "cutout":
        sh, sw = half_up(CUTOUT_RATIO * h), half_up(CUTOUT_RATIO * w)
        y0 = (p["cy"] - sh // 2).view(-1, 1, 1)
        x0 = (p["cx"] - sw // 2).view(-1, 1, 1)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (rows >= y0) & (rows < y0 + sh) & (cols >= x0) & (cols < x0 + sw)
        return x * (~inside).unsqueeze(1).to(x.dtype)
    if op == "flip":
        return torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(3), x)
    grid = F.affine_grid(p["theta"].expand(b, 2, 3), [b, *x.shape[1:]], align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def floor_convnet(channels: int, classes: int, size: int, width: int, depth: int, gen: torch.Generator) -> nn.Module:
    """ConvNet-``depth``: [conv 3x3, instance norm, ReLU, avg pool 2] x depth, then a linear classifier."""
    layers: list[nn.Module] = []
    c, s = channels, size
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width), nn.ReLU(inplace=True)]
        layers.append(nn.AvgPool2d(2))
        c, s = width, s // 2
    net = nn.Sequential(nn.Sequential(*layers), nn.Flatten(), nn.Linear(c * s * s, classes))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                m.weight.copy_(torch.empty(m.weight.shape).uniform_(-bound, bound, generator=gen))
                m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=gen))
    return net


def embed(net: nn.Module, x: Tensor) -> Tensor:
    return net[1](net[0](x))


def layer_distance(real: list[Tensor], syn: list[Tensor]) -> Tensor:
    total = syn[0].new_zeros(())
    for r, s in zip(real, syn, strict=True):
        if s.dim() < 2:
            continue
        r, s = r.reshape(r.shape[0], -1), s.reshape(s.shape[0], -1)
        total = total + (1 - (r * s).sum(1) / (r.norm(dim=1) * s.norm(dim=1) + 1e-6)).sum()
    return total


@dataclass(frozen=True)
class FloorSettings:
    """What one floor run does, read off fairdistill's recipe (spec + config) for the same run."""

    backbone: str
    target: str
    distance: str
    warm: bool
    ipc: int
    batch_real: int
    lr_img: float
    img_momentum: float
    width: int
    depth: int
    dsa_ops: tuple[str, ...] | None
    warm_epochs: int
    warm_lr: float
    warm_batch: int
    warm_momentum: float
    warm_weight_decay: float

    @classmethod
    def of(cls, spec: MethodSpec, cfg: DistillConfig, dataset_strategy: str) -> FloorSettings:
        kw = cfg.model_kwargs
        if cfg.model != "convnet" or kw.get("norm", "instance") != "instance" or cfg.img_optimizer != "sgd":
            raise SystemExit("the floor implements the instance-norm ConvNet and image SGD only")
        return cls(
            backbone=spec.backbone,
            target=spec.target,
            distance=spec.distance or "",
            warm=spec.embedder == "warm",
            ipc=cfg.ipc,
            batch_real=cfg.batch_real,
            lr_img=cfg.lr_img,
            img_momentum=cfg.img_momentum,
            width=kw.get("width", 128),
            depth=kw.get("depth", 3),
            dsa_ops=tuple((cfg.dsa_strategy or dataset_strategy).split("_")) if cfg.dsa else None,
            warm_epochs=cfg.warm_epochs if cfg.warm_epochs is not None else warm_epochs_for(cfg.ipc),
            warm_lr=WARM_LR,
            warm_batch=WARM_BATCH,
            warm_momentum=cfg.warm_momentum,
            warm_weight_decay=cfg.warm_weight_decay,
        )


@dataclass
class FloorData:
    """The training split cut by class once, on the device (set-up, not timed)."""

    images: list[Tensor]
    groups: list[Tensor]
    groups_cpu: list[Tensor]
    channels: int
    size: int

    @classmethod
    def of(cls, data, device: torch.device) -> FloorData:
        x, y, a = data.train.images, data.train.labels, data.train.groups
        k = data.num_classes
        groups = [a[y == c] for c in range(k)]
        return cls(
            [x[y == c].to(device) for c in range(k)],
            [g.to(device) for g in groups],
            groups,
            int(x.shape[1]),
            int(x.shape[2]),
        )

    @property
    def classes(self) -> int:
        return len(self.images)

    def real_per_class(self, batch: int) -> list[int]:
        return [min(batch, len(i)) for i in self.images]


def warm_start(net: nn.Module, images: Tensor, labels: Tensor, st: FloorSettings, gen: torch.Generator) -> nn.Module:
    """Train ``net`` in place on the (detached) synthetic set, then freeze it."""
    for p in net.parameters():
        p.requires_grad_(True)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=st.warm_lr, momentum=st.warm_momentum, weight_decay=st.warm_weight_decay)
    images = images.detach()
    n, h, w = images.shape[0], images.shape[2], images.shape[3]
    for _ in range(st.warm_epochs):
        order = torch.randperm(n, generator=gen).to(images.device)
        for start in range(0, n, st.warm_batch):
            idx = order[start : start + st.warm_batch]
            x = images[idx]
            if st.dsa_ops:  # non-Siamese: one operation for the batch, each image its own parameters
                op = st.dsa_ops[int(torch.randint(len(st.dsa_ops), (1,), generator=gen))]
                x = apply_aug(x, op, draw_aug(op, len(idx), gen, h, w))
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def group_means(feats: Tensor, groups: Tensor, present: list[int]) -> list[Tensor]:
    return [feats[groups == g].mean(0) for g in present]


def floor_dm_iteration(fd: FloorData, st: FloorSettings, syn: Tensor, labels: Tensor, opt, gen) -> None:
    net = floor_convnet(fd.channels, fd.classes, fd.size, st.width, st.depth, gen).to(syn.device)
    for p in net.parameters():
        p.requires_grad_(False)
    if st.warm:
        net = warm_start(net, syn, labels, st, gen)
    dist = (lambda a, b: (a - b).abs().sum()) if st.distance == "l1" else (lambda a, b: (a - b).pow(2).sum())
    opt.zero_grad()
    for c in range(fd.classes):
        pick = torch.randperm(len(fd.images[c]), generator=gen)[: st.batch_real]
        x_real, a_cpu = fd.images[c][pick.to(syn.device)], fd.groups_cpu[c][pick]
        x_syn = syn[c * st.ipc : (c + 1) * st.ipc]
        if st.dsa_ops:  # Siamese: one operation and one set of parameters for the class's real and synthetic images
            op = st.dsa_ops[int(torch.randint(len(st.dsa_ops), (1,), generator=gen))]
            p = draw_aug(op, 1, gen, fd.size, fd.size)
            with torch.no_grad():
                x_real = apply_aug(x_real, op, p)
            x_syn = apply_aug(x_syn, op, p)
        with torch.no_grad():
            f_real = embed(net, x_real)
        s = embed(net, x_syn).mean(0)
        if st.target == "population":
            loss = dist(f_real.mean(0), s)
        else:
            present = torch.unique(a_cpu).tolist()
            means = group_means(f_real, a_cpu.to(syn.device), present)
            if st.target == "barycenter":
                loss = dist(torch.stack(means).mean(0), s)
            elif st.target in ("group-sync", "group-sync-mean"):
                loss = sum(dist(m, s) for m in means)
                if st.target == "group-sync-mean":
                    loss = loss / len(means)
            else:
                raise SystemExit(f"the floor has no DM target {st.target!r}")
        loss.backward()
    opt.step()


def floor_dc_iteration(fd: FloorData, st: FloorSettings, syn: Tensor, labels: Tensor, opt, gen) -> None:
    if st.dsa_ops:
        raise SystemExit("the floor's DC runs without DSA (as the recipe)")
    net = floor_convnet(fd.channels, fd.classes, fd.size, st.width, st.depth, gen).to(syn.device)
    net.train()
    params = list(net.parameters())
    opt.zero_grad()
    for c in range(fd.classes):
        pick = torch.randperm(len(fd.images[c]), generator=gen)[: st.batch_real]
        x_real, a_cpu = fd.images[c][pick.to(syn.device)], fd.groups_cpu[c][pick]
        y_real = torch.full((len(pick),), c, device=syn.device)
        x_syn, y_syn = syn[c * st.ipc : (c + 1) * st.ipc], labels[c * st.ipc : (c + 1) * st.ipc]
        g_syn = torch.autograd.grad(F.cross_entropy(net(x_syn), y_syn), params, create_graph=True)
        if st.target == "population":
            g_real = torch.autograd.grad(F.cross_entropy(net(x_real), y_real), params)
            loss = layer_distance(list(g_real), list(g_syn))
        elif st.target == "barycenter":  # mean of the group gradients: one backward of a weighted CE
            present, counts = torch.unique(a_cpu, return_counts=True)
            per_group = torch.zeros(int(present.max()) + 1)
            per_group[present] = 1.0 / (len(present) * counts.float())
            weights = per_group[a_cpu].to(syn.device)
            ce = F.cross_entropy(net(x_real), y_real, reduction="none")
            g_real = torch.autograd.grad((weights * ce).sum(), params)
            loss = layer_distance(list(g_real), list(g_syn))
        elif st.target in ("group-sync", "group-sync-mean"):
            a = a_cpu.to(syn.device)
            terms = []
            for g in torch.unique(a_cpu).tolist():
                m = a == g
                g_real = torch.autograd.grad(F.cross_entropy(net(x_real[m]), y_real[m]), params)
                terms.append(layer_distance(list(g_real), list(g_syn)))
            loss = sum(terms)
            if st.target == "group-sync-mean":
                loss = loss / len(terms)
        else:
            raise SystemExit(f"the floor has no DC target {st.target!r}")
        loss.backward(inputs=[syn])
    opt.step()


def floor_initial(fd: FloorData, ipc: int, gen: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
    picks = [fd.images[c][torch.randperm(len(fd.images[c]), generator=gen)[:ipc].to(device)] for c in range(fd.classes)]
    labels = torch.arange(fd.classes, device=device).repeat_interleave(ipc)
    return torch.cat(picks).clone(), labels


def floor_run(fd: FloorData, st: FloorSettings, iterations: int, device, seed: int, tick: Callable[[], None]) -> None:
    gen = torch.Generator().manual_seed(seed)
    images, labels = floor_initial(fd, st.ipc, gen, device)
    syn = images.requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=st.lr_img, momentum=st.img_momentum)
    step = floor_dm_iteration if st.backbone == "dm" else floor_dc_iteration
    for _ in range(iterations):
        step(fd, st, syn, labels, opt, gen)
        tick()


# ==== timing ==========================================================================================
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Timestamps after each unit of work; the per-unit time excludes the first unit."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.stamps = device, []

    def tick(self, *_: object) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())

    def per_unit(self) -> float:
        return (self.stamps[-1] - self.stamps[0]) / (len(self.stamps) - 1)


def fairdistill_block(data, spec: MethodSpec, cfg: DistillConfig, device, n: int) -> tuple[float, list[int] | None]:
    clock = Clock(device)
    last: list[IterationState] = []

    def callback(state: IterationState) -> None:
        clock.tick()
        last[:] = [state]  # kept, not read: reading the stats here would land in the next interval

    get_backbone(spec.backbone).distill(data, [spec], replace(cfg, iterations=n + 1), device=device, callback=callback)
    stats = last[0].stats if last else None
    used = stats[spec.name].counts.sum(1).round().long().tolist() if stats else None  # DM: real per class
    return clock.per_unit(), used


def floor_block(fd: FloorData, st: FloorSettings, device, n: int, seed: int) -> float:
    clock = Clock(device)
    floor_run(fd, st, n + 1, device, seed, clock.tick)
    return clock.per_unit()


def fairdistill_warm_block(data, cfg: DistillConfig, device, n: int) -> float:
    embedder = embedder_for("warm", cfg)
    dsa = train_dsa(data, cfg)
    images, labels = initial_images(data, cfg)
    images, labels = images.to(device), labels.to(device)
    times = []
    for i in range(n + 1):
        net = make_network(data, cfg, "dm-net", i, device=device)
        for p in net.parameters():
            p.requires_grad_(False)
        gen = rng.generator(cfg.seed, "dm-warm", i)
        sync(device)
        t = time.perf_counter()
        embedder.prepare(net, images, labels, generator=gen, dsa=dsa)
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.fmean(times[1:])


def floor_warm_block(fd: FloorData, st: FloorSettings, device, n: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    images, labels = floor_initial(fd, st.ipc, gen, device)
    times = []
    for _ in range(n + 1):
        net = floor_convnet(fd.channels, fd.classes, fd.size, st.width, st.depth, gen).to(device)
        sync(device)
        t = time.perf_counter()
        warm_start(net, images, labels, st, gen)
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.fmean(times[1:])


def source_state() -> dict:
    """The commit, and which files under src/ differ from it (the code that was timed)."""
    root = Path(__file__).resolve().parent.parent

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "src_changed": git("status", "--porcelain", "--", "src").splitlines()}


def parse_list(text: str, allowed, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise SystemExit(f"unknown {what} {bad or text!r}; allowed: {', '.join(allowed)}")
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="subset of " + ",".join(CONFIGS))
    ap.add_argument("--modes", default=",".join(MODES), help="subset of " + ",".join(MODES))
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations per block (one more runs untimed)")
    ap.add_argument("--repeats", type=int, default=3, help="blocks of each side per configuration and mode")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True)")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--width", type=int, default=None, help="ConvNet width (default 128; --quick: 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 iteration, 1 repeat, tiny batches and net")
    ap.add_argument("--tag", default="", help="suffix of the results file (results/floor-TAG.json)")
    args = ap.parse_args()
    configs = parse_list(args.configs, CONFIGS, "configuration")
    modes = parse_list(args.modes, MODES, "mode")
    if args.quick:
        args.iterations, args.repeats, args.ipc = 1, 1, 2
    width = args.width if args.width is not None else (16 if args.quick else 128)
    if args.iterations < 1 or args.repeats < 1:
        raise SystemExit("--iterations and --repeats must be >= 1")

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)  # (switches CUDA to deterministic kernels: set below as asked)
    torch.use_deterministic_algorithms(args.deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = args.deterministic
        torch.backends.cudnn.benchmark = False
    data = load_dataset(args.dataset)
    fd = FloorData.of(data, device)

    plans = {}  # config -> mode -> (spec, cfg, floor settings)
    for name in configs:
        backbone, batch = CONFIGS[name]
        if args.quick:
            batch = min(batch, 8)
        cfg, _ = profile_configs(PROFILE, args.ipc, args.seed, backbone, args.dataset)
        cfg = replace(cfg, batch_real=batch, model_kwargs={**cfg.model_kwargs, "width": width})
        if backbone == "dc":
            cfg = replace(cfg, outer_loop=1, inner_loop=0)  # one image update, no inner training
        plans[name] = {}
        for mode in modes:
            spec = get_method(mode, backbone, PROFILE, args.ipc)
            plans[name][mode] = (spec, cfg, FloorSettings.of(spec, cfg, data.dsa_strategy))

    # the warm start alone, once (it does not depend on the real batch): DM configs whose cobra warm-starts
    warm_plan = next(
        ((p["cobra"][1], p["cobra"][2]) for p in plans.values() if "cobra" in p and p["cobra"][2].warm), None
    )

    blocks: dict[str, dict[str, dict[str, list[float]]]] = {
        c: {m: {"fd": [], "floor": []} for m in modes} for c in plans
    }
    warm_blocks: dict[str, list[float]] = {"fd": [], "floor": []}
    fd_real: dict[str, dict[str, list[int] | None]] = {c: {} for c in plans}
    for _ in range(args.repeats):
        for name, per_mode in plans.items():
            for mode, (spec, cfg, st) in per_mode.items():
                sec, used = fairdistill_block(data, spec, cfg, device, args.iterations)
                blocks[name][mode]["fd"].append(sec)
                fd_real[name][mode] = used
                blocks[name][mode]["floor"].append(floor_block(fd, st, device, args.iterations, args.seed))
        if warm_plan is not None:
            warm_blocks["fd"].append(fairdistill_warm_block(data, warm_plan[0], device, args.iterations))
            warm_blocks["floor"].append(floor_warm_block(fd, warm_plan[1], device, args.iterations, args.seed))

    med = {
        c: {m: {s: statistics.median(v) for s, v in sides.items()} for m, sides in ms.items()}
        for c, ms in blocks.items()
    }
    warm = {s: statistics.median(v) for s, v in warm_blocks.items() if v}
    headline: dict[str, float | None] = dict.fromkeys(HEADLINE_KEYS)
    warm_ratios: dict[str, float] = {}
    for name, ms in med.items():
        floor_real = fd.real_per_class(plans[name][modes[0]][1].batch_real)
        print(f"\n{name}: {plans[name][modes[0]][1].batch_real} real per class asked; floor used {floor_real}")
        print(f"{'config':<8} {'mode':<8} {'fairdistill s/it':>17} {'floor s/it':>11} {'fairdistill/floor':>18}")
        for mode, s in ms.items():
            ratio = s["fd"] / s["floor"]
            headline[f"ratio_{name}_{mode}"] = round(ratio, 3)
            print(f"{name:<8} {mode:<8} {s['fd']:>17.4f} {s['floor']:>11.4f} {ratio:>18.3f}")
            used = fd_real[name].get(mode)
            if used is not None and used != floor_real:
                print(f"  note: fairdistill matched {used} real images per class, the floor {floor_real}")
        if warm and "cobra" in ms and "vanilla" in ms and plans[name]["cobra"][2].warm:
            r = ms["cobra"]["fd"] / (WARM_ALLOWANCE * (ms["vanilla"]["fd"] + warm["fd"]))
            warm_ratios[name] = round(r, 3)
            print(f"{name:<8} {'cobra':<8} fairdistill cobra / ({WARM_ALLOWANCE} x (vanilla + warm start)) = {r:.3f}")
    if warm:
        print(f"\nwarm start alone (s): fairdistill {warm['fd']:.4f}, floor {warm['floor']:.4f}, "
              f"ratio {warm['fd'] / warm['floor']:.3f}")  # fmt: skip
    headline["ratio_dm600_cobra_vs_vanilla_warm"] = warm_ratios.get("dm600")

    settings = {**vars(args), "width": width, "profile": PROFILE, "device": str(device)}
    details = {
        "settings": settings,
        "source": source_state(),
        "recipes": {
            c: {
                m: {"method": spec.to_dict(), "floor": vars(st), "lr_img": cfg.lr_img, "batch_real": cfg.batch_real}
                for m, (spec, cfg, st) in ms.items()
            }
            for c, ms in plans.items()
        },  # fmt: skip
        "real_per_class": {
            c: {"floor": fd.real_per_class(plans[c][modes[0]][1].batch_real), "fairdistill": fd_real[c]} for c in plans
        },
        "sec_per_iteration": med,
        "blocks": blocks,
        "warm_start_sec": warm or None,
        "warm_start_blocks": warm_blocks if warm else None,
        "cobra_vs_vanilla_warm": warm_ratios,
        "measurement": "per block: (last - first per-iteration timestamp) / N over N + 1 iterations; median block",
    }
    if args.quick:
        details["note"] = "smoke run (--quick): tiny batches and network, 1 iteration, 1 repeat; not a measurement"
    tag = args.tag or ("quick" if args.quick else "")  # a smoke run never overwrites results/floor.json
    finish("floor" + (f"-{tag}" if tag else ""), headline, details)


if __name__ == "__main__":
    main()
