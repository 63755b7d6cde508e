import pytest
import torch
from torch import nn

from fairdistill.errors import FairDistillError
from fairdistill.models import create_model, list_models
from fairdistill.models.convnet import NORMS, ConvNet


@pytest.mark.parametrize("size", [8, 16, 28, 32, 64])
@pytest.mark.parametrize("norm", NORMS)
def test_convnet_any_size_and_norm(size, norm):
    net = create_model("convnet", channels=3, num_classes=7, image_size=size, width=8, norm=norm)
    x = torch.randn(4, 3, size, size)
    assert net(x).shape == (4, 7)
    assert net.embed(x).shape == (4, net.feature_dim)


@pytest.mark.parametrize("name", list_models())
def test_registered_models_run(name):
    net = create_model(name, channels=1, num_classes=3, image_size=32, width=8)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("pool,act", [("max", "leakyrelu"), ("none", "sigmoid"), ("avg", "gelu")])
def test_convnet_options(pool, act):
    net = create_model("convnet", channels=3, num_classes=2, image_size=8, width=4, depth=2, pool=pool, act=act)
    assert net(torch.randn(1, 3, 8, 8)).shape == (1, 2)


def test_bad_architecture():
    with pytest.raises(FairDistillError, match="allowed"):
        create_model("convnet", channels=3, num_classes=2, image_size=8, norm="weird")
    with pytest.raises(FairDistillError, match="too small"):
        create_model("convnet", channels=3, num_classes=2, image_size=8, depth=5)
    with pytest.raises(FairDistillError, match="unknown model"):
        create_model("resnet999", channels=3, num_classes=2, image_size=8)


# ---- cross-architecture networks ----------------------------------------------------------------
CROSS = ["alexnet", "vgg11", "vgg11-bn", "resnet18", "resnet18-bn"]


def test_cross_architectures_are_registered():
    assert set(CROSS) <= set(list_models())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_gives_logits_and_trains(name, size, channels):
    from fairdistill.training import init_weights

    net = init_weights(
        create_model(name, channels=channels, num_classes=5, image_size=size, width=8), torch.Generator().manual_seed(0)
    )
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, channels, size, size, generator=g), torch.tensor([0, 1, 2, 4])
    logits = net(x)
    assert logits.shape == (4, 5) and torch.isfinite(logits).all()
    assert net.embed(x).shape == (4, net.feature_dim)
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    after = list(net.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("name", CROSS)
@pytest.mark.parametrize("size", [8, 16, 28])
def test_small_inputs_keep_a_signal(name, size):
    # no layer may shrink the map to one pixel before a norm: the features would not depend on the input
    from fairdistill.training import init_weights

    net = init_weights(
        create_model(name, channels=3, num_classes=3, image_size=size, width=4), torch.Generator().manual_seed(0)
    ).eval()
    x = torch.randn(6, 3, size, size, generator=torch.Generator().manual_seed(2))
    feats = net.embed(x)
    assert feats.std(0).max() > 1e-4


@pytest.mark.parametrize(
    "name,feature_dim",
    [("alexnet", 192 * 4 * 4), ("vgg11", 512), ("resnet18", 512)],
)
def test_benchmark_shapes_at_32_px(name, feature_dim):
    net = create_model(name, channels=3, num_classes=10, image_size=32)
    assert net.feature_dim == feature_dim
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_size():
    net = create_model("resnet18-bn", channels=3, num_classes=10, image_size=32)
    n = sum(p.numel() for p in net.parameters())
    assert 11.1e6 < n < 11.3e6  # the CIFAR ResNet18's ~11.17 M parameters


def test_bad_cross_architecture():
    with pytest.raises(FairDistillError, match="allowed"):
        create_model("vgg11", channels=3, num_classes=2, image_size=32, norm="weird")
    with pytest.raises(FairDistillError, match="width"):
        create_model("resnet18", channels=3, num_classes=2, image_size=32, width=0)


# ---------------------------------------------------------------- faster, the same values bit for bit


@pytest.mark.parametrize("size,batch", [(32, 6), (28, 6), (17, 6), (64, 6), (32, 37), (17, 33)])
def test_avg_pool_2x2_equals_avg_pool2d_bit_for_bit_forward_backward_and_double_backward(size, batch):
    from fairdistill.models.convnet import AvgPool2x2

    gen = torch.Generator().manual_seed(size)
    # batches above the piece of 16 images are pooled in several pieces, the last one short
    x = torch.randn(batch, 5, size, size, generator=gen, requires_grad=True)
    ours, ref = AvgPool2x2()(x), nn.AvgPool2d(2)(x)
    assert torch.equal(ours, ref)
    weight = torch.randn(ref.shape, generator=gen)
    (g_ours,) = torch.autograd.grad((ours * weight).sum(), x, create_graph=True)
    (g_ref,) = torch.autograd.grad((ref * weight).sum(), x, create_graph=True)
    assert torch.equal(g_ours, g_ref)
    # the gradient is differentiable again (MTT's unroll differentiates through a student's steps)
    (gg_ours,) = torch.autograd.grad((g_ours * x).sum(), x)
    (gg_ref,) = torch.autograd.grad((g_ref * x).sum(), x)
    assert torch.equal(gg_ours, gg_ref)
    assert isinstance(AvgPool2x2(), nn.AvgPool2d)  # CAFE finds the blocks' ends by the pooling type


def test_forward_in_chunks_gives_the_whole_batch_values_bit_for_bit():
    from fairdistill.backbones.layers import layer_features
    from fairdistill.models import forward_chunk, forward_in_chunks

    net = ConvNet(3, 10, 32, width=16)
    x = torch.randn(100, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(forward_in_chunks(net.embed, net, x, 32), net.embed(x))
        pieces = forward_in_chunks(lambda p: layer_features(net, p), net, x, 32)
        whole = layer_features(net, x)
    assert len(pieces) == len(whole) and all(torch.equal(a, b) for a, b in zip(pieces, whole, strict=True))
    assert forward_chunk("cpu") == 32 and forward_chunk("cpu", 0) is None and forward_chunk("cpu", 8) == 8
    assert forward_chunk("meta") is None  # a device without a measured size: the whole batch
    # batch norm in training mode normalises by the batch: such a network always sees the whole batch
    bn = ConvNet(3, 10, 32, width=8, norm="batch")
    calls = []
    forward_in_chunks(lambda p: calls.append(len(p)) or bn.embed(p), bn, x, 32)
    assert calls == [100]


def test_predict_in_pieces_gives_the_same_classes():
    from fairdistill.training import predict

    net = ConvNet(3, 10, 32, width=16)
    x = torch.randn(300, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(predict(net, x), predict(net, x, batch_size=2048))


def test_real_chunk_changes_no_synthetic_pixel():
    from dataclasses import replace

    from fairdistill.backbones import get_backbone
    from fairdistill.backbones.base import check_method
    from fairdistill.data import load_dataset
    from fairdistill.presets import get_method, profile_configs

    data = load_dataset("digits-fg")
    dcfg, _ = profile_configs("cpu", 2, 0, "dm", "digits-fg")
    specs = [check_method(get_method(m, "dm", "cpu", 2)) for m in ("vanilla", "cobra")]
    sets = [
        get_backbone("dm").distill(data, specs, replace(dcfg, iterations=2, real_chunk=c), device=torch.device("cpu"))
        for c in (0, 16)
    ]
    for name in ("vanilla", "cobra"):
        assert torch.equal(sets[0][name].images, sets[1][name].images)
