"""MTT: dataset distillation by matching training trajectories (Cazenavette et al., CVPR 2022), with any expert target.

Each iteration draws, for every method alike, an expert index i, a start epoch t below
``max_start_epoch`` (as MTT draws it), the student's synthetic batches and their DSA
transforms. Each method reads
epochs t and t + M (``expert_epochs``) of expert i of ITS target's buffer (:mod:`fairdistill.experts`:
population experts for vanilla MTT, the barycentric trajectory for COBRA), starts a student at
theta*_t and takes ``syn_steps`` SGD steps on its synthetic images with a learnable step size alpha,

    theta_{k+1} = theta_k - alpha * grad CE(theta_k; augmented synthetic batch k),

and minimises ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2 over the images (the
engine's image optimiser) and alpha (SGD at ``lr_lr``, momentum 0.5, as MTT). ``unroll_checkpoint``
keeps only the N + 1 parameter vectors of the unroll and recomputes each student step in the
backward pass, one step's graph at a time (:func:`checkpointed_unroll`), instead of holding the
graph of all N steps (:func:`plain_unroll`): the same gradients, memory that grows with the
parameters instead of ``syn_steps x batch_syn`` activations. MTT is not class-sharded: the student
trains on every class at once, so its loss couples all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..augment import DSA, DSAParams
from ..errors import FairDistillError
from ..experts import EXPERT_TARGETS, ExpertBuffer, ExpertConfig, train_experts
from ..registry import Registry
from ..targets import Target
from .base import BACKBONES, IMAGE_SETTINGS, make_network
from .engine import Engine, LockstepBackbone, MethodRun

#: the distance between the student's end point and the expert's: MTT's normalised squared L2 (the only one)
TRAJECTORY_DISTANCES: Registry[Callable[[Tensor, Tensor, Tensor], Tensor]] = Registry("trajectory distance")


@TRAJECTORY_DISTANCES.register("l2sq", "||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2 (MTT)")
def normalised_l2sq(end: Tensor, target: Tensor, start: Tensor) -> Tensor:
    return ((end - target) ** 2).sum() / ((start - target) ** 2).sum()


#: MTT's momentum on the learnable step size
STEP_SIZE_MOMENTUM = 0.5


@dataclass
class MTTRun(MethodRun):
    """An MTT method's run: its target's experts, and its step size (value, momentum buffer)."""

    experts: ExpertBuffer | None = None
    step_size: list[float] = field(default_factory=lambda: [float("nan"), float("nan")])

    RESUME_FIELDS: ClassVar[tuple[str, ...]] = ("last_loss", "step_size")


@dataclass(frozen=True)
class Draw:
    """What every method of an iteration shares: the expert, the start epoch, the student's batches."""

    expert: int
    start: int
    batches: list[Tensor]  # indices into the synthetic set, one per student step
    params: list[DSAParams | None]  # per student step: one DSA transform per image


class Student:
    """The student network as a function of its flattened parameters (``torch.func.functional_call``)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        self.sizes = [p.numel() for _, p in net.named_parameters()]

    def __call__(self, flat: Tensor, x: Tensor) -> Tensor:
        parts = flat.split(self.sizes)
        params = {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}
        return functional_call(self.net, params, (x,))


def student_step(student: Student, theta: Tensor, x: Tensor, y: Tensor, alpha: Tensor, graph: bool) -> Tensor:
    """One SGD step of the student on (x, y); ``graph``: keep it differentiable w.r.t. theta, x and alpha."""
    ce = F.cross_entropy(student(theta, x), y)
    (g,) = torch.autograd.grad(ce, theta, create_graph=graph)
    return theta - alpha * g


def plain_unroll(student, start, target, batches, alpha, inputs) -> Tensor:
    """The normalised trajectory loss, back-propagated through the whole unrolled graph into ``inputs``."""
    theta = start.clone().requires_grad_(True)
    for x, y in batches:
        theta = student_step(student, theta, x(), y, alpha, graph=True)
    loss = normalised_l2sq(theta, target, start)
    torch.autograd.backward(loss, inputs=inputs)
    return loss.detach()


def checkpointed_unroll(student, start, target, batches, alpha, inputs) -> Tensor:
    """:func:`plain_unroll`'s loss and gradients, with each student step recomputed in the backward pass.

    The forward keeps the N + 1 parameter vectors only; the backward walks the steps from the last,
    rebuilds one step's graph from its stored start, back-propagates the incoming gradient through it
    into the images and the step size, and hands the gradient w.r.t. that step's start on.
    """
    thetas = [start]
    theta = start
    for x, y in batches:
        with torch.no_grad():  # the batch only: its graph is rebuilt in the backward pass
            xk = x()
        theta = student_step(student, theta.detach().requires_grad_(True), xk, y, alpha.detach(), False)
        thetas.append(theta.detach())
    end = thetas[-1].requires_grad_(True)
    loss = normalised_l2sq(end, target, start)
    (grad,) = torch.autograd.grad(loss, end)
    for k in range(len(batches) - 1, -1, -1):
        x, y = batches[k]
        theta_k = thetas[k].detach().requires_grad_(True)
        nxt = student_step(student, theta_k, x(), y, alpha, graph=True)
        torch.autograd.backward(nxt, grad_tensors=grad, inputs=[theta_k, *inputs])
        grad = theta_k.grad
    return loss.detach()


@BACKBONES.register("mtt", "trajectory matching: a student trained on the synthetic set follows an expert's epochs")
class MTT(LockstepBackbone):
    name = draws = "mtt"
    run_type, keyed_by_step = MTTRun, False  # one image update (one unrolled student) per iteration
    # the student's end point against the expert's, normalised by the segment's length
    distances, default_distance = TRAJECTORY_DISTANCES, "l2sq"
    embedders = ("random",)  # the student starts from an expert, not from an embedder
    feature_targets = False  # a trajectory follows weighted gradients: the solved barycenters have none
    shards_classes = False
    unsharded = "is not class-sharded: the student trains on every class at once, so its loss couples all classes"
    method_settings = (*IMAGE_SETTINGS, "lr_lr", "lr_teacher")

    @classmethod
    def supports(cls, target: Target) -> bool:
        return target.name in EXPERT_TARGETS

    @classmethod
    def check_target(cls, target: Target) -> None:
        if not cls.supports(target):
            ExpertConfig(target=target.name).validate()  # says why there is no trajectory to match

    def prepare_run(self, dataset, methods, config, *, device, progress=None) -> None:
        """Train the experts each method's target needs that are not on disk yet (progress: ``experts TARGET``)."""
        for target in dict.fromkeys(m.target for m in methods):
            hook = None if progress is None else (lambda d, t, _s, name=f"experts {target}": progress(name, d, t))
            train_experts(dataset, ExpertConfig.from_distill(config, target), folder=config.experts_dir,
                          device=device, progress=hook)  # fmt: skip

    def start(self, engine: Engine, run: MTTRun) -> None:
        cfg = engine.config
        if cfg.max_start_epoch - 1 + cfg.expert_epochs > cfg.expert_train_epochs:
            raise FairDistillError(
                f"the latest start epoch + expert_epochs = {cfg.max_start_epoch - 1} + {cfg.expert_epochs} is "
                f"beyond the experts' {cfg.expert_train_epochs} epochs (starts are drawn below max_start_epoch "
                f"= {cfg.max_start_epoch}); lower them or train longer experts"
            )
        experts = ExpertConfig.from_distill(cfg, run.spec.target)
        run.experts = engine.once(
            ("experts", run.spec.target),
            lambda: train_experts(engine.dataset, experts, folder=cfg.experts_dir, device=engine.device),
        )
        student = _student(engine)
        want = [[n, list(s)] for n, s in zip(student.names, student.shapes, strict=True)]
        if run.experts.headers[0]["params"] != want:
            raise FairDistillError(f"the experts in {run.experts.folder} are another architecture than {cfg.model}")
        run.step_size = [run.config.lr_teacher, float("nan")]

    def prepare(self, engine: Engine, it: int) -> Draw:
        cfg, n = engine.config, len(engine.syn_labels)
        expert = int(torch.randint(cfg.num_experts, (1,), generator=engine.generator("expert", it)))
        start = int(torch.randint(cfg.max_start_epoch, (1,), generator=engine.generator("start", it)))
        size = cfg.batch_syn or n
        gen = engine.generator("batch", it)
        order: list[Tensor] = []
        while len(order) < cfg.syn_steps:  # MTT: consecutive chunks of shuffles of the synthetic set
            order += list(torch.randperm(n, generator=gen).split(size))
        batches = order[: cfg.syn_steps]
        params = [
            engine.dsa.sample(len(b), generator=engine.generator("dsa-step", it, s), device=engine.device)
            if engine.dsa is not None
            else None
            for s, b in enumerate(batches)
        ]
        return Draw(expert, start, [b.to(engine.device) for b in batches], params)

    def match(self, engine: Engine, run: MTTRun, draw: Draw, it: int, step: int) -> Tensor:
        cfg, device = engine.config, engine.device
        student = _student(engine)
        start = run.experts.params(draw.expert, draw.start, device)
        target = run.experts.params(draw.expert, draw.start + cfg.expert_epochs, device)
        alpha = torch.tensor(run.step_size[0], device=device, requires_grad=True)
        batches = [
            (_augment(engine.dsa, run.images, b, p), engine.syn_labels[b])
            for b, p in zip(draw.batches, draw.params, strict=True)
        ]
        unroll = checkpointed_unroll if cfg.unroll_checkpoint else plain_unroll
        loss = unroll(student, start, target, batches, alpha, [run.images, alpha])
        where = f"{run.spec.name}: at iteration {it}"
        if not torch.isfinite(loss):
            raise FairDistillError(f"{where} the trajectory loss became non-finite; lower lr_img or lr_lr")
        run.step_size = _step(run.step_size, alpha.grad, run.config.lr_lr)
        if not all(map(_finite, run.step_size)):
            raise FairDistillError(f"{where} the learnable step size became non-finite; lower lr_lr")
        return loss

    def meta(self, engine: Engine, run: MTTRun) -> dict:
        cfg = engine.config
        return {
            "final_loss": run.last_loss,
            "step_size": run.step_size[0],
            "experts": str(run.experts.folder),
            "num_experts": cfg.num_experts,
            "syn_steps": cfg.syn_steps,
            "expert_epochs": cfg.expert_epochs,
            "max_start_epoch": cfg.max_start_epoch,
        }


def _student(engine: Engine) -> Student:
    """The run's student network (its architecture; the weights come from the experts)."""
    net = lambda: make_network(engine.dataset, engine.config, "mtt-net", 0, device=engine.device)  # noqa: E731
    return engine.once("student", lambda: Student(net()))


def _augment(dsa: DSA | None, images: Tensor, idx: Tensor, params: DSAParams | None) -> Callable[[], Tensor]:
    """The student's batch ``idx`` of ``images``, each image with its own DSA transform (a function:
    the checkpointed unroll builds it again in the backward pass)."""

    def build() -> Tensor:
        x = images[idx]
        if dsa is None or params is None:
            return x
        return dsa.apply(x, params, torch.arange(len(idx), device=x.device))

    return build


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _step(state: list[float], grad: Tensor | None, lr: float) -> list[float]:
    """One SGD step with momentum (MTT's optimiser of the step size) on (value, buffer)."""
    value = torch.tensor(state[0])
    g = grad.detach().cpu() if grad is not None else torch.zeros(())
    buf = g.clone() if state[1] != state[1] else torch.tensor(state[1]) * STEP_SIZE_MOMENTUM + g
    return [float(value - lr * buf), float(buf)]
