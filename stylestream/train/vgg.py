"""Frozen VGG-16 feature extractor for the perceptual loss (Johnson et al. 2016, Simonyan & Zisserman).

Only `features` up to relu4_3 is kept. Inputs are [0, 255] RGB; ImageNet normalization is applied
inside. A forward pass stops at the deepest layer asked for, so content targets (relu2_2) cost only
the first two blocks."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

ENV_VAR = "STYLESTREAM_VGG_WEIGHTS"
# index of each ReLU in torchvision's vgg16().features
LAYERS: dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HOW_TO = (
    "provide VGG-16 ImageNet weights: let torchvision download IMAGENET1K_V1 once (needs internet), "
    f"or set {ENV_VAR}=PATH / pass --vgg-weights PATH to a saved state_dict of torchvision.models.vgg16 "
    "(or of its .features); --vgg-weights random runs offline smoke tests only (not real style transfer)"
)


class VGGWeightsError(RuntimeError):
    """VGG-16 weights could not be had; the message says how to provide them."""


class VGGFeatures(nn.Module):
    """VGG-16 conv layers up to relu4_3, frozen and in eval mode."""

    def __init__(self, features: nn.Sequential, weights_desc: str):
        super().__init__()
        self.features = features[: LAYERS["relu4_3"] + 1]
        self.weights_desc = weights_desc
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:  # always frozen: ignore .train()
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: Iterable[str] = tuple(LAYERS)) -> dict[str, torch.Tensor]:
        wanted = {LAYERS[name]: name for name in layers}
        last = max(wanted)
        out: dict[str, torch.Tensor] = {}
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
            if i == last:
                break
        return out


def _vgg16_features() -> nn.Sequential:
    """torchvision's vgg16().features with torchvision's init, without building the 120M-parameter
    classifier we never use."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
    return features


def _random(seed: int) -> VGGFeatures:
    # torchvision's own init (Kaiming), drawn from a private generator state so the seed alone decides it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = _vgg16_features()
    return VGGFeatures(features, f"random (seeded {seed}; NOT ImageNet: smoke tests only)")


def _from_file(path: Path, source: str) -> VGGFeatures:
    if not path.is_file():
        raise VGGWeightsError(f"VGG-16 weights file {path} ({source}) not found; {HOW_TO}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises assorted errors on garbage files
        raise VGGWeightsError(
            f"VGG-16 weights file {path} ({source}) is not a readable torch file "
            f"({type(exc).__name__}); {HOW_TO}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VGGWeightsError(f"VGG-16 weights file {path} ({source}) does not hold a state_dict; {HOW_TO}")
    feats = {}
    for key, value in state.items():
        k = key.removeprefix("module.")
        k = k.removeprefix("features.") if k.startswith("features.") else k
        head = k.split(".", 1)[0]
        if head.isdigit() and int(head) <= LAYERS["relu4_3"]:
            feats[k] = value
    features = _vgg16_features()[: LAYERS["relu4_3"] + 1]
    try:
        features.load_state_dict(feats, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:300]
        raise VGGWeightsError(
            f"VGG-16 weights file {path} ({source}) does not match torchvision's vgg16 features: {first}; "
            f"{HOW_TO}"
        ) from None
    bad = [k for k, v in feats.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise VGGWeightsError(
            f"VGG-16 weights file {path} ({source}) holds NaN/Inf values in {', '.join(bad)}"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return VGGFeatures(features, f"file {path} (sha256 {digest})")


def _imagenet() -> VGGFeatures:
    from torchvision.models import VGG16_Weights, vgg16

    try:
        model = vgg16(weights=VGG16_Weights.IMAGENET1K_V1, progress=True)
    except Exception as exc:  # noqa: BLE001 - URLError, OSError, hash mismatch, ...
        raise VGGWeightsError(
            f"could not get VGG-16 ImageNet weights (torchvision IMAGENET1K_V1): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}; {HOW_TO}"
        ) from None
    return VGGFeatures(model.features, "imagenet (torchvision VGG16_Weights.IMAGENET1K_V1)")


def load_vgg(weights: str = "imagenet", device: str | torch.device = "cpu", seed: int = 0) -> VGGFeatures:
    """VGG-16 features for the perceptual loss.

    weights: "imagenet" (the STYLESTREAM_VGG_WEIGHTS file if that is set, else torchvision's download
    cache), "random" (seeded, offline tests only) or a path to a state_dict. Never falls back silently:
    raises VGGWeightsError naming VGG-16 and how to provide the weights."""
    if weights == "random":
        vgg = _random(seed)
    elif weights == "imagenet":
        env = os.environ.get(ENV_VAR)
        vgg = _from_file(Path(env).expanduser(), f"from ${ENV_VAR}") if env else _imagenet()
    else:
        vgg = _from_file(Path(weights).expanduser(), "--vgg-weights")
    log.info("VGG-16 weights: %s", vgg.weights_desc)
    return vgg.to(device)
