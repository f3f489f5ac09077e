import pytest
import torch

from fmnist.augment import augment_batch
from fmnist.config import TrainConfig
from fmnist.errors import FmnistError


def test_every_augmentation_changes_the_batch_and_keeps_its_shape():
    x = torch.randn(16, 1, 28, 28)
    out = augment_batch(x, ["crop", "flip", "rotate", "erase"], torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.equal(out, x)


def test_erase_area_bounds_the_erased_rectangle():
    x = torch.ones(400, 1, 28, 28)
    for area in (0.16, 0.4):
        erased = (augment_batch(x, ["erase"], torch.Generator().manual_seed(0), erase_area=area) != 1).sum((1, 2, 3))
        assert erased.max() <= area * 784 and (erased > 0).float().mean().item() == pytest.approx(0.5, abs=0.1)
    assert erased.max() > 0.16 * 784  # the larger setting erases rectangles the default never does
    with pytest.raises(FmnistError, match="erase_area"):
        TrainConfig(erase_area=0.01)


def test_alternating_flips_mirror_the_images_they_are_told_to():
    x = torch.randn(6, 1, 28, 28)
    mask = torch.tensor([True, False, True, False, False, True])
    out = augment_batch(x, ["altflip"], torch.Generator().manual_seed(0), mask)
    assert torch.equal(out[mask], x[mask].flip(3)) and torch.equal(out[~mask], x[~mask])
    with pytest.raises(FmnistError, match="not both"):
        TrainConfig(augment="flip,altflip")
