"""Perceptual losses: content (feature error at one layer), style (Gram matrices at several layers),
optional total variation, on a frozen VGG. Two layer choices, a registry (LOSSES):

- `johnson` (Johnson et al. 2016, what `train` and `sweep` use): VGG-16, content relu2_2, style relu1_2,
  relu2_2, relu3_3, relu4_3.
- `gatys` (Gatys et al. 2016, per-image optimization): VGG-19, content conv4_2, style conv1_1, conv2_1,
  conv3_1, conv4_1, conv5_1, read after their ReLU as the original Caffe code (in-place ReLU) saw them.

Both share the Gram normalization and the λ convention below. Style-loss convention: the study's
weights (content 1e5, style 1e10) match the reference code, which averages the squared Gram difference
over the C*C entries ("mean", the default). Eq. 2.4 as written is the squared Frobenius norm, the sum
over entries ("sum"): with it the style term is C^2 times larger per layer, so use a style weight about
1e4 times smaller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from stylestream.registry import Registry
from stylestream.train.vgg import NETS, VGGFeatures

StyleReduction = Literal["mean", "sum"]


@dataclass(frozen=True)
class LossLayers:
    """Which VGG (a key of stylestream.train.vgg.NETS) and which of its layers a loss reads."""

    net: str
    content: str
    style: tuple[str, ...]


LOSSES: Registry[LossLayers] = Registry("loss")
LOSSES.add("johnson", LossLayers("vgg16", "relu2_2", ("relu1_2", "relu2_2", "relu3_3", "relu4_3")),
           "VGG-16, content relu2_2, style relu1_2..relu4_3 (Johnson et al. 2016; the loss `train` uses)")  # fmt: skip
LOSSES.add("gatys", LossLayers("vgg19", "relu4_2", ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")),
           "VGG-19, content conv4_2, style conv1_1..conv5_1 (Gatys et al. 2016)")  # fmt: skip
JOHNSON = LOSSES["johnson"]
CONTENT_LAYER = JOHNSON.content
STYLE_LAYERS = JOHNSON.style


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """G = F F^T / (C H W) for F of shape (N, C, H, W); returns (N, C, C) in float32 (eq. 2.3)."""
    n, c, h, w = features.shape
    f = features.float().reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def total_variation(y: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences between neighbouring pixels, averaged over the batch."""
    dh = (y[:, :, 1:, :] - y[:, :, :-1, :]).float().pow(2).sum()
    dw = (y[:, :, :, 1:] - y[:, :, :, :-1]).float().pow(2).sum()
    return (dh + dw) / y.shape[0]


class PerceptualLoss(nn.Module):
    """loss = PerceptualLoss(vgg, style_image); targets = loss.content_targets(x); terms = loss(y, targets).

    The style image's Gram matrices are computed once. `content_targets` runs VGG only up to the content
    layer and without autograd, so one call can serve several models trained in lockstep on the same
    batch. `layers` must be a loss of LOSSES whose net `vgg` is (default: Johnson's, on VGG-16)."""

    def __init__(
        self,
        vgg: VGGFeatures,
        style_image: torch.Tensor,
        content_weight: float = 1e5,
        style_weight: float = 1e10,
        tv_weight: float = 0.0,
        style_reduction: StyleReduction = "mean",
        layers: LossLayers = JOHNSON,
    ):
        super().__init__()
        if style_reduction not in ("mean", "sum"):
            raise ValueError(f"style_reduction must be 'mean' or 'sum', got {style_reduction!r}")
        if style_image.dim() != 4 or style_image.shape[:2] != (1, 3):
            raise ValueError(f"style image must have shape (1, 3, H, W), got {tuple(style_image.shape)}")
        if vgg.spec is not NETS[layers.net]:
            raise ValueError(f"this loss reads {NETS[layers.net].title}, got {vgg.title}")
        self.vgg = vgg
        self.content_layer, self.style_layers = layers.content, layers.style
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        self.style_reduction = style_reduction
        device = next(vgg.parameters()).device
        with torch.no_grad():
            feats = vgg(style_image.to(device=device, dtype=torch.float32), self.style_layers)
        for name in self.style_layers:
            self.register_buffer(f"gram_{name}", gram_matrix(feats[name]))

    def style_grams(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"gram_{name}") for name in self.style_layers}

    @torch.no_grad()
    def content_targets(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.content_layer: self.vgg(x, (self.content_layer,))[self.content_layer]}

    def forward(self, y: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.terms(self.features(y), y, targets)

    def features(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The VGG feature maps the loss reads. One call may serve several models' outputs stacked on the
        batch axis (the fused lockstep pass); `terms` then takes each model's slice."""
        return self.vgg(y, (*self.style_layers, self.content_layer))

    def terms(self, feats: dict[str, torch.Tensor], y: torch.Tensor,
              targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # fmt: skip
        """The weighted loss terms of output `y` from its feature maps `feats` (`features(y)`)."""
        # feature maps may be bf16/fp16 under autocast; the loss arithmetic stays in float32
        key = self.content_layer
        content = torch.mean((feats[key].float() - targets[key].float()) ** 2)
        style = y.new_zeros((), dtype=torch.float32)
        for name, g_style in self.style_grams().items():
            sq = (gram_matrix(feats[name]) - g_style) ** 2  # g_style (1, C, C) broadcasts over the batch
            style = style + (sq.mean() if self.style_reduction == "mean" else sq.sum() / sq.shape[0])
        tv = total_variation(y) if self.tv_weight else y.new_zeros((), dtype=torch.float32)
        content, style, tv = self.content_weight * content, self.style_weight * style, self.tv_weight * tv
        return {"content": content, "style": style, "tv": tv, "total": content + style + tv}


for _loss in LOSSES:
    assert {_loss.obj.content, *_loss.obj.style} <= set(NETS[_loss.obj.net].layers), _loss.name
