"""Batch augmentation on tensors: the whole normalized batch at once, one random draw per image (crop, flip,
alternating flip, rotate, random erasing)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fmnist.config import ERASE_AREA
from fmnist.data import BLACK


def augment_batch(x: torch.Tensor, ops: list[str], g: torch.Generator,
                  flip: torch.Tensor | None = None, erase_area: float = ERASE_AREA) -> torch.Tensor:
    """Augment a whole normalized batch (B, 1, 28, 28) with tensor ops; one random draw per image.

    flip: which images to mirror (bool, (B,)), as fit passes for "altflip"; without it they are drawn at random.
    erase_area: the largest fraction of the image an "erase" rectangle covers (the smallest is 0.02)."""
    b = x.shape[0]
    dev = x.device
    if "flip" in ops or "altflip" in ops:
        if flip is None:
            flip = torch.rand(b, generator=g, device="cpu") < 0.5
        x = torch.where(flip.to(dev).view(b, 1, 1, 1), x.flip(3), x)
    if "rotate" in ops or "crop" in ops:
        # one affine grid for rotation (+-10 degrees) and translation (+-2 px): the random shift of a
        # pad-2 random crop, without materializing the padded batch
        ang = (torch.rand(b, generator=g) * 2 - 1) * math.radians(10) if "rotate" in ops else torch.zeros(b)
        shift = (torch.randint(-2, 3, (b, 2), generator=g).float() * (2 / 28)) if "crop" in ops \
            else torch.zeros(b, 2)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
        mode = "bilinear" if "rotate" in ops else "nearest"
        x = F.grid_sample(x - BLACK, grid, mode=mode, padding_mode="zeros", align_corners=False) + BLACK
    if "erase" in ops:  # random erasing (p=0.5) of a rectangle of 2%-erase_area of the image, filled with black
        hw = 28
        area = (torch.rand(b, generator=g) * (erase_area - 0.02) + 0.02) * hw * hw
        ratio = torch.exp((torch.rand(b, generator=g) * 2 - 1) * math.log(3))
        h = (area * ratio).sqrt().clamp(1, hw - 1).long()
        w = (area / ratio).sqrt().clamp(1, hw - 1).long()
        top = (torch.rand(b, generator=g) * (hw - h + 1).float()).long()
        left = (torch.rand(b, generator=g) * (hw - w + 1).float()).long()
        on = torch.rand(b, generator=g) < 0.5
        ar = torch.arange(hw)
        rows = (ar.view(1, hw) >= top.view(b, 1)) & (ar.view(1, hw) < (top + h).view(b, 1))
        cols = (ar.view(1, hw) >= left.view(b, 1)) & (ar.view(1, hw) < (left + w).view(b, 1))
        mask = (rows.view(b, hw, 1) & cols.view(b, 1, hw) & on.view(b, 1, 1)).to(dev)
        x = torch.where(mask.unsqueeze(1), torch.full_like(x, BLACK), x)
    return x
