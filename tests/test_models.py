
import pytest
import torch

from fmnist.errors import FmnistError
from fmnist.models import create_model, list_models, model_info


def _make(name):
    # torchvision backbones build without downloading; EfficientNet-Lite0 uses its real offline weights
    kw = {"weights": "none"} if model_info(name).pretrained and name != "efficientnet_lite0_tl" else {}
    return create_model(name, **kw)


@pytest.mark.parametrize("name", list_models())
def test_every_model_shape_finite_and_gradients(name):
    torch.manual_seed(0)
    m = _make(name).train()
    x = torch.randn(4, 1, 28, 28)
    y = m(x)
    assert y.shape == (4, 10) and torch.isfinite(y).all()
    torch.nn.functional.cross_entropy(y, torch.tensor([0, 1, 2, 3])).backward()
    for pname, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_lenet5_has_the_reference_parameter_count():
    assert sum(p.numel() for p in create_model("lenet5").parameters()) == 44426


@pytest.mark.parametrize("act", ["relu", "tanh", "elu", "gelu"])
def test_pooling_before_a_monotone_activation_is_the_same_function(act):
    from fmnist.models import activation
    from fmnist.models.cnn import conv_act_pool

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 6, 5)
    layers = conv_act_pool(conv, act)
    pool_first = isinstance(layers[1], torch.nn.MaxPool2d)
    assert pool_first == (act != "gelu")  # GELU dips below zero: pooling first would change the function
    x = torch.randn(8, 1, 28, 28)
    textbook = torch.nn.Sequential(conv, activation(act), torch.nn.MaxPool2d(2))
    assert torch.equal(torch.nn.Sequential(*layers)(x), textbook(x))


def test_unknown_model_and_parameter_are_clear():
    with pytest.raises(FmnistError, match="known models: .*lenet5"):
        create_model("lenet6")
    with pytest.raises(FmnistError, match="no parameter widht"):
        create_model("lenet5_tuned", widht=3)
    with pytest.raises(FmnistError, match=r"parameter dense_units must be a whole number \(like its default 128\), "
                                          "got 'abc'"):
        create_model("lenet5_tuned", dense_units="abc")
