"""Perceptual loss of Johnson et al. (2016): content at relu2_2, style (Gram matrices) at relu1_2,
relu2_2, relu3_3, relu4_3, optional total variation.

Style-loss convention: the study's weights (content 1e5, style 1e10) match the reference code, which
averages the squared Gram difference over the C*C entries ("mean", the default). Eq. 2.4 as written
is the squared Frobenius norm, the sum over entries ("sum"): with it the style term is C^2 times
larger per layer, so use a style weight about 1e4 times smaller."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from stylestream.train.vgg import LAYERS, VGGFeatures

CONTENT_LAYER = "relu2_2"
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
StyleReduction = Literal["mean", "sum"]


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

    The style image's Gram matrices are computed once. `content_targets` runs VGG only up to relu2_2
    and without autograd, so one call can serve several models trained in lockstep on the same batch."""

    def __init__(
        self,
        vgg: VGGFeatures,
        style_image: torch.Tensor,
        content_weight: float = 1e5,
        style_weight: float = 1e10,
        tv_weight: float = 0.0,
        style_reduction: StyleReduction = "mean",
    ):
        super().__init__()
        if style_reduction not in ("mean", "sum"):
            raise ValueError(f"style_reduction must be 'mean' or 'sum', got {style_reduction!r}")
        if style_image.dim() != 4 or style_image.shape[:2] != (1, 3):
            raise ValueError(f"style image must have shape (1, 3, H, W), got {tuple(style_image.shape)}")
        self.vgg = vgg
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        self.style_reduction = style_reduction
        device = next(vgg.parameters()).device
        with torch.no_grad():
            feats = vgg(style_image.to(device=device, dtype=torch.float32), STYLE_LAYERS)
        for name in STYLE_LAYERS:
            self.register_buffer(f"gram_{name}", gram_matrix(feats[name]))

    def style_grams(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"gram_{name}") for name in STYLE_LAYERS}

    @torch.no_grad()
    def content_targets(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {CONTENT_LAYER: self.vgg(x, (CONTENT_LAYER,))[CONTENT_LAYER]}

    def forward(self, y: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = self.vgg(y, STYLE_LAYERS)
        # feature maps may be bf16/fp16 under autocast; the loss arithmetic stays in float32
        content = torch.mean((feats[CONTENT_LAYER].float() - targets[CONTENT_LAYER].float()) ** 2)
        style = y.new_zeros((), dtype=torch.float32)
        for name, g_style in self.style_grams().items():
            sq = (gram_matrix(feats[name]) - g_style) ** 2  # g_style (1, C, C) broadcasts over the batch
            style = style + (sq.mean() if self.style_reduction == "mean" else sq.sum() / sq.shape[0])
        tv = total_variation(y) if self.tv_weight else y.new_zeros((), dtype=torch.float32)
        content, style, tv = self.content_weight * content, self.style_weight * style, self.tv_weight * tv
        return {"content": content, "style": style, "tv": tv, "total": content + style + tv}


assert set(STYLE_LAYERS) <= set(LAYERS)
