"""The steps of distill / evaluate / compare, each called alone: plans resolved without any work,
refusals at plan time, the data, distillation, evaluation and write steps on a plan."""

import json
from dataclasses import FrozenInstanceError, replace

import pytest
import torch

import fairdistill.api as fd
from fairdistill.backbones import check_method
from fairdistill.errors import FairDistillError
from fairdistill.plan import ComparePlan, arguments, compare_plan, distill_plan, eval_settings, evaluate_plan
from fairdistill.presets import get_method, profile_configs, resolve_preset
from fairdistill.profiles import cpu_scale

TINY = dict(ipc=1, device="cpu", preset="cpu", batch_real=16, model_kwargs={"width": 8})


@pytest.fixture
def no_loading(monkeypatch):
    """A plan is made from the arguments alone: any loading fails the test."""

    def tripwire(*args, **kwargs):
        raise AssertionError("a dataset or a set was loaded while making a plan")

    monkeypatch.setattr(fd, "_dataset", tripwire)
    monkeypatch.setattr(fd, "find_set", tripwire)  # how evaluate reads a set, in any layout


def _compare_plan(*args, **kwargs) -> ComparePlan:
    return compare_plan(arguments(fd.compare, *args, **kwargs))


def test_compare_plan_resolves_specs_configs_and_profile(no_loading):
    plan = _compare_plan(
        "digits-fg", methods=("vanilla", "cobra"), baselines=("random",), iterations=3, lr_img=0.5, **TINY
    )
    assert plan.profile == "cpu" and plan.backbone == "dm" and plan.data.key == "digits-fg"
    assert [s.name for s in plan.specs] == ["vanilla", "cobra"]
    assert plan.specs[1] == check_method(get_method("cobra", "dm", "cpu", 1))
    dcfg, ecfg = profile_configs("cpu", 1, 0, "dm", "digits-fg")
    assert (plan.distill_config.iterations, plan.distill_config.lr_img) == (3, 0.5)
    assert plan.distill_config.batch_real == 16 and plan.distill_config.ipc == dcfg.ipc
    assert plan.eval_config == ecfg
    assert plan.baselines == ("random",) and plan.out is None and plan.device == torch.device("cpu")
    assert plan.scale is None and plan.reductions == ()
    with pytest.raises(FrozenInstanceError):
        plan.ipc = 2  # a plan is fixed once resolved


def test_compare_plan_scale_and_eval_overrides(no_loading, tmp_path):
    plan = _compare_plan(
        "digits-fg", methods=(), scale="cpu", num_models=2, epochs=3, eval_models=["convnet"], out=tmp_path, **TINY
    )
    dcfg, ecfg = profile_configs("cpu", 1, 0, "dm", "digits-fg")
    _, _, cuts = cpu_scale(dcfg, ecfg, "dm")
    assert plan.reductions == tuple(cuts)
    assert (plan.eval_config.num_models, plan.eval_config.epochs, plan.eval_config.eval_models) == (2, 3, ("convnet",))
    assert plan.specs == () and plan.out == tmp_path


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(methods=("nope",)), "unknown method 'nope'"),
        (dict(baselines=("nope",)), "unknown baseline 'nope'"),
        (dict(methods=("random",), baselines=("random",)), "unknown method 'random'"),
        (dict(methods=("vanilla", "vanilla")), "must be unique"),
        (dict(methods=(), baselines=()), "nothing to run"),
        (dict(scale="tiny"), "unknown scale 'tiny'"),
        (dict(lr_nope=1.0), "unknown setting 'lr_nope'"),
        (dict(resume=True), "need an output folder"),
    ],
)
def test_compare_refusals_come_at_plan_time(no_loading, bad, message):
    with pytest.raises(FairDistillError, match=message):
        _compare_plan("digits-fg", **{**TINY, **bad})


def test_distill_plan_applies_the_knobs(no_loading):
    plan = distill_plan(arguments(fd.distill, "digits-fg", preset="cobra", distance="l1", iterations=5, device="cpu"))
    p = resolve_preset("cobra", ipc=10, seed=0, device=torch.device("cpu"), dataset="digits-fg")
    assert plan.preset == p.name and plan.method.distance == "l1" and plan.method.target == p.method.target
    assert plan.config.iterations == 5 and plan.config.ipc == 10
    with pytest.raises(FairDistillError, match="unknown target 'nope'"):
        distill_plan(arguments(fd.distill, "digits-fg", target="nope", device="cpu"))


def test_evaluate_plan_and_its_settings_for_a_set(no_loading, tmp_path):
    plan = evaluate_plan(
        arguments(fd.evaluate, tmp_path / "set", preset="cobra-cpu", epochs=2, out=tmp_path / "e.json")
    )
    assert plan.out == tmp_path / "e.json" and plan.epochs == 2
    with pytest.raises(FairDistillError, match="need an output folder"):
        evaluate_plan(arguments(fd.evaluate, tmp_path / "set", resume=True))


def test_evaluation_settings_come_from_the_set(digits):
    synset = fd.distill(digits, preset="vanilla-cpu", ipc=2, iterations=0, device="cpu")
    plan = evaluate_plan(arguments(fd.evaluate, synset, preset="vanilla-cpu", epochs=2, device="cpu"))
    profile, ecfg = eval_settings(plan, synset)
    assert profile == "cpu" and ecfg == replace(profile_configs("cpu", 2, 0, "dm")[1], epochs=2)


def test_compare_steps_one_by_one(digits, tmp_path):
    plan = _compare_plan(
        digits, methods=("vanilla",), baselines=("random",), iterations=1, num_models=1, epochs=1, out=tmp_path, **TINY
    )
    timer = fd.PhaseTimer()
    loaded = fd.load_compare_data(plan, timer)
    assert loaded.data is digits and loaded.group_record is None and loaded.seconds is None
    assert "load data" in timer.seconds
    distilled = fd.distill_methods(plan, loaded, None)
    assert list(distilled.synthetic) == ["vanilla"] and distilled.synthetic["vanilla"].images.shape[0] == 10
    assert distilled.synthetic["vanilla"].meta["preset"] == "vanilla-cpu"
    phases = []
    evaluated = fd.evaluate_compared(plan, digits, distilled.synthetic, lambda p, d, t: phases.append((p, d, t)))
    assert list(evaluated.results) == ["vanilla", "random"] and len(evaluated.rows) == 2
    assert phases == [("evaluate vanilla", 1, 1), ("evaluate random", 1, 1)]
    assert evaluated.resumed == {"vanilla": [], "random": []}
    result = fd.compare_result(plan, loaded, distilled, evaluated, timer)
    assert result.summary["methods"]["random"]["kind"] == "baseline"
    assert list(result.summary["seconds"]) == ["distill", "evaluate vanilla", "evaluate random"]
    # the evaluation step alone, its models kept: a second run takes them instead of training again
    again = fd.evaluate_compared(replace(plan, resume=True), digits, distilled.synthetic, None)
    assert again.resumed == {"vanilla": [0], "random": [0]}


def test_load_step_transforms_the_groups_once(digits):
    plan = _compare_plan(digits, methods=(), baselines=("random-balanced",), groups="infer:kmeans:2", **TINY)
    loaded = fd.load_compare_data(plan, fd.PhaseTimer())
    assert loaded.group_record is not None and loaded.seconds is not None
    assert loaded.record["train_counts"] == digits.counts("train").tolist()  # the true groups, before the transform


def _baseline_result(digits, tmp_path):
    plan = _compare_plan(
        digits, methods=(), baselines=("random",), num_models=1, epochs=1, out=tmp_path, report=False, **TINY
    )
    timer = fd.PhaseTimer()
    loaded = fd.load_compare_data(plan, timer)
    distilled = fd.distill_methods(plan, loaded, None)
    evaluated = fd.evaluate_compared(plan, loaded.data, distilled.synthetic, None)
    return plan, fd.compare_result(plan, loaded, distilled, evaluated, timer)


def test_write_step_writes_the_summary_of_a_given_result(digits, tmp_path):
    plan, result = _baseline_result(digits, tmp_path)
    fd.write_compared(plan, result, digits)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["methods"] == json.loads(json.dumps(result.summary["methods"]))
    assert "write" in summary["timings"] and result.report is None  # report=False: no report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "random", "summary.json"]


def test_write_step_is_atomic(digits, tmp_path, monkeypatch):
    plan, result = _baseline_result(digits, tmp_path)
    real = fd.write_json

    def fail_at_summary(path, obj):
        if path.name == "summary.json":
            raise OSError("disk full")
        real(path, obj)

    monkeypatch.setattr(fd, "write_json", fail_at_summary)
    with pytest.raises(OSError, match="disk full"):
        fd.write_compared(plan, result, digits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no record, no summary, no temporary folder
