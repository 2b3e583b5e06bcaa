"""Johnson et al. (2016) feed-forward transformation network, exactly as the optimizer study's code has
it (pytorch/examples' TransformerNet): c9s1-32, d64, d128, R128 x5, u64, u32, c9s1-3 with reflection
padding, instance norm and nearest upsampling + conv (no transposed-conv checkerboards).

`johnson` ends in that plain 9x9 conv: its output is unbounded (about 0, black, at initialization) and
is clamped to [0, 255] only where images leave the model (stylestream.models.inference). `johnson-tanh`
is the same net with a scaled-tanh head (mid-grey at initialization, can saturate at a constant image),
the `johnson` of model files written before the linear head (stylestream.models.io)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from stylestream.models.layers import ConvLayer, norm_layer, pad_to_multiple, scaled_tanh
from stylestream.models.registry import ARCHITECTURES

Head = Literal["linear", "tanh"]


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = norm_layer(norm, channels)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = norm_layer(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in1(self.conv1(x)))
        return x + self.in2(self.conv2(y))


class UpsampleConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = ConvLayer(cin, cout, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class JohnsonNet(nn.Module):
    def __init__(self, norm: str = "instance", width: int = 32, res_blocks: int = 5, head: Head = "linear"):
        super().__init__()
        if head not in ("linear", "tanh"):
            raise ValueError(f"unknown head {head!r}; choose linear or tanh")
        self.head = head
        c1, c2, c3 = width, width * 2, width * 4
        self.encoder = nn.Sequential(
            ConvLayer(3, c1, 9), norm_layer(norm, c1), nn.ReLU(inplace=True),
            ConvLayer(c1, c2, 3, stride=2), norm_layer(norm, c2), nn.ReLU(inplace=True),
            ConvLayer(c2, c3, 3, stride=2), norm_layer(norm, c3), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.residuals = nn.Sequential(*[ResidualBlock(c3, norm) for _ in range(res_blocks)])
        self.decoder = nn.Sequential(
            UpsampleConv(c3, c2, 3), norm_layer(norm, c2), nn.ReLU(inplace=True),
            UpsampleConv(c2, c1, 3), norm_layer(norm, c1), nn.ReLU(inplace=True),
            ConvLayer(c1, 3, 9),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = pad_to_multiple(x, 4)  # two stride-2 stages: pad, then crop back exactly
        y = self.decoder(self.residuals(self.encoder(x)))[..., :h, :w]
        return scaled_tanh(y) if self.head == "tanh" else y


@ARCHITECTURES.register(
    "johnson", help="Johnson et al. 2016 as the study ran it: 32/64/128, 5 residual blocks, linear 9x9 head"
)
def johnson(norm: str = "instance", width: int = 32, res_blocks: int = 5) -> JohnsonNet:
    return JohnsonNet(norm=norm, width=width, res_blocks=res_blocks, head="linear")


@ARCHITECTURES.register("johnson-tanh", help="johnson with a scaled-tanh head (model files saved before v2)")
def johnson_tanh(norm: str = "instance", width: int = 32, res_blocks: int = 5) -> JohnsonNet:
    return JohnsonNet(norm=norm, width=width, res_blocks=res_blocks, head="tanh")
