"""Expert trajectories for trajectory matching (MTT): networks trained on the real data, every epoch kept.

An expert is a ConvNet trained on the real training set with plain SGD (MTT: lr 0.01, no momentum,
no weight decay, optionally DSA); its trajectory is its parameters after every epoch (epoch 0: the
initialisation). What an SGD step follows depends on the target:

* ``population``: the mean cross-entropy of the batch as it comes (MTT's experts);
* ``barycenter``: within every class, each group present in the batch gets the same total weight
  (the per-sample weights ``w(c, a) / n(c, a)`` of the one-backward barycenter gradient DC uses,
  scaled by the class's share of the batch), so a step follows, class by class, the uniform mean
  of the group gradients: the trajectory analogue of COBRA's barycenter. It needs no per-group
  expert, so a minority group is never trained on alone and cannot overfit;
* ``uniform-sampling``: the plain mean loss on group-balanced batches (stratified draws), for the ablation.

FairDD's group-sync has no separate trajectory: the sum of the group gradients is |A| times the
barycentric step, i.e. the barycentric trajectory at |A| times the learning rate.

Expert i of every target starts from the same initialisation and (but for ``uniform-sampling``'s
draws) visits the batches in the same order, so the experts of two targets differ only in what a
step follows. Buffers: one safetensors file per expert (``expert-0000.safetensors``...) holding the
(epochs + 1, P) trajectory of the flattened parameters, with the expert settings, the dataset and
its fingerprint in the header; each is written atomically when its expert is done, so a killed run
loses at most the expert in training and a rerun continues (the same seed gives the same files).
The folder is found again from the cache key (dataset fingerprint x expert settings); distillation
reads two epochs of one expert at a time (:meth:`ExpertBuffer.params`), so memory does not grow
with the number of experts.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import rng
from .artifacts import atomic_write_bytes
from .augment import DSA
from .config import DistillConfig, check_count, check_number
from .data.cache import default_cache_dir
from .data.dataset import FairDataset
from .data.sampling import RealSampler
from .errors import FairDistillError
from .models import create_model
from .targets import GroupStats, get_target
from .training import init_weights

#: the targets that have an expert trajectory (group-sync: the barycentric one, scaled; see above)
EXPERT_TARGETS: tuple[str, ...] = ("population", "barycenter", "uniform-sampling")
#: the header key of an expert file
HEADER = "fairdistill_experts"
FORMAT = 1

#: progress: (experts done, experts in all, what happened to the last one: "trained" or "found")
ExpertProgress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ExpertConfig:
    """How a set of experts is trained (what its cache key is made of, with the dataset's fingerprint)."""

    target: str = "population"
    num_experts: int = 100
    epochs: int = 50
    lr: float = 0.01
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str | None = None
    dsa_exact: bool = False
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def from_distill(cls, config: DistillConfig, target: str) -> ExpertConfig:
        """The experts a distillation with ``config`` matches for a method with ``target``."""
        return cls(
            target=target,
            num_experts=config.num_experts,
            epochs=config.expert_train_epochs,
            lr=config.expert_lr,
            batch_size=config.expert_batch,
            dsa=config.expert_dsa,
            dsa_strategy=config.dsa_strategy,
            dsa_exact=config.dsa_exact,
            model=config.model,
            model_kwargs=dict(config.model_kwargs),
            seed=config.seed,
        ).validate()

    def validate(self) -> ExpertConfig:
        if self.target not in EXPERT_TARGETS:
            why = (
                " (FairDD's sum of the group gradients is the barycentric trajectory at |A| times the rate)"
                if self.target.startswith("group-sync")
                else ""
            )
            allowed = ", ".join(EXPERT_TARGETS)
            raise FairDistillError(
                f"MTT's experts cannot use target {self.target!r}: it has no expert trajectory{why}; "
                f"targets with experts: {allowed}"
            )
        check_count("num_experts", self.num_experts, 1)
        check_count("expert epochs", self.epochs, 1)
        check_count("expert batch", self.batch_size, 1)
        check_number("expert lr", self.lr, low=0.0, low_open=True)
        return self

    def key(self, dataset: FairDataset) -> str:
        """The cache key: a hash of the dataset's fingerprint and every setting but the number of experts.

        Expert i does not depend on how many experts are asked for, so a folder of 5 serves a run
        that wants 3 and grows when a run wants 8.
        """
        settings = {k: v for k, v in asdict(self).items() if k != "num_experts"}
        blob = json.dumps({"dataset": dataset.fingerprint(), "experts": settings}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def header(self, dataset: FairDataset, expert: int, shapes: list[tuple[str, list[int]]]) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self).items() if k != "num_experts"}
        return {
            "format": FORMAT,
            "expert": expert,
            "dataset": dataset.name,
            "dataset_fingerprint": dataset.fingerprint(),
            "config": settings,
            "epochs": self.epochs,
            "params": [[n, s] for n, s in shapes],
        }


def expert_folder(dataset: FairDataset, config: ExpertConfig, root: str | Path | None = None) -> Path:
    """Where the experts of ``config`` on ``dataset`` live: ``root`` as given, else the cache folder."""
    if root is not None:
        return Path(root)
    cache = default_cache_dir()
    if cache is None:
        raise FairDistillError(
            "the cache is off (FAIRDISTILL_CACHE=off), so expert buffers need a folder: give experts_dir / --out"
        )
    return cache / "experts" / f"{dataset.name}-{config.target}-{config.key(dataset)}"


def expert_network(dataset: FairDataset, config: ExpertConfig, expert: int, device: torch.device) -> nn.Module:
    """Expert ``expert``'s initial network (the same for every target: experts of two targets are paired)."""
    net = create_model(
        config.model,
        channels=dataset.channels,
        num_classes=dataset.num_classes,
        image_size=dataset.image_size,
        **config.model_kwargs,
    )
    return init_weights(net, rng.generator(config.seed, "expert-init", expert)).to(device)


def flat_params(net: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).float().cpu()


def step_weights(target_name: str, y: Tensor, a: Tensor, k: int, g: int) -> Tensor:
    """Per-sample weights of one expert step (they sum to one over the batch): see the module's docstring.

    The target's within-class weights ``w(c, a) / n(c, a)`` (each class summing to one) times the
    class's share ``n_c / N`` of the batch: the population target gives ``1 / N`` (the plain mean).
    """
    target = get_target(target_name)
    within = target.sample_weights(GroupStats.from_counts(y, a, k, g), y, a)
    share = torch.bincount(y, minlength=k).to(within.dtype)[y] / len(y)
    return within * share


def _batches(dataset: FairDataset, config: ExpertConfig, expert: int, epoch: int) -> list[Tensor]:
    """The index batches of one epoch: a shuffle of the training split, or group-balanced draws."""
    n = len(dataset.train)
    if config.target == "uniform-sampling":
        sampler = RealSampler(dataset.train, dataset.num_classes, dataset.num_train_groups)
        per_class = max(1, config.batch_size // dataset.num_classes)
        gen = rng.generator(config.seed, "expert-balanced", expert, epoch)
        return [sampler.draw("stratified", per_class, gen) for _ in range(math.ceil(n / config.batch_size))]
    order = torch.randperm(n, generator=rng.generator(config.seed, "expert-order", expert, epoch))
    return list(order.split(config.batch_size))


def train_expert(
    dataset: FairDataset, config: ExpertConfig, expert: int, device: torch.device
) -> tuple[Tensor, list[tuple[str, list[int]]]]:
    """Train expert ``expert``; returns its (epochs + 1, P) trajectory and the parameters' names and shapes."""
    net = expert_network(dataset, config, expert, device)
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.0, weight_decay=0.0)
    dsa = DSA(strategy=config.dsa_strategy or dataset.dsa_strategy, exact=config.dsa_exact) if config.dsa else None
    k, g = dataset.num_classes, dataset.num_train_groups
    labels, groups = dataset.train.labels, dataset.train.groups
    trajectory = [flat_params(net)]
    net.train()
    for epoch in range(config.epochs):
        gen = rng.generator(config.seed, "expert-dsa", expert, epoch)
        for idx in _batches(dataset, config, expert, epoch):
            x, y, a = dataset.train.take(idx, device), labels[idx].to(device), groups[idx].to(device)
            if dsa is not None:
                x = dsa(x, generator=gen)
            ce = F.cross_entropy(net(x), y, reduction="none")
            loss = (step_weights(config.target, y, a, k, g) * ce).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        params = flat_params(net)
        if not torch.isfinite(params).all():
            raise FairDistillError(f"expert {expert} ({config.target}): parameters became NaN/inf in epoch {epoch}")
        trajectory.append(params)
    shapes = [(name, list(p.shape)) for name, p in net.named_parameters()]
    return torch.stack(trajectory), shapes


class ExpertBuffer:
    """The experts of one configuration on one dataset, on disk; read two epochs of one expert at a time."""

    def __init__(self, folder: Path, dataset: FairDataset, config: ExpertConfig) -> None:
        self.folder, self.dataset, self.config = Path(folder), dataset, config
        self.headers = [self._header(i) for i in range(config.num_experts)]
        self.epochs = config.epochs

    def path(self, expert: int) -> Path:
        return self.folder / f"expert-{expert:04d}.safetensors"

    def __len__(self) -> int:
        return self.config.num_experts

    def params(self, expert: int, epoch: int, device: torch.device | None = None) -> Tensor:
        """Expert ``expert``'s flattened parameters after ``epoch`` epochs (read from disk, that row only)."""
        if not 0 <= epoch <= self.epochs:
            raise FairDistillError(f"expert epoch {epoch} is outside the buffer's 0..{self.epochs}")
        from safetensors import SafetensorError, safe_open

        path = self.path(expert)
        try:
            with safe_open(path, "pt") as f:
                row = f.get_slice("trajectory")[epoch : epoch + 1]
        except (SafetensorError, OSError, ValueError) as exc:
            raise FairDistillError(f"expert buffer {path} is corrupt or truncated ({exc})") from None
        return row[0].to(device) if device is not None else row[0]

    def _header(self, expert: int) -> dict[str, Any]:
        return read_header(self.path(expert), self.dataset, self.config, expert)


def read_header(path: Path, dataset: FairDataset, config: ExpertConfig, expert: int) -> dict[str, Any]:
    """The header of an expert file, checked against the dataset and settings it must have been made with."""
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        raise FairDistillError(f"expert buffer {path} is missing; train the experts first (fairdistill experts)")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            shape = list(f.get_slice("trajectory").get_shape())
    except (SafetensorError, OSError, ValueError) as exc:
        raise FairDistillError(f"expert buffer {path} is corrupt or truncated ({exc})") from None
    try:
        header = json.loads(meta[HEADER])
    except (KeyError, ValueError):
        raise FairDistillError(f"expert buffer {path} has no fairdistill expert header") from None
    want = config.header(dataset, expert, [])
    if header.get("dataset_fingerprint") != want["dataset_fingerprint"]:
        raise FairDistillError(
            f"expert buffer {path} was trained on another dataset ({header.get('dataset')}, fingerprint "
            f"{header.get('dataset_fingerprint')}), not {dataset.name} ({want['dataset_fingerprint']})"
        )
    if header.get("config") != want["config"] or header.get("expert") != expert:
        raise FairDistillError(f"expert buffer {path} was trained with other expert settings: {header.get('config')}")
    if shape[0] != config.epochs + 1:
        raise FairDistillError(f"expert buffer {path} holds {shape[0] - 1} epochs, the header says {config.epochs}")
    return header


def train_experts(
    dataset: FairDataset,
    config: ExpertConfig,
    *,
    folder: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: ExpertProgress | None = None,
) -> ExpertBuffer:
    """Train the experts of ``config`` that ``folder`` (default: the cache) does not hold yet; the buffer.

    A finished expert's file is checked and kept; a missing one is trained and written atomically,
    so a run killed midway continues where it stopped.
    """
    config.validate()
    where = expert_folder(dataset, config, folder)
    if where.exists() and not where.is_dir():
        raise FairDistillError(f"the experts' folder {where} is a file, not a folder")
    where.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    for i in range(config.num_experts):
        path = where / f"expert-{i:04d}.safetensors"
        if path.exists():
            read_header(path, dataset, config, i)
            status = "found"
        else:
            trajectory, shapes = train_expert(dataset, config, i, device)
            _write(path, trajectory, config.header(dataset, i, shapes))
            status = "trained"
        if progress is not None:
            progress(i + 1, config.num_experts, status)
    return ExpertBuffer(where, dataset, config)


def load_experts(dataset: FairDataset, config: ExpertConfig, folder: str | Path | None = None) -> ExpertBuffer:
    """The experts of ``config`` on ``dataset``, every file checked; an error names what is missing or wrong."""
    return ExpertBuffer(expert_folder(dataset, config.validate(), folder), dataset, config)


def _write(path: Path, trajectory: Tensor, header: dict[str, Any]) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({"trajectory": trajectory.contiguous()}, metadata={HEADER: json.dumps(header)}))
