"""Johnson et al. (2016) feed-forward transformation network, as in the optimizer study:
c9s1-32, d64, d128, R128 x5, u64, u32, c9s1-3, reflection padding, nearest upsampling + conv
(no transposed-conv checkerboards), scaled tanh output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stylestream.models import ARCHITECTURES
from stylestream.models.layers import ConvLayer, norm_layer, pad_to_multiple, scaled_tanh


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
    def __init__(self, norm: str = "instance", width: int = 32, res_blocks: int = 5):
        super().__init__()
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
        y = self.decoder(self.residuals(self.encoder(x)))
        return scaled_tanh(y[..., :h, :w])


@ARCHITECTURES.register("johnson", help="Johnson et al. 2016 (the study's net): 32/64/128, 5 residual blocks")
def johnson(norm: str = "instance", width: int = 32, res_blocks: int = 5) -> JohnsonNet:
    return JohnsonNet(norm=norm, width=width, res_blocks=res_blocks)
