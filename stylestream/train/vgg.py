"""Frozen VGG feature extractors for the perceptual losses (Simonyan & Zisserman): VGG-16 for Johnson
et al.'s loss (training, sweeps, `optimize --loss johnson`), VGG-19 for Gatys et al.'s (`optimize
--loss gatys`).

Only `features` up to the deepest layer a loss reads is kept. Inputs are [0, 255] RGB; ImageNet
normalization is applied inside. A forward pass stops at the deepest layer asked for, so content
targets (relu2_2 for VGG-16) cost only the first two blocks. Both nets follow the same offline rules:
ImageNet weights from torchvision's cache (or a download), a state_dict file named by an environment
variable or --vgg-weights PATH, or seeded random weights for tests, never a silent fallback."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VGGSpec:
    """One VGG net: torchvision's builder and config, and the index of each ReLU in its .features."""

    title: str  # "VGG-16"
    builder: str  # torchvision.models.<builder>
    cfg: str  # torchvision.models.vgg.cfgs key
    env_var: str  # names a state_dict file to use for "imagenet"
    layers: dict[str, int]

    @property
    def how_to(self) -> str:
        return (
            f"provide {self.title} ImageNet weights: let torchvision download IMAGENET1K_V1 once (needs internet), "
            f"or set {self.env_var}=PATH / pass --vgg-weights PATH to a saved state_dict of "
            f"torchvision.models.{self.builder} (or of its .features); --vgg-weights random runs offline "
            "smoke tests only (not real style transfer)"
        )


VGG16 = VGGSpec("VGG-16", "vgg16", "D", "STYLESTREAM_VGG_WEIGHTS",
                {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22})  # fmt: skip
VGG19 = VGGSpec("VGG-19", "vgg19", "E", "STYLESTREAM_VGG19_WEIGHTS",
                {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu4_2": 22, "relu5_1": 29})  # fmt: skip
NETS = {"vgg16": VGG16, "vgg19": VGG19}
ENV_VAR = VGG16.env_var
LAYERS = VGG16.layers  # the layers of Johnson et al.'s loss
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsError(RuntimeError):
    """VGG weights could not be had; the message says how to provide them."""


class VGGFeatures(nn.Module):
    """A VGG net's conv layers up to its deepest named ReLU, frozen and in eval mode."""

    def __init__(self, features: nn.Sequential, weights_desc: str, spec: VGGSpec = VGG16):
        super().__init__()
        self.spec = spec
        self.layers = dict(spec.layers)
        self.features = features[: max(self.layers.values()) + 1]
        self.weights_desc = weights_desc
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        self.requires_grad_(False)
        self.eval()

    @property
    def title(self) -> str:
        return self.spec.title

    def train(self, mode: bool = True) -> VGGFeatures:  # always frozen: ignore .train()
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        wanted = {self.layers[name]: name for name in (layers if layers is not None else self.layers)}
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


def _features(spec: VGGSpec) -> nn.Sequential:
    """torchvision's <builder>().features with torchvision's init, without building the 120M-parameter
    classifier we never use."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs[spec.cfg], batch_norm=False)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
    return features


def _random(spec: VGGSpec, seed: int) -> VGGFeatures:
    # torchvision's own init (Kaiming), drawn from a private generator state so the seed alone decides it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = _features(spec)
    return VGGFeatures(features, f"random (seeded {seed}; NOT ImageNet: smoke tests only)", spec)


def _from_file(spec: VGGSpec, path: Path, source: str) -> VGGFeatures:
    what = f"{spec.title} weights file {path} ({source})"
    if not path.is_file():
        raise VGGWeightsError(f"{what} not found; {spec.how_to}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises assorted errors on garbage files
        raise VGGWeightsError(f"{what} is not a readable torch file ({type(exc).__name__}); {spec.how_to}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VGGWeightsError(f"{what} does not hold a state_dict; {spec.how_to}")
    deepest = max(spec.layers.values())
    feats = {}
    for key, value in state.items():
        k = key.removeprefix("module.")
        k = k.removeprefix("features.") if k.startswith("features.") else k
        head = k.split(".", 1)[0]
        if head.isdigit() and int(head) <= deepest:
            feats[k] = value
    features = _features(spec)[: deepest + 1]
    try:
        features.load_state_dict(feats, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:300]
        raise VGGWeightsError(
            f"{what} does not match torchvision's {spec.builder} features: {first}; {spec.how_to}"
        ) from None
    bad = [k for k, v in feats.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise VGGWeightsError(f"{what} holds NaN/Inf values in {', '.join(bad)}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return VGGFeatures(features, f"file {path} (sha256 {digest})", spec)


def _imagenet(spec: VGGSpec) -> VGGFeatures:
    import torchvision.models as tvm

    weights = getattr(tvm, f"{spec.builder.upper()}_Weights").IMAGENET1K_V1
    try:
        model = getattr(tvm, spec.builder)(weights=weights, progress=True)
    except Exception as exc:  # noqa: BLE001 - URLError, OSError, hash mismatch, ...
        raise VGGWeightsError(
            f"could not get {spec.title} ImageNet weights (torchvision IMAGENET1K_V1): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}; {spec.how_to}"
        ) from None
    return VGGFeatures(model.features, f"imagenet (torchvision {spec.builder.upper()}_Weights.IMAGENET1K_V1)", spec)


def load_vgg(weights: str = "imagenet", device: str | torch.device = "cpu", seed: int = 0,
             net: str = "vgg16") -> VGGFeatures:  # fmt: skip
    """VGG features for a perceptual loss; `net` is "vgg16" or "vgg19".

    weights: "imagenet" (the file its environment variable names if that is set, e.g.
    STYLESTREAM_VGG_WEIGHTS for VGG-16, else torchvision's download cache), "random" (seeded, offline
    tests only) or a path to a state_dict. Never falls back silently: raises VGGWeightsError naming the
    net and how to provide the weights. The caller says which weights it uses (once, to the user)."""
    spec = NETS[net]
    if weights == "random":
        vgg = _random(spec, seed)
    elif weights == "imagenet":
        env = os.environ.get(spec.env_var)
        vgg = _from_file(spec, Path(env).expanduser(), f"from ${spec.env_var}") if env else _imagenet(spec)
    else:
        vgg = _from_file(spec, Path(weights).expanduser(), "--vgg-weights")
    log.debug("%s weights: %s", spec.title, vgg.weights_desc)
    return vgg.to(device)


def weights_notice(vgg: VGGFeatures, extra: str = "") -> None:
    """The one line that tells the user which VGG weights a command uses: a warning for random ones,
    whose losses and pictures say nothing about real style transfer."""
    random = "random" in vgg.weights_desc
    log.log(logging.WARNING if random else logging.INFO, "%s weights: %s%s", vgg.title, vgg.weights_desc,
            extra)  # fmt: skip
