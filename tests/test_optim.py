import pytest
import torch

from fmnist.config import TrainConfig
from fmnist.data import subset
from fmnist.loop import fit
from fmnist.models import create_model
from fmnist.optim import lr_at


def test_onecycle_and_cosine_schedules():
    cfg = TrainConfig(lr=1.0, schedule="onecycle")
    lrs = [lr_at(s, 100, cfg, 10) for s in range(100)]
    assert max(lrs) == pytest.approx(1.0, abs=0.05) and lrs[-1] < 0.02 and lrs[0] < 0.1
    cfg = TrainConfig(lr=1.0, schedule="cosine")
    assert lr_at(0, 100, cfg, 10) == 1.0 and lr_at(99, 100, cfg, 10) < 0.01


def test_muon_updates_the_conv_weights_through_their_matrix_views(small_ds):
    from fmnist.optim import MuonSGD, make_optimizer

    cfg = TrainConfig(model="cnn_basic", optimizer="muon", lr=0.05, muon_lr=0.02, epochs=2, batch_size=64)
    m = create_model("cnn_basic").to(memory_format=torch.channels_last)  # as fit lays it out
    opt = make_optimizer(m, cfg)
    assert isinstance(opt, MuonSGD)
    convs = [p for p in m.parameters() if p.ndim == 4]
    assert {id(p) for p, _, _ in opt._pairs} >= {id(p) for p in convs}  # every conv weight goes to Muon
    out_layer = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)][-1]
    assert all(p is not out_layer.weight for p, _, _ in opt._pairs)  # the output layer stays with SGD
    before = [p.detach().clone() for p in convs]
    h = fit(m, small_ds.train, subset(small_ds.test, 100), cfg, progress=False, log=lambda *_: None)
    assert all(not torch.equal(b, p) for b, p in zip(before, convs, strict=True))
    assert h.train_loss[1] < h.train_loss[0] and h.val_accuracy[-1] > 0.5
    state = opt.state_dict()  # what --resume saves and loads
    fresh = make_optimizer(m, cfg)
    fresh.load_state_dict(state)
    assert fresh.state_dict()["muon"]["state"].keys() == state["muon"]["state"].keys()
