"""Named presets: a method recipe (what is distilled) x a compute profile (how much).

Method recipes (SPEC section 2; the knobs are independent, so each effect can be measured alone):

=================== ============== ======== ======== ==================================================
recipe              target         distance embedder note
=================== ============== ======== ======== ==================================================
vanilla             population     l2sq     random   DM as published
fairdd              group-sync     l2sq     random   FairDD-DM
cobra               barycenter     l1       warm     COBRA-DM as published (L1, warm-started embedder)
barycenter-l2sq     barycenter     l2sq     random   the target change alone (same gradient as fairdd / |A|)
barycenter-l1       barycenter     l1       random   target + distance, no warm start
uniform-sampling    uniform-samp.  l2sq     random   re-balanced real batches, population target
=================== ============== ======== ======== ==================================================

Profiles: ``gpu`` uses the published DM settings (20,000 iterations, 256 real images per class,
ConvNet-128, evaluation for 1,000 epochs over 5 models); ``cpu`` finishes ``compare`` on the
embedded default in minutes on two cores (ConvNet width 32, 300 iterations, 64 real images per
class, 3 warm-start epochs instead of 10, evaluation for 200 epochs over 2 models). A preset name
is ``RECIPE`` (profile chosen by the device: ``gpu`` with CUDA, else ``cpu``) or ``RECIPE-PROFILE``.
Every run records the preset and the resolved settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .config import DistillConfig, EvalConfig, MethodSpec
from .errors import FairDistillError, unknown_name
from .registry import Registry

RECIPES: Registry[MethodSpec] = Registry("method")
RECIPES.add(
    "vanilla",
    MethodSpec("vanilla", target="population", distance="l2sq", embedder="random"),
    "population target, squared L2, random networks (DM as published)",
)
RECIPES.add(
    "fairdd",
    MethodSpec("fairdd", target="group-sync", distance="l2sq", embedder="random"),
    "group-sync target, squared L2, random networks (FairDD-DM)",
)
RECIPES.add(
    "cobra",
    MethodSpec("cobra", target="barycenter", distance="l1", embedder="warm"),
    "barycenter target, L1, warm-started networks (COBRA-DM as published)",
)
RECIPES.add(
    "barycenter-l2sq",
    MethodSpec("barycenter-l2sq", target="barycenter", distance="l2sq", embedder="random"),
    "barycenter target alone: squared L2, random networks",
)
RECIPES.add(
    "barycenter-l1",
    MethodSpec("barycenter-l1", target="barycenter", distance="l1", embedder="random"),
    "barycenter target with L1, random networks (no warm start)",
)
RECIPES.add(
    "uniform-sampling",
    MethodSpec("uniform-sampling", target="uniform-sampling", distance="l2sq", embedder="random"),
    "population target on group-balanced real batches (re-balancing baseline)",
)


@dataclass(frozen=True)
class Profile:
    """Compute settings: a function of the IPC giving the distillation and evaluation configs."""

    name: str
    description: str
    build: Callable[[int], tuple[DistillConfig, EvalConfig]]


def _gpu(ipc: int) -> tuple[DistillConfig, EvalConfig]:
    net = {"width": 128, "depth": 3, "norm": "instance"}
    distill = DistillConfig(ipc=ipc, iterations=20000, lr_img=1.0, batch_real=256, model_kwargs=net)
    evaluation = EvalConfig(model_kwargs=net, num_models=5, epochs=1000, full_epochs=50)
    return distill, evaluation


def _cpu(ipc: int) -> tuple[DistillConfig, EvalConfig]:
    net = {"width": 32, "depth": 3, "norm": "instance"}
    distill = DistillConfig(ipc=ipc, iterations=300, lr_img=1.0, batch_real=64, model_kwargs=net, warm_epochs=3)
    evaluation = EvalConfig(model_kwargs=net, num_models=2, epochs=200, full_epochs=15)
    return distill, evaluation


PROFILES: Registry[Profile] = Registry("profile")
PROFILES.add(
    "gpu", Profile("gpu", "published DM settings (20k iterations, ConvNet-128, 1000-epoch evaluation x 5)", _gpu)
)
PROFILES.add(
    "cpu", Profile("cpu", "two CPU cores in minutes (ConvNet-32, 300 iterations, 200-epoch evaluation x 2)", _cpu)
)


def default_profile(device: torch.device | None = None) -> str:
    if device is not None:
        return "gpu" if device.type == "cuda" else "cpu"
    return "gpu" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Preset:
    """A resolved preset: recipe, profile and the configs they give at an IPC."""

    name: str
    method: MethodSpec
    profile: str
    distill: DistillConfig
    evaluation: EvalConfig


def list_presets() -> list[str]:
    return [f"{r}{suffix}" for r in RECIPES.list() for suffix in ("", "-cpu", "-gpu")]


def split_preset(name: str, device: torch.device | None = None) -> tuple[str, str]:
    """``"cobra-gpu"`` -> ("cobra", "gpu"); ``"cobra"`` -> ("cobra", profile for the device)."""
    for prof in PROFILES.list():
        if name.endswith(f"-{prof}") and name[: -len(prof) - 1] in RECIPES:
            return name[: -len(prof) - 1], prof
    if name in RECIPES:
        return name, default_profile(device)
    raise unknown_name("preset", name, list_presets())


def profile_configs(profile: str, ipc: int = 10, seed: int = 0) -> tuple[DistillConfig, EvalConfig]:
    """The distillation and evaluation configs of a profile at ``ipc`` with ``seed``."""
    if ipc < 1:
        raise FairDistillError(f"ipc must be >= 1, got {ipc}")
    distill, evaluation = PROFILES.get(profile).build(ipc)
    return replace(distill, seed=seed), replace(evaluation, seed=seed)


def resolve_preset(name: str, *, ipc: int = 10, seed: int = 0, device: torch.device | None = None) -> Preset:
    recipe, profile = split_preset(name, device)
    distill, evaluation = profile_configs(profile, ipc, seed)
    return Preset(f"{recipe}-{profile}", RECIPES.get(recipe), profile, distill, evaluation)


def get_method(name: str) -> MethodSpec:
    """The method recipe registered as ``name``."""
    return RECIPES.get(name)
