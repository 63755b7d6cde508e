import pytest
import torch

from fairdistill.errors import FairDistillError
from fairdistill.models import create_model, list_models
from fairdistill.models.convnet import NORMS


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
