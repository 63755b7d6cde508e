"""MTT and its experts: the barycentric step, the trajectory loss, the checkpointed unroll, buffers, bad input."""

import json

import pytest
import torch
import torch.nn.functional as F

import fairdistill.api as fd
from fairdistill.backbones import get_backbone
from fairdistill.backbones.mtt import Student, checkpointed_unroll, plain_unroll, student_step
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.errors import FairDistillError
from fairdistill.experts import ExpertConfig, expert_network, read_header, step_weights, train_experts
from fairdistill.models import create_model
from fairdistill.training import init_weights

NET = {"width": 8}
SMALL = dict(
    ipc=2, iterations=2, model_kwargs=NET, syn_steps=2, expert_epochs=1, max_start_epoch=1, num_experts=2,
    expert_train_epochs=2, lr_img=100.0,
)  # fmt: skip


def experts_config(target="population", **kw) -> ExpertConfig:
    return ExpertConfig(**{"target": target, "num_experts": 2, "epochs": 2, "model_kwargs": NET, **kw})


# ---- the barycentric step ------------------------------------------------------------------------------
def test_one_barycentric_expert_step_is_the_mean_of_the_group_gradient_steps(digits):
    """Within each class the step follows the uniform mean of the group gradients (weighted by the class's share)."""
    net = expert_network(digits, experts_config("barycenter"), 0, torch.device("cpu"))
    idx = torch.arange(0, len(digits.train), 7)[:120]
    x, y, a = digits.train.take(idx), digits.train.labels[idx], digits.train.groups[idx]
    k, g = digits.num_classes, digits.num_train_groups
    params = list(net.parameters())
    lr = 0.01
    w = step_weights("barycenter", y, a, k, g)
    step = torch.autograd.grad((w * F.cross_entropy(net(x), y, reduction="none")).sum(), params)
    want = [torch.zeros_like(p) for p in params]
    for c in y.unique():
        groups = a[y == c].unique()
        for gid in groups:  # the mean-CE gradient of group gid in class c, one pass on its images alone
            m = (y == c) & (a == gid)
            grad = torch.autograd.grad(F.cross_entropy(net(x[m]), y[m]), params)
            share = float((y == c).sum()) / len(y)
            for acc, gr in zip(want, grad, strict=True):
                acc += share * gr / len(groups)
    for got, ref in zip(step, want, strict=True):
        torch.testing.assert_close(-lr * got, -lr * ref, atol=1e-7, rtol=1e-5)
    assert len(a[y == y[0]].unique()) > 1  # the batch really has several groups in a class


def test_population_expert_steps_follow_the_plain_mean_loss(digits):
    y, a = digits.train.labels[:64], digits.train.groups[:64]
    w = step_weights("population", y, a, digits.num_classes, digits.num_train_groups)
    torch.testing.assert_close(w, torch.full_like(w, 1 / 64))


# ---- the trajectory loss and the unroll -----------------------------------------------------------------
def _student_problem(dtype=torch.float32):
    torch.manual_seed(0)
    net = init_weights(create_model("convnet", channels=3, num_classes=3, image_size=(8, 8), width=4),
                       torch.Generator().manual_seed(1)).to(dtype)  # fmt: skip
    student = Student(net)
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    images = torch.randn(6, 3, 8, 8, dtype=dtype, requires_grad=True)
    labels = torch.arange(3).repeat_interleave(2)
    batches = [(lambda idx=idx: images[idx], labels[idx]) for idx in (torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5]))]
    alpha = torch.tensor(0.05, dtype=dtype, requires_grad=True)
    return student, start, images, batches, alpha


def test_a_student_that_reproduces_the_expert_segment_has_loss_zero_and_gradients_reach_images_and_step():
    student, start, images, batches, alpha = _student_problem()
    theta = start
    for x, y in batches:  # the student's own end point is the expert's: nothing to correct
        theta = student_step(student, theta.detach().requires_grad_(True), x().detach(), y, alpha.detach(), False)
    end = theta.detach()
    assert float(plain_unroll(student, start, end, batches, alpha, [images, alpha])) == pytest.approx(0, abs=1e-10)
    images.grad, alpha.grad = None, None
    target = end + 0.01 * torch.randn_like(end)
    loss = plain_unroll(student, start, target, batches, alpha, [images, alpha])
    assert loss > 0 and images.grad is not None and alpha.grad is not None
    assert images.grad.abs().sum() > 0 and alpha.grad.abs() > 0


def test_the_checkpointed_unroll_gives_the_plain_unrolls_gradients():
    student, start, images, batches, alpha = _student_problem(torch.float64)
    target = start + 0.01 * torch.randn(start.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss_a = plain_unroll(student, start, target, batches, alpha, [images, alpha])
    grads_a = images.grad.clone(), alpha.grad.clone()
    images.grad, alpha.grad = None, None
    loss_b = checkpointed_unroll(student, start, target, batches, alpha, [images, alpha])
    torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=0)
    torch.testing.assert_close(images.grad, grads_a[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(alpha.grad, grads_a[1], atol=1e-6, rtol=0)
    assert grads_a[0].abs().max() > 1e-4  # the comparison is of gradients that are there


# ---- expert buffers ---------------------------------------------------------------------------------------
class Killed(Exception):
    pass


def test_a_killed_expert_run_continues_to_the_same_buffers(digits, tmp_path):
    cfg = experts_config("barycenter")

    def kill_after_first(done, total, status):
        if done == 1:
            raise Killed

    with pytest.raises(Killed):
        train_experts(digits, cfg, folder=tmp_path / "a", progress=kill_after_first)
    assert (tmp_path / "a" / "expert-0000.safetensors").exists()
    assert not (tmp_path / "a" / "expert-0001.safetensors").exists()
    statuses = []
    resumed = train_experts(digits, cfg, folder=tmp_path / "a", progress=lambda d, t, s: statuses.append(s))
    assert statuses == ["found", "trained"]  # the finished expert is kept, the missing one trained
    whole = train_experts(digits, cfg, folder=tmp_path / "b")
    for i in range(2):
        for epoch in range(3):
            assert torch.equal(resumed.params(i, epoch), whole.params(i, epoch))
    assert not list((tmp_path / "a").glob("*.tmp*"))


def test_experts_are_found_again_by_their_cache_key(digits):
    cfg = experts_config("population")
    first = train_experts(digits, cfg)
    statuses = []
    again = train_experts(digits, cfg, progress=lambda d, t, s: statuses.append(s))
    assert again.folder == first.folder and statuses == ["found", "found"]
    assert train_experts(digits, experts_config("barycenter")).folder != first.folder
    header = read_header(first.path(0), digits, cfg, 0)
    assert header["dataset_fingerprint"] == digits.fingerprint() and header["epochs"] == 2


def test_expert_buffers_from_another_dataset_or_config_or_corrupt_are_refused(digits, digits16, tmp_path):
    cfg = experts_config()
    buf = train_experts(digits, cfg, folder=tmp_path)
    with pytest.raises(FairDistillError, match="trained on another dataset"):
        train_experts(digits16, cfg, folder=tmp_path)
    with pytest.raises(FairDistillError, match="other expert settings"):
        train_experts(digits, experts_config(lr=0.02), folder=tmp_path)
    path = buf.path(1)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(FairDistillError, match="corrupt or truncated"):
        train_experts(digits, cfg, folder=tmp_path)
    path.write_bytes(b"\x00" * 64)  # not a safetensors file at all
    with pytest.raises(FairDistillError, match="corrupt or truncated"):
        train_experts(digits, cfg, folder=tmp_path)


def test_the_api_trains_experts_with_the_profiles_settings(digits, tmp_path):
    buf = fd.experts(digits, target="barycenter", num_experts=1, epochs=1, out=tmp_path, preset="cpu", device="cpu")
    assert (len(buf), buf.epochs, buf.config.target, buf.config.model_kwargs["width"]) == (1, 1, "barycenter", 16)
    with pytest.raises(FairDistillError, match="num_experts must be >= 1"):
        fd.experts(digits, num_experts=0, out=tmp_path, device="cpu")


def test_bad_mtt_settings_are_one_line_errors(digits, cpu):
    mtt = get_backbone("mtt")
    spec = MethodSpec("v", backbone="mtt")
    with pytest.raises(FairDistillError, match="beyond the experts' 2 epochs"):
        mtt.distill(digits, [spec], DistillConfig(**{**SMALL, "max_start_epoch": 3}), device=cpu)
    with pytest.raises(FairDistillError, match="num_experts must be >= 1"):
        mtt.distill(digits, [spec], DistillConfig(**{**SMALL, "num_experts": 0}), device=cpu)
    with pytest.raises(FairDistillError, match="no expert trajectory.*FairDD"):
        mtt.distill(digits, [MethodSpec("f", backbone="mtt", target="group-sync")], DistillConfig(**SMALL), device=cpu)
    with pytest.raises(FairDistillError, match="the trajectory loss became non-finite"):
        mtt.distill(digits, [spec], DistillConfig(**{**SMALL, "lr_img": 1e38}), device=cpu)


def test_the_cpu_profile_names_mtts_gpu_recipe_and_ours(digits):
    from fairdistill.presets import PROFILES

    gpu = PROFILES.get("gpu").settings(10, "mtt")["distill"]
    assert [gpu[k][0] for k in ("syn_steps", "expert_epochs", "max_start_epoch", "lr_lr", "lr_teacher")] == [
        30, 2, 20, 1e-5, 0.01,
    ]  # fmt: skip
    assert gpu["lr_img"][0] == 1000.0 and "ZCA" in gpu["lr_img"][1]
    assert (gpu["num_experts"][0], gpu["expert_train_epochs"][0]) == (100, 50)
    cpu = PROFILES.get("cpu").settings(10, "mtt")["distill"]
    assert cpu["max_start_epoch"][0] - 1 + cpu["expert_epochs"][0] <= cpu["expert_train_epochs"][0]
    assert json.dumps({k: v[0] for k, v in cpu.items()})  # every value is plain data


def test_the_experts_command_trains_finds_and_refuses(tmp_path):
    from typer.testing import CliRunner

    from fairdistill.cli import app

    args = ["experts", "--dataset", "digits-fg", "--experts", "1", "--epochs", "1", "--preset", "cpu"]
    args += ["--device", "cpu", "--out", str(tmp_path), "--quiet"]
    res = CliRunner().invoke(app, [*args, "--target", "barycenter"])
    assert res.exit_code == 0, res.output
    assert "1 barycenter expert(s) x 1 epochs" in res.output and (tmp_path / "expert-0000.safetensors").exists()
    res = CliRunner().invoke(app, [*args, "--target", "group-sync"])
    assert res.exit_code == 2 and "no expert trajectory" in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1  # one line


def test_an_experts_folder_that_is_a_file_is_refused(digits, tmp_path):
    path = tmp_path / "buffers"
    path.write_text("not a folder")
    with pytest.raises(FairDistillError, match="is a file, not a folder"):
        train_experts(digits, experts_config(), folder=path)


def test_start_epochs_are_drawn_below_max_start_epoch_as_mtt_draws_them():
    from types import SimpleNamespace

    from fairdistill import rng

    config = DistillConfig(**{**SMALL, "max_start_epoch": 3, "expert_train_epochs": 4})
    engine = SimpleNamespace(
        config=config, syn_labels=torch.zeros(4, dtype=torch.long), dsa=None, device=torch.device("cpu"),
        generator=lambda purpose, *keys: rng.generator(0, f"mtt-{purpose}", *keys),
    )  # fmt: skip
    starts = {get_backbone("mtt").prepare(engine, it).start for it in range(60)}
    assert starts == {0, 1, 2}
