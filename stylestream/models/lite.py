"""`lite`: a CPU/edge preset. The plain half-width Johnson net spends its time in the full-resolution
9x9 convolutions (3 and 16 channels), so this design never convolves at full resolution: a
pixel-unshuffle stem folds 2x2 pixels into channels, the body runs depthwise-separable residual blocks
at 1/4 resolution, and a pixel-shuffle head unfolds back to full resolution.

It ends in a scaled tanh (outputs bounded to [0, 255], mid-grey at initialization). It is not the
study's network, whose head is a plain conv (`johnson`)."""

from __future__ import annotations

import torch
from torch import nn

from stylestream.models.layers import ConvLayer, norm_layer, pad_to_multiple, scaled_tanh
from stylestream.models.registry import ARCHITECTURES


class SeparableResidual(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, twice, with a skip."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            ConvLayer(channels, channels, 3, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1),
            norm_layer(norm, channels),
            nn.ReLU(inplace=True),
            ConvLayer(channels, channels, 3, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1),
            norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LiteNet(nn.Module):
    def __init__(self, norm: str = "instance", width: int = 32, res_blocks: int = 4):
        super().__init__()
        c1, c2 = width, width * 2
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(2),  # (3, H, W) -> (12, H/2, W/2)
            ConvLayer(12, c1, 3), norm_layer(norm, c1), nn.ReLU(inplace=True),
            ConvLayer(c1, c2, 3, stride=2), norm_layer(norm, c2), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.body = nn.Sequential(*[SeparableResidual(c2, norm) for _ in range(res_blocks)])
        self.head = nn.Sequential(
            nn.Conv2d(c2, c1 * 4, 1), nn.PixelShuffle(2),  # 1/4 -> 1/2 resolution
            norm_layer(norm, c1), nn.ReLU(inplace=True),
            ConvLayer(c1, 12, 3), nn.PixelShuffle(2),  # 1/2 -> full resolution, 3 channels
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = pad_to_multiple(x, 4)
        y = self.head(self.body(self.stem(x / 127.5 - 1.0)))
        return scaled_tanh(y[..., :h, :w])


@ARCHITECTURES.register(
    "lite", help="CPU/edge preset: pixel-unshuffle stem, depthwise-separable body at 1/4 res (~30+ fps 320x240)"
)
def lite(norm: str = "instance", width: int = 32, res_blocks: int = 4) -> LiteNet:
    return LiteNet(norm=norm, width=width, res_blocks=res_blocks)


