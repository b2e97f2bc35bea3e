"""A small residual network: the example of a model that a layer plan cannot describe.

Any class works as a model through ``_target_`` in a model config if its
constructor takes ``bn`` (bool), ``input_shape`` ((channels, height, width)) and
``num_classes`` (int) as keyword arguments; every other key of the model config
(except ``input``, ``name`` and ``init``) is passed on as a keyword argument too.
"""

from __future__ import annotations

from torch import nn


def _conv_norm(c_in: int, c_out: int, bn: bool, stride: int = 1) -> list[nn.Module]:
    # With BN the conv needs no bias: BN's shift replaces it.
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not bn)
    return [conv, nn.BatchNorm2d(c_out)] if bn else [conv]


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, bn: bool):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm(channels, channels, bn), nn.ReLU(), *_conv_norm(channels, channels, bn)
        )
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x + self.body(x))


class SmallResNet(nn.Module):
    """Stem conv, ``blocks`` residual blocks per stage, two stages, global pooling, linear."""

    def __init__(
        self,
        bn: bool,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 16,
        blocks: int = 1,
    ):
        super().__init__()
        channels = input_shape[0]
        layers: list[nn.Module] = [*_conv_norm(channels, width, bn), nn.ReLU()]
        for stage in range(2):
            c = width * 2**stage
            if stage:
                layers += [*_conv_norm(c // 2, c, bn, stride=2), nn.ReLU()]
            layers += [ResidualBlock(c, bn) for _ in range(blocks)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width * 2, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
