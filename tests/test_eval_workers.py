"""Evaluation models in worker processes (``--eval-workers``): the numbers, order and resume of a sequential run.

The test session runs torch with one thread (conftest), so a sequential run and workers with one
thread each do the same arithmetic: results must be equal, float for float. (With more threads in
the parent than per worker they may differ in the last bits; see :mod:`fairdistill.executor`.)
"""

import json
import os
import sys
import threading
from concurrent.futures import Future
from dataclasses import replace

import numpy as np
import pytest
import torch
from files_npy import write_npy
from typer.testing import CliRunner

import fairdistill.api as fd
import fairdistill.evaluate as evaluation
from fairdistill.cli import app
from fairdistill.config import EvalConfig
from fairdistill.data import load_dataset
from fairdistill.errors import FairDistillError
from fairdistill.evaluate import (
    EvalJob,
    baseline_indices,
    evaluate_images,
    evaluate_sets,
    evaluation_executor,
)
from fairdistill.executor import Executor, LocalExecutor, SequentialExecutor, create_executor, worker_threads

runner = CliRunner()
CFG = EvalConfig(num_models=2, epochs=2, model_kwargs={"width": 8}, eval_models=("convnet", "alexnet"))
CFG = replace(CFG, arch_kwargs={"alexnet": {"width": 8}})


def report_dicts(result):
    """Every model's full report (all floats), per architecture, in order."""
    per_arch = result.by_model or {result.model: result}
    return {a: [(s, r.to_dict()) for s, r in zip(res.seeds, res.reports, strict=True)] for a, res in per_arch.items()}


def same(a, b):
    """Equal, float for float (NaN equals NaN: json keeps the NaN token)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@pytest.fixture(scope="module")
def train_set(digits):
    idx = baseline_indices("random-balanced", digits, 3, seed=0)
    return digits.train.images[idx], digits.train.labels[idx]


@pytest.fixture(scope="module")
def pool(digits):
    with evaluation_executor(digits, 2) as ex:
        yield ex


def _worker_facts(shared, tag):
    return tag, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), os.getpid(), type(shared).__name__


def _fail(shared, message):
    raise RuntimeError(message)


# ---- the executors -------------------------------------------------------------------------------
def test_local_workers_get_their_share_of_threads_and_the_shared_object(pool):
    assert isinstance(pool, LocalExecutor) and pool.workers == 2
    facts = list(pool.map(_worker_facts, [("a",), ("b",), ("c",)]))
    assert [f[0] for f in facts] == ["a", "b", "c"]  # map keeps the order of the tasks
    assert all(f[1:3] == (pool.threads, str(pool.threads)) for f in facts)
    assert all(f[3] != os.getpid() and f[4] == "TestSet" for f in facts)
    assert worker_threads(2, total=2) == 1 and worker_threads(3, total=8) == 2 and worker_threads(4, total=2) == 1


def test_a_failing_task_surfaces_in_the_parent(pool):
    with pytest.raises(RuntimeError, match="boom"):
        pool.submit(_fail, "boom").result(timeout=60)
    with SequentialExecutor(shared=7) as seq:
        assert seq.submit(lambda shared, x: shared + x, 1).result() == 8
        with pytest.raises(RuntimeError, match="here"):
            seq.submit(_fail, "here").result()


def test_a_failing_evaluation_model_names_itself(digits, cpu, train_set, pool):
    bad = replace(CFG, eval_models=(), model_kwargs={"width": 8, "no_such_knob": 1})
    with pytest.raises(FairDistillError, match="evaluation model . of convnet failed in a worker: TypeError"):
        evaluate_images(*train_set, digits, bad, device=cpu, executor=pool)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_counts_are_refused(digits, workers):
    with pytest.raises(FairDistillError, match="eval_workers must be an integer >= 1"):
        evaluation_executor(digits, workers)
    with pytest.raises(FairDistillError, match="eval_workers must be an integer >= 1"):
        create_executor("local", workers)


def test_unknown_executor_lists_the_known_ones(digits):
    with pytest.raises(FairDistillError, match="unknown executor 'dask'; allowed: local, ray, sequential"):
        evaluation_executor(digits, 2, "dask")


def test_ray_missing_is_a_clear_error(digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed, whether it is or not
    with pytest.raises(FairDistillError, match=r"ray executor needs the ray package \(pip install"):
        evaluation_executor(digits, 2, "ray")
    with pytest.raises(FairDistillError, match="ray executor needs the ray package"):
        fd.evaluate("nowhere.safetensors", eval_workers=2, eval_executor="ray")  # before anything is loaded


def test_ray_workers_give_the_sequential_numbers(digits, cpu, train_set):
    """Where ray is installed (``.[ray]``; not in CI): a local Ray instance, started and stopped by the executor."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is already open in this process")
    one = replace(CFG, eval_models=())
    seq = evaluate_images(*train_set, digits, one, device=cpu)
    with evaluation_executor(digits, 2, "ray") as ex:
        assert ray.is_initialized() and ex.threads == 1 == torch.get_num_threads()
        par = evaluate_images(*train_set, digits, one, device=cpu, executor=ex)
        bad = replace(one, model_kwargs={"width": 8, "no_such_knob": 1})
        with pytest.raises(FairDistillError, match="evaluation model . of convnet failed in a worker: .*no_such_knob"):
            evaluate_images(*train_set, digits, bad, device=cpu, executor=ex)
    assert same(report_dicts(seq), report_dicts(par)) and len(par.reports) == 2
    assert not ray.is_initialized()  # the local instance it started is gone


def test_workers_evaluate_on_a_streamed_test_split(tmp_path, cpu):
    """A streamed npy test split (one channel: its decoder is a local function) is decoded once, in the parent."""
    root = tmp_path / "npy"
    arrays = write_npy(root)
    for split in ("train", "test"):
        np.save(root / f"{split}_images.npy", arrays[f"{split}_images"][..., 0])
    (root / "meta.json").write_text(json.dumps({"mean": [0.5], "std": [0.25]}))
    data = load_dataset("npy", data_root=root)
    assert data.test.streamed
    test = evaluation.TestSet.of(data)  # (not imported by name: pytest would take it for a test class)
    assert isinstance(test.images, torch.Tensor) and torch.equal(test.images, data.test.images.materialise())
    x, y = data.train.take(torch.arange(8)), data.train.labels[:8]
    one = replace(CFG, eval_models=())
    seq = evaluate_images(x, y, data, one, device=cpu)
    with evaluation_executor(data, 2) as ex:
        par = evaluate_images(x, y, data, one, device=cpu, executor=ex)
    assert same(report_dicts(seq), report_dicts(par)) and len(par.reports) == 2


def test_one_local_worker_is_the_sequential_path(digits):
    assert evaluation_executor(digits, 1) is None


# ---- evaluation: same numbers, same order ------------------------------------------------------------
def test_workers_give_the_sequential_numbers_in_order(digits, cpu, train_set, pool):
    assert torch.get_num_threads() == 1 == pool.threads  # the same arithmetic in the parent and the workers
    told, calls = [], []
    seq = evaluate_images(*train_set, digits, CFG, device=cpu)
    par = evaluate_images(
        *train_set,
        digits,
        CFG,
        device=cpu,
        executor=pool,
        on_model=lambda j, s, r: told.append(j),
        callback=lambda d, t: calls.append((d, t)),
    )
    assert sorted(told) == [0, 1, 2, 3] and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert list(par.by_model) == ["convnet", "alexnet"] and par.model == "convnet"
    assert par.seeds == seq.seeds
    assert same(report_dicts(par), report_dicts(seq))
    for a in ("convnet", "alexnet"):
        for rp, rs in zip(par.by_model[a].reports, seq.by_model[a].reports, strict=True):
            assert rp.acc == rs.acc and rp.deo_a == rs.deo_a and (rp.tpr == rs.tpr)[rs.tpr == rs.tpr].all()


class ReversedExecutor(Executor):
    """In this process, but the results of ``expect`` tasks arrive in the reverse order of submission."""

    kind = "reversed"

    def __init__(self, shared, expect):
        super().__init__(1, shared=shared, threads=1)
        self.expect, self.ready = expect, []

    def submit(self, fn, *args):
        future = Future()
        self.ready.append((future, fn(self.shared, *args)))
        if len(self.ready) == self.expect:  # all submitted: hand the results back, last first
            threading.Thread(target=self._release).start()
        return future

    def _release(self):
        for future, value in reversed(self.ready):
            future.set_result(value)
            threading.Event().wait(0.02)

    def shutdown(self, *, cancel=False):
        pass


def test_results_arriving_out_of_order_are_recorded_in_place(digits, cpu, train_set, tmp_path):
    from fairdistill.checkpoint import EvalSweep
    from fairdistill.evaluate import TestSet

    other = (digits.train.images[:30], digits.train.labels[:30])
    seq = [evaluate_images(x, y, digits, CFG, device=cpu) for x, y in (train_set, other)]
    ex = ReversedExecutor(TestSet.of(digits), expect=7)
    sweep = EvalSweep(tmp_path / "eval-a.json", {"set": "a"})
    told: list[tuple[str, int]] = []
    done = {1: seq[1].by_model["convnet"].reports[1]}  # set b's model 1 was finished before an interruption
    jobs = [
        EvalJob(*train_set, "a", on_model=lambda j, s, r: (told.append(("a", j)), sweep.add(j, s, r))),
        EvalJob(*other, "b", done=done, on_model=lambda j, s, r: told.append(("b", j))),
    ]
    par = evaluate_sets(jobs, digits, CFG, device=cpu, executor=ex)
    assert told == [("b", 3), ("b", 2), ("b", 0), ("a", 3), ("a", 2), ("a", 1), ("a", 0)]
    for p, s in zip(par, seq, strict=True):
        assert p.seeds == s.seeds and same(report_dicts(p), report_dicts(s))
    rows = json.loads(sweep.path.read_text())["models"]
    assert list(rows) == ["0", "1", "2", "3"]  # kept sorted by model index, whatever order they came in
    assert rows["2"]["report"]["acc"] == seq[0].by_model["alexnet"].reports[0].acc


# ---- the API and the CLI ------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def stop_at(prefix, n):
    def hook(phase, done, total):
        if phase.startswith(prefix) and done >= n:
            raise Interrupt(phase)

    return hook


def test_compare_with_workers_fans_out_resumes_and_matches_sequential(tmp_path):
    kw = dict(
        methods=["vanilla"],
        baselines=["random", "full"],
        ipc=2,
        iterations=2,
        num_models=2,
        epochs=2,
        device="cpu",
        batch_real=16,
        model_kwargs={"width": 8},
        report=False,
    )
    straight = fd.compare("digits-fg", out=tmp_path / "seq", **kw)
    cut = tmp_path / "cut"
    kw["checkpoint_every"] = 2
    with pytest.raises(Interrupt):  # one model of "random" has finished
        fd.compare("digits-fg", out=cut, eval_workers=2, progress=stop_at("evaluate random", 1), **kw)
    partial = json.loads((tmp_path / "cut" / "checkpoint" / "eval-random.json").read_text())
    assert len(partial["models"]) >= 1
    resumed = fd.compare("digits-fg", out=cut, eval_workers=2, resume=True, **kw)
    assert resumed.summary["resumed_models"]["random"] == sorted(int(j) for j in partial["models"])
    assert resumed.summary["eval_workers"] == {"workers": 2, "executor": "local", "threads_per_worker": 1}
    assert "eval_workers" not in straight.summary and "evaluate (wall)" in resumed.summary["timings"]
    a = json.loads((tmp_path / "seq" / "summary.json").read_text())
    b = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert [(r["set"], r["index"]) for r in b["rows"]] == [
        (s, i) for s in ("vanilla", "random", "full") for i in (0, 1)
    ]
    volatile = {"seconds", "timings", "environment", "resumed_models", "eval_workers", "checkpoint"}
    volatile |= {"resumed_from_iteration"}  # and the config (hash) is the same: the workers are not in it
    assert {k: v for k, v in a.items() if k not in volatile} == {k: v for k, v in b.items() if k not in volatile}
    assert not list((tmp_path / "cut").rglob("*.tmp"))


def test_cli_eval_workers(tmp_path):
    fd.distill("digits-fg", preset="vanilla", iterations=1, ipc=2, device="cpu", batch_real=16, out=tmp_path / "s")
    base = ["evaluate", str(tmp_path / "s"), "--device", "cpu", "--models", "2", "--epochs", "1", "--quiet"]
    for bad in ("0", "-1"):
        res = runner.invoke(app, [*base, "--eval-workers", bad])
        assert res.exit_code == 2 and "eval_workers must lie in [1, 1024]" in res.output
    res = runner.invoke(app, [*base, "--eval-workers", "2", "--eval-executor", "dask"])
    assert res.exit_code == 2 and "unknown executor 'dask'" in res.output
    res = runner.invoke(app, [*base, "--eval-workers", "2", "--out", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    one = fd.evaluate(tmp_path / "s", device="cpu", num_models=2, epochs=1)
    rec = json.loads((tmp_path / "e.json").read_text())
    assert [r["acc"] for r in rec["rows"]] == [r.acc for r in one.reports]
    assert rec["eval_workers"]["workers"] == 2
