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
