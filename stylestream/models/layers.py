"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "batch")


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":  # the study's "spatial batch normalization"
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown normalization {kind!r}; choose one of: {', '.join(NORMS)}")


class ConvLayer(nn.Sequential):
    """Reflection padding + convolution (no zero-padding border artefacts)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = True):
        super().__init__(
            nn.ReflectionPad2d(kernel // 2),
            nn.Conv2d(cin, cout, kernel, stride, groups=groups, bias=bias),
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad H and W up to a multiple so that down/up-sampling by `multiple` returns the input
    size exactly (odd sizes included). Returns the padded tensor and the original H, W."""
    h, w = x.shape[-2], x.shape[-1]
    ph = (multiple - h % multiple) % multiple
    pw = (multiple - w % multiple) % multiple
    return F.pad(x, (0, pw, 0, ph), mode="reflect"), h, w


def scaled_tanh(x: torch.Tensor) -> torch.Tensor:
    """Map to [0, 255]: 255 * (tanh(x) + 1) / 2, the bounded head of `johnson-tanh` and `lite` (the study's
    net has none: stylestream.models.johnson)."""
    return (torch.tanh(x) + 1.0) * 127.5
