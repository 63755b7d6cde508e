"""The CUDA paths: every backbone, evaluation, and the nccl runtime (skipped on machines without a GPU)."""

from __future__ import annotations

import os

import pytest
import torch

import fairdistill.api as fd
from fairdistill import runtime

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SMALL = {
    "dm": dict(warm_epochs=1),
    "dc": dict(outer_loop=1, inner_loop=1),
    "idc": dict(outer_loop=1, inner_loop=1, factor=2),
    "cafe": dict(outer_loop=1, inner_loop=1),
}


@pytest.mark.parametrize("backbone", list(SMALL))
def test_every_backbone_on_cuda_matches_cpu_on_the_first_iteration(backbone, monkeypatch):
    """Same draws on both devices (CPU generators): the first iteration's loss agrees to float rounding.

    (Later iterations drift apart: other kernels round differently, and image steps amplify it.)
    """
    # full float32 on the GPU: TF32 convolutions (cuDNN's default) round features to ~1e-3
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    # the same profile on both devices (a plain "cobra" picks the gpu profile on a GPU: other widths)
    kw = dict(preset="cobra-cpu", backbone=backbone, ipc=2, seed=1, iterations=1, **SMALL[backbone])
    gpu = fd.distill("digits-fg", device="cuda", **kw)
    cpu = fd.distill("digits-fg", device="cpu", **kw)
    assert gpu.images.device.type == "cpu" and gpu.images.shape == cpu.images.shape
    assert torch.isfinite(gpu.images).all()
    loss_gpu, loss_cpu = gpu.meta["final_loss"], cpu.meta["final_loss"]
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-3), (loss_gpu, loss_cpu)


@pytest.mark.parametrize("backbone", list(SMALL))
def test_same_seed_twice_on_cuda_is_bit_identical(backbone):
    kw = dict(preset="cobra", backbone=backbone, ipc=2, seed=4, iterations=3, device="cuda", **SMALL[backbone])
    assert torch.equal(fd.distill("digits-fg", **kw).images, fd.distill("digits-fg", **kw).images)


def test_evaluation_on_cuda():
    synset = fd.distill("digits-fg", preset="cobra", ipc=2, iterations=2, warm_epochs=1, device="cuda")
    on_gpu = fd.evaluate(synset, num_models=1, epochs=5, device="cuda").aggregate()
    on_cpu = fd.evaluate(synset, num_models=1, epochs=5, device="cpu").aggregate()
    assert 0 < on_gpu["acc"]["mean"] <= 100
    assert abs(on_gpu["acc"]["mean"] - on_cpu["acc"]["mean"]) < 10  # same seeds, other kernels


def test_nccl_runtime_collectives(monkeypatch):
    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29547")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rt = runtime.Distributed("cuda")
    try:
        assert rt.backend == "nccl" and rt.device().type == "cuda"
        x = torch.arange(12.0, device="cuda").view(4, 3)
        assert torch.equal(rt.all_reduce(x.clone()), x)
        assert torch.equal(rt.broadcast(x.clone()), x)
        assert torch.equal(rt.gather_rows(x), x) and torch.equal(rt.gather_rows(x.cpu()), x.cpu())
        live = x.clone().requires_grad_(True)
        rt.gather_rows_keeping_grad(live).sum().backward()
        assert torch.equal(live.grad, torch.ones_like(x))
        rt.barrier()
        monkeypatch.setattr(runtime, "_current", rt)
        under = fd.distill("digits-fg", preset="vanilla", ipc=2, iterations=3, device="cuda", seed=2)
    finally:
        rt.close()
        os.environ.pop("WORLD_SIZE", None)
    monkeypatch.setattr(runtime, "_current", runtime.SingleProcess())
    plain = fd.distill("digits-fg", preset="vanilla", ipc=2, iterations=3, device="cuda", seed=2)
    assert torch.equal(under.images, plain.images)  # one process: the collectives are identities
