"""Fully connected networks of reference project 004."""

from __future__ import annotations

from torch import nn

from fmnist.models import activation as act_layer
from fmnist.models import register_model


def _mlp(widths: tuple[int, ...], dropout: float, act: str, num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    prev = 28 * 28
    for w in widths:
        layers += [nn.Linear(prev, w), act_layer(act), nn.Dropout(dropout)]
        prev = w
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


@register_model("mlp", "reference project 004 'Tyler': 5 hidden layers of 128 ReLU, each with Dropout(0.3)")
def mlp_5x128(num_classes: int = 10, hidden: int = 128, depth: int = 5, dropout: float = 0.3,
              activation: str = "relu", l2: float = 0.0) -> nn.Module:
    m = _mlp((hidden,) * depth, dropout, activation, num_classes)
    m.l2 = l2  # Keras-style kernel regularizer, added to the loss by fit()
    return m


@register_model("mlp", "reference project 004 'Jackson': 512-256-128-64 ReLU, each with Dropout(0.3), optional L2")
def mlp_512_64(num_classes: int = 10, dropout: float = 0.3, activation: str = "relu", l2: float = 0.0,
                widths: tuple[int, ...] = (512, 256, 128, 64)) -> nn.Module:
    m = _mlp(tuple(widths), dropout, activation, num_classes)
    m.l2 = l2  # reference project 004 used 0.001 with use_regularizer=True
    return m
