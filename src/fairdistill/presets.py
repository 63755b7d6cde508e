"""Named presets: a method recipe (what is distilled) x a compute profile (how much, and how), per backbone.

A **recipe** is a point of the backbone x target x distance x embedder design (:class:`MethodSpec`);
a **profile** (:mod:`fairdistill.profiles`) gives the distillation and evaluation settings per
backbone, every one with its source, and may change a recipe's knobs. Profiles:

* ``cobra-paper``: each method as COBRA's scripts ran it (DM, DC, IDC, CAFE; vanilla, fairdd, cobra);
* ``fairdd-paper``: as FairDD's scripts ran it (DM, DC; vanilla, fairdd; cobra on FairDD's schedule,
  its knobs labelled ours);
* ``gpu`` (our recommended GPU recipe) and ``cpu`` (the default ``compare`` in minutes on two cores):
  ours, with our improvements (group-stratified real batches, DSA on gradient matching, digits never
  flipped, the CAFE inner-loop early stop), each named as ours in its source.

``fairdistill presets`` lists them; ``fairdistill presets show RECIPE --preset PROFILE --backbone B``
prints every resolved setting with its source (:func:`describe_preset`).

Recipes of the DM backbone (the knobs are independent, so each effect can be measured alone):

=================== ============== ======== ======== ==================================================
recipe              target         distance embedder note
=================== ============== ======== ======== ==================================================
vanilla             population     l2sq     random   DM's loss
fairdd              group-sync     l2sq     random   FairDD-DM's loss (a sum over the present groups)
cobra               barycenter     l1       warm     COBRA-DM's combination (L1, warm-started embedder)
barycenter-l2sq     barycenter     l2sq     random   the target change alone (same gradient as fairdd / |A|)
barycenter-l1       barycenter     l1       random   target + distance, no warm start
uniform-sampling    uniform-samp.  l2sq     random   re-balanced real batches, population target
cobra-bary-*        bary-l1 ...    l1       warm     COBRA with a generalised barycenter (l1, l2, linf,
                                                     cosine, huber; w2 needs POT and uses a Sinkhorn loss)
fair                barycenter     l2sq     random   ours: from the random-balanced subset, Adam steps on
                                                     the images (every backbone has a ``fair``)
=================== ============== ======== ======== ==================================================

Under our profiles (``cpu``, ``gpu``) every recipe with a group target (FairDD, the barycenters,
uniform sampling) starts from the group-balanced real subset (``init="balanced"``, the images the
``random-balanced`` baseline picks with the same seed); the paper profiles keep the papers' real
initialisation. ``fair`` also moves its images by Adam steps, so that its step does not depend on
the loss's scale (FairDD's sum over |A| groups moves SGD |A| times further than one barycenter term).

DC (gradient matching; the network trains on the synthetic set in between): ``vanilla``
(population), ``fairdd`` (group-sync: one distance per group, summed), ``cobra`` (barycenter of the
group gradients in one backward pass), ``barycenter-l2sq``, ``uniform-sampling``; per-unit cosine
(``layer-cosine``, both papers' ``ours``) unless named. COBRA's own FairDD baseline on DC and IDC
averages over the groups (``group-sync-mean``): ``cobra-paper`` uses it.

CAFE (layer-wise feature alignment plus the discrimination term): ``vanilla``, ``fairdd``, ``cobra``,
``uniform-sampling``, with CAFE's layer weights; under ``cobra-paper`` the cobra recipe gets COBRA's
own CAFE loss (layer weights 1, 1, 0.1 and 1.1 on the embedding, no discrimination term, divided by
the classes) through the method's own ``settings``.

IDC (DC with multi-formation): ``vanilla``, ``fairdd``, ``cobra``, ``uniform-sampling`` on IDC's
schedule (a fresh network trained on real data between updates, squared L2 of gradients), and
``fixed-vanilla``, ``fixed-fairdd``, ``fixed-cobra`` on the network schedule of COBRA's IDC script (a
random network never trained, per-unit cosine). ``cobra-paper`` runs COBRA's IDC script exactly:
its vanilla / fairdd / cobra take the fixed network, per-unit cosine, COBRA's FairDD mean, one real
image per stored image, ``align_corners=True`` and no pixel clamping.

A preset name is ``RECIPE`` or ``RECIPE-PROFILE`` for DM and ``BACKBONE-RECIPE[-PROFILE]`` for
the other backbones (``dc-cobra``, ``dc-fairdd-gpu``, ``cobra-cobra-paper``); without a profile it is
chosen by the device (``gpu`` with CUDA, else ``cpu``). Functions taking ``backbone=`` accept the
bare recipe name too. Every run records the preset and the resolved settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from .backbones import resolve_method
from .config import DistillConfig, EvalConfig, MethodSpec
from .errors import FairDistillError, unknown_name
from .profiles import PROFILES, Profile, idc_lr_img
from .registry import Registry

__all__ = [
    "BACKBONE_RECIPES",
    "PROFILES",
    "Preset",
    "Profile",
    "default_profile",
    "describe_preset",
    "get_method",
    "idc_lr_img",
    "list_presets",
    "preset_name",
    "profile_configs",
    "recipes_for",
    "resolve_preset",
    "split_preset",
]

RECIPES: Registry[MethodSpec] = Registry("method")
RECIPES.add(
    "vanilla",
    MethodSpec("vanilla", target="population", distance="l2sq", embedder="random"),
    "population target, squared L2, random networks (DM's loss)",
)
RECIPES.add(
    "fairdd",
    MethodSpec("fairdd", target="group-sync", distance="l2sq", embedder="random"),
    "group-sync target, squared L2, random networks (FairDD-DM's loss)",
)
RECIPES.add(
    "cobra",
    MethodSpec("cobra", target="barycenter", distance="l1", embedder="warm"),
    "barycenter target, L1, warm-started networks (COBRA-DM's combination)",
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

for _disc, _what in [
    ("l1", "L1 barycenter (coordinate-wise median)"),
    ("l2", "L2 barycenter (geometric median)"),
    ("linf", "L-infinity barycenter"),
    ("cosine", "cosine barycenter (mean unit direction)"),
    ("huber", "coordinate-wise Huber barycenter"),
]:
    RECIPES.add(
        f"cobra-bary-{_disc}",
        MethodSpec(f"cobra-bary-{_disc}", target=f"bary-{_disc}", distance="l1", embedder="warm"),
        f"COBRA (L1, warm-started networks) with the {_what} of the group statistics",
    )
del _disc, _what
RECIPES.add(
    "cobra-bary-w2",
    # the Sinkhorn loss replaces the distance; l2sq is only what gets recorded
    MethodSpec("cobra-bary-w2", target="bary-w2", distance="l2sq", embedder="warm"),
    "COBRA (warm-started networks) matching the W2 barycenter of the group feature clouds (Sinkhorn; needs POT)",
)


DC_RECIPES: Registry[MethodSpec] = Registry("dc method")
DC_RECIPES.add(
    "vanilla",
    MethodSpec("vanilla", backbone="dc", target="population", distance="layer-cosine"),
    "population target, per-unit cosine of gradients (DC's loss)",
)
DC_RECIPES.add(
    "fairdd",
    MethodSpec("fairdd", backbone="dc", target="group-sync", distance="layer-cosine"),
    "group-sync target: one gradient distance per group, summed (FairDD-DC)",
)
DC_RECIPES.add(
    "cobra",
    MethodSpec("cobra", backbone="dc", target="barycenter", distance="layer-cosine"),
    "barycenter of the group gradients in one backward pass (COBRA-DC)",
)
DC_RECIPES.add(
    "barycenter-l2sq",
    MethodSpec("barycenter-l2sq", backbone="dc", target="barycenter", distance="l2sq"),
    "barycenter target with squared L2 between gradients",
)
DC_RECIPES.add(
    "uniform-sampling",
    MethodSpec("uniform-sampling", backbone="dc", target="uniform-sampling", distance="layer-cosine"),
    "population target on group-balanced real batches (re-balancing baseline)",
)

CAFE_RECIPES: Registry[MethodSpec] = Registry("cafe method")
CAFE_RECIPES.add(
    "vanilla",
    MethodSpec("vanilla", backbone="cafe", target="population", distance="l2sq"),
    "population target, squared L2 per layer, discrimination term (CAFE's loss, CAFE's layer weights)",
)
CAFE_RECIPES.add(
    "fairdd",
    MethodSpec("fairdd", backbone="cafe", target="group-sync", distance="l2sq"),
    "group-sync target: one squared L2 per group per layer, summed (FairDD-CAFE)",
)
CAFE_RECIPES.add(
    "cobra",
    MethodSpec("cobra", backbone="cafe", target="barycenter", distance="l2sq"),
    "barycenter of the group means of every layer, squared L2 (COBRA's target; COBRA's CAFE loss: cobra-paper)",
)
CAFE_RECIPES.add(
    "uniform-sampling",
    MethodSpec("uniform-sampling", backbone="cafe", target="uniform-sampling", distance="l2sq"),
    "population target on group-balanced real batches (re-balancing baseline)",
)

IDC_RECIPES: Registry[MethodSpec] = Registry("idc method")
IDC_RECIPES.add(
    "vanilla",
    MethodSpec("vanilla", backbone="idc", target="population", distance="l2sq", embedder="random"),
    "population target, squared L2 of gradients, network trained on real data (IDC's schedule)",
)
IDC_RECIPES.add(
    "fairdd",
    MethodSpec("fairdd", backbone="idc", target="group-sync", distance="l2sq", embedder="random"),
    "group-sync target on IDC's schedule (FairDD-IDC)",
)
IDC_RECIPES.add(
    "cobra",
    MethodSpec("cobra", backbone="idc", target="barycenter", distance="l2sq", embedder="random"),
    "barycenter of the group gradients on IDC's schedule (COBRA-IDC)",
)
IDC_RECIPES.add(
    "uniform-sampling",
    MethodSpec("uniform-sampling", backbone="idc", target="uniform-sampling", distance="l2sq", embedder="random"),
    "population target on group-balanced real batches, IDC's schedule (re-balancing baseline)",
)
IDC_RECIPES.add(
    "fixed-vanilla",
    MethodSpec("fixed-vanilla", backbone="idc", target="population", distance="layer-cosine", embedder="fixed"),
    "population target, per-unit cosine, fixed random network (the network schedule of COBRA's IDC script)",
)
IDC_RECIPES.add(
    "fixed-fairdd",
    MethodSpec("fixed-fairdd", backbone="idc", target="group-sync", distance="layer-cosine", embedder="fixed"),
    "group-sync target, per-unit cosine, fixed random network (COBRA's IDC network schedule)",
)
IDC_RECIPES.add(
    "fixed-cobra",
    MethodSpec("fixed-cobra", backbone="idc", target="barycenter", distance="layer-cosine", embedder="fixed"),
    "barycenter target, per-unit cosine, fixed random network (COBRA's IDC network schedule)",
)

# ---- fair: our recipe per backbone (RESULTS section 13: what the sweeps and the earn-its-keep table support) --
#: the images of our fair recipe start as the random-balanced subset of the seed and move by Adam
#: steps of a fixed size per pixel, so the recipe only adds to the balanced subset
FAIR_SETTINGS: dict[str, dict[str, Any]] = {
    "dm": {"init": "balanced", "img_optimizer": "adam", "lr_img": 0.03},
    "dc": {"init": "balanced", "img_optimizer": "adam", "lr_img": 0.01},
    "idc": {"init": "balanced", "img_optimizer": "adam", "lr_img": 0.01},
    "cafe": {"init": "balanced", "img_optimizer": "adam", "lr_img": 0.03},
}
_FAIR_WHAT = "fairdistill's fair recipe: {what}, from the random-balanced subset, Adam steps on the images"
RECIPES.add(
    "fair",
    MethodSpec("fair", target="barycenter", distance="l2sq", embedder="random", settings=FAIR_SETTINGS["dm"]),
    _FAIR_WHAT.format(what="barycenter target, squared L2, random networks, stratified batches"),
)
DC_RECIPES.add(
    "fair",
    MethodSpec("fair", backbone="dc", target="barycenter", distance="layer-cosine", settings=FAIR_SETTINGS["dc"]),
    _FAIR_WHAT.format(what="barycenter of the group gradients, per-unit cosine, stratified batches"),
)
IDC_RECIPES.add(
    "fair",
    MethodSpec(
        "fair", backbone="idc", target="barycenter", distance="l2sq", embedder="random", settings=FAIR_SETTINGS["idc"]
    ),
    _FAIR_WHAT.format(what="barycenter of the group gradients on IDC's schedule, stratified batches"),
)
CAFE_RECIPES.add(
    "fair",
    MethodSpec("fair", backbone="cafe", target="barycenter", distance="l2sq", settings=FAIR_SETTINGS["cafe"]),
    _FAIR_WHAT.format(what="barycenter of the group means of every layer, stratified batches"),
)

MTT_RECIPES: Registry[MethodSpec] = Registry("mtt method")
MTT_RECIPES.add(
    "vanilla",
    MethodSpec("vanilla", backbone="mtt", target="population", distance="l2sq"),
    "trajectory matching of experts trained on the data as it comes (MTT)",
)
MTT_RECIPES.add(
    "cobra",
    MethodSpec("cobra", backbone="mtt", target="barycenter", distance="l2sq"),
    "trajectory matching of barycentric experts: every step follows the mean of the group gradients (COBRA-MTT)",
)
MTT_RECIPES.add(
    "uniform-sampling",
    MethodSpec("uniform-sampling", backbone="mtt", target="uniform-sampling", distance="l2sq"),
    "trajectory matching of experts trained on group-balanced batches (re-balancing baseline)",
)

DEFAULT_BACKBONE = "dm"
#: what ``compare`` distils unless told otherwise (each backbone's forms of those it has: MTT has no
#: FairDD, whose summed group gradients are the barycentric trajectory at |A| times the rate)
DEFAULT_COMPARE_METHODS: tuple[str, ...] = ("vanilla", "fairdd", "cobra", "fair")
#: each backbone's recipes; a recipe name means the same idea on every backbone that has it
BACKBONE_RECIPES: dict[str, Registry[MethodSpec]] = {
    "dm": RECIPES,
    "dc": DC_RECIPES,
    "idc": IDC_RECIPES,
    "cafe": CAFE_RECIPES,
    "mtt": MTT_RECIPES,
}


def recipes_for(backbone: str = DEFAULT_BACKBONE) -> Registry[MethodSpec]:
    """The method recipes of ``backbone``."""
    try:
        return BACKBONE_RECIPES[backbone]
    except KeyError:
        raise unknown_name("backbone with recipes", backbone, BACKBONE_RECIPES) from None


def default_profile(device: torch.device | None = None) -> str:
    """The profile a run without one gets: ``gpu`` with CUDA, else ``cpu`` (both ours)."""
    if device is not None:
        return "gpu" if device.type == "cuda" else "cpu"
    return "gpu" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Preset:
    """A resolved preset: recipe, profile and the configs they give at an IPC (``method.backbone`` says which)."""

    name: str
    method: MethodSpec
    profile: str
    distill: DistillConfig
    evaluation: EvalConfig


def preset_name(backbone: str, recipe: str, profile: str | None = None) -> str:
    """The canonical name: ``cobra-gpu`` for DM, ``dc-cobra-gpu`` for other backbones."""
    name = recipe if backbone == DEFAULT_BACKBONE else f"{backbone}-{recipe}"
    return name if profile is None else f"{name}-{profile}"


def list_presets(backbone: str | None = None) -> list[str]:
    """Canonical preset names (of one backbone, or of all)."""
    backbones = list(BACKBONE_RECIPES) if backbone is None else [backbone]
    out = []
    for b in backbones:
        for r in recipes_for(b).list():
            out.append(preset_name(b, r))
            for p in PROFILES.list():
                prof = PROFILES.get(p)
                if b in prof.backbones and (prof.of(b).recipes is None or r in prof.of(b).recipes):
                    out.append(preset_name(b, r, p))
    return out


def _find_recipe(text: str, backbone: str | None) -> tuple[str, str] | None:
    """(backbone, recipe) named by ``text``: ``BACKBONE-RECIPE``, or a bare recipe of ``backbone`` (default dm)."""
    for b, registry in BACKBONE_RECIPES.items():
        prefix = f"{b}-"
        if text.startswith(prefix) and text[len(prefix) :] in registry:
            if backbone is not None and backbone != b:
                raise FairDistillError(
                    f"preset {text!r} is for backbone {b!r}, but backbone {backbone!r} was asked for"
                )
            return b, text[len(prefix) :]
    b = backbone or DEFAULT_BACKBONE
    return (b, text) if text in recipes_for(b) else None


def split_preset(name: str, device: torch.device | None = None, backbone: str | None = None) -> tuple[str, str, str]:
    """``"cobra-gpu"`` -> ("dm", "cobra", "gpu"); ``"dc-cobra"`` -> ("dc", "cobra", profile for the device).

    ``backbone`` picks the backbone of a bare recipe name (``"cobra"`` with ``backbone="dc"``).
    """
    for prof in PROFILES.list():
        if name.endswith(f"-{prof}"):
            found = _find_recipe(name[: -len(prof) - 1], backbone)
            if found is not None:
                return (*found, prof)
    found = _find_recipe(name, backbone)
    if found is None:
        raise unknown_name("preset", name, list_presets(backbone))
    return (*found, default_profile(device))


def profile_configs(
    profile: str, ipc: int = 10, seed: int = 0, backbone: str = DEFAULT_BACKBONE, dataset: str | None = None
) -> tuple[DistillConfig, EvalConfig]:
    """The distillation and evaluation configs of a profile for ``backbone`` at ``ipc`` with ``seed``.

    ``dataset``: the dataset's key, for the few settings that depend on it (COBRA's IDC factor).
    """
    if ipc < 1:
        raise FairDistillError(f"ipc must be >= 1, got {ipc}")
    distill, evaluation = PROFILES.get(profile).configs(ipc, backbone, dataset)
    return replace(distill, seed=seed), replace(evaluation, seed=seed)


def resolve_preset(
    name: str,
    *,
    ipc: int = 10,
    seed: int = 0,
    device: torch.device | None = None,
    backbone: str | None = None,
    dataset: str | None = None,
) -> Preset:
    backbone, recipe, profile = split_preset(name, device, backbone)
    distill, evaluation = profile_configs(profile, ipc, seed, backbone, dataset)
    method = get_method(recipe, backbone, profile, ipc)
    return Preset(preset_name(backbone, recipe, profile), method, profile, distill, evaluation)


def get_method(name: str, backbone: str = DEFAULT_BACKBONE, profile: str | None = None, ipc: int = 10) -> MethodSpec:
    """The method recipe registered as ``name`` for ``backbone``, with its distance resolved.

    ``profile``: with that profile's knobs for the recipe (a paper profile runs each recipe as its
    paper's script did: uniform class batches, COBRA's FairDD mean on DC...).
    """
    spec = recipes_for(backbone).get(name)
    if profile is not None:
        spec = PROFILES.get(profile).method(spec, name, backbone, ipc)
    return resolve_method(spec)


def describe_preset(
    recipe: str,
    profile: str | None = None,
    *,
    backbone: str | None = None,
    ipc: int = 10,
    dataset: str | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Every resolved setting of ``recipe`` under ``profile``, each with its source.

    Returns ``{"preset", "profile", "paper", "backbone", "method": {knob: (value, source)},
    "distill": {...}, "evaluation": {...}}``; a source is a reference script and flag, or
    ``fairdistill: <why>`` for a choice of ours (:mod:`fairdistill.profiles`).
    """
    from .targets import get_target, resolve_sampling

    if ipc < 1:
        raise FairDistillError(f"ipc must be >= 1, got {ipc}")
    if profile is not None:
        PROFILES.get(profile)  # an unknown profile is named as such
    name = recipe if profile is None else f"{recipe}-{profile}"
    b, r, prof = split_preset(name, device, backbone)
    p = PROFILES.get(prof)
    spec = get_method(r, b, prof, ipc)
    knobs = p.of(b).methods.get(r, {})
    base = f"recipe {preset_name(b, r)}: {recipes_for(b).describe(r)}"
    method: dict[str, tuple[Any, str]] = {"backbone": (b, base)}
    for knob in ("target", "distance", "embedder"):
        method[knob] = (getattr(spec, knob), knobs[knob].source if knob in knobs else base)
    sampling = resolve_sampling(get_target(spec.target), spec.sampling)
    if "sampling" in knobs:
        method["sampling"] = (sampling, knobs["sampling"].source)
    elif sampling == "stratified":
        method["sampling"] = (sampling, "fairdistill: group-stratified real batches for group targets (SPEC fact 4)")
    else:
        method["sampling"] = (sampling, "the target's default: a uniform draw within the class")
    if "settings" in knobs:
        settings_source = knobs["settings"].source
    else:
        own = recipes_for(b).get(r).settings
        group = p.group_settings_for(replace(spec, settings=own), b)
        parts = [base] if own else []
        parts += [p.of(b).group_settings[k].source for k in group]
        settings_source = "; ".join(parts) or "none (the run's)"
    method["settings"] = (spec.settings, settings_source)
    table = p.settings(ipc, b, dataset)
    return {
        "preset": preset_name(b, r, prof),
        "profile": prof,
        "paper": p.paper,
        "backbone": b,
        "method": method,
        **table,
    }
