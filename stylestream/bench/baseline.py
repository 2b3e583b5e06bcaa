"""Training-step speed: stylestream's step next to a faithful re-implementation of the pytorch/examples
fast_neural_style training step (transformer_net.py, vgg.py, utils.py, neural_style.py), measured in
the same process and interleaved round by round so a shared machine's load hits both alike. Used by
`stylestream bench gpu` (step "train") and bench/train_throughput.py."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn


# --- pytorch/examples fast_neural_style --------------------------------------------------------------
class _ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.in1 = _ConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.conv2, self.in2 = _ConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.in2(self.conv2(self.relu(self.in1(self.conv1(x))))) + x


class _UpsampleConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, upsample: int | None = None) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class ExamplesTransformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.in1 = _ConvLayer(3, 32, 9, 1), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = _ConvLayer(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = _ConvLayer(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        self.res = nn.Sequential(*[_ResidualBlock(128) for _ in range(5)])
        self.deconv1, self.in4 = _UpsampleConvLayer(128, 64, 3, 1, 2), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = _UpsampleConvLayer(64, 32, 3, 1, 2), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = _ConvLayer(32, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class ExamplesVgg16(nn.Module):
    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.slices = nn.ModuleList([features[0:4], features[4:9], features[9:16], features[16:23]])
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out  # relu1_2, relu2_2, relu3_3, relu4_3


def _normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(255.0)
    return (batch - mean) / std


def _examples_gram(y: torch.Tensor) -> torch.Tensor:
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


class Baseline:
    """The pytorch/examples training step: FP32, contiguous, Adam at 1e-3."""

    name = "pytorch/examples (fp32)"

    def __init__(self, style: torch.Tensor, batch: int, device: torch.device, vgg_features: nn.Sequential) -> None:
        torch.manual_seed(0)
        self.transformer = ExamplesTransformerNet().to(device)
        self.optimizer = torch.optim.Adam(self.transformer.parameters(), 1e-3)
        self.vgg = ExamplesVgg16(vgg_features).to(device)
        self.mse = nn.MSELoss()
        style = style.repeat(batch, 1, 1, 1).to(device)
        self.gram_style = [_examples_gram(f) for f in self.vgg(_normalize_batch(style))]

    def step(self, x: torch.Tensor) -> float:
        n_batch = len(x)
        self.optimizer.zero_grad()
        x = x.clone()  # normalize_batch divides in place
        y = self.transformer(x)
        y, x = _normalize_batch(y), _normalize_batch(x)
        features_y, features_x = self.vgg(y), self.vgg(x)
        content_loss = 1e5 * self.mse(features_y[1], features_x[1])
        style_loss: Any = 0.0
        for ft_y, gm_s in zip(features_y, self.gram_style):
            style_loss += self.mse(_examples_gram(ft_y), gm_s[:n_batch, :, :])
        total = content_loss + 1e10 * style_loss
        total.backward()
        self.optimizer.step()
        return total.item()


# --- stylestream ---------------------------------------------------------------------------------------
class StylestreamStep:
    """`stylestream train`'s step for --arch johnson (stylestream.train.step) with its AMP and layout."""

    def __init__(self, style: torch.Tensor, device: torch.device, vgg: nn.Module, amp: bool | None,
                 channels_last: bool) -> None:  # fmt: skip
        from stylestream.models import build_model
        from stylestream.train.amp import amp_setup
        from stylestream.train.losses import PerceptualLoss
        from stylestream.train.optimizers import make_optimizer

        torch.manual_seed(0)
        self.amp_dtype, _ = amp_setup(device, amp, closure=False)
        self.channels_last = channels_last
        self.model = build_model("johnson").to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            vgg = vgg.to(memory_format=torch.channels_last)
        self.loss = PerceptualLoss(vgg, style)
        self.optimizer = make_optimizer("adam", self.model.parameters(), lr=1e-3)
        self.precision = str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "fp32"
        self.name = f"stylestream ({self.precision}{', channels_last' if channels_last else ''})"

    def step(self, x: torch.Tensor) -> float:
        from stylestream.train.step import content_targets, train_step

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = content_targets(self.loss, x, self.amp_dtype)
        return train_step(self.model, self.optimizer, self.loss, x, targets, amp_dtype=self.amp_dtype)["total"].item()


class Variant(Protocol):
    name: str

    def step(self, x: torch.Tensor) -> float: ...


@dataclass
class StepTimes:
    """Seconds per timed step of each variant (by name); images/s = batch / mean step."""

    batch: int
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def images_per_s(self) -> dict[str, float]:
        return {n: self.batch * len(ts) / sum(ts) for n, ts in self.seconds.items() if ts}


def measure(variants: Sequence[Variant], x: torch.Tensor, steps: int, warmup: int, rounds: int,
            deadline: float | None = None, progress: Any = None) -> StepTimes:  # fmt: skip
    """Warm each variant up, then time `steps` steps of each, round after round (variants alternate).
    Stops early, keeping what was timed, once time.monotonic() passes `deadline`; `progress(round,
    name, images/s)` after each variant's round."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for v in variants:
        for _ in range(warmup):
            v.step(x)
    out = StepTimes(len(x), {v.name: [] for v in variants})

    def late() -> bool:
        return deadline is not None and time.monotonic() > deadline

    for r in range(rounds):
        for v in variants:
            if late() and all(out.seconds.values()):  # every variant has at least one timed step
                return out
            for _ in range(steps):
                if late() and out.seconds[v.name]:
                    break
                sync()
                t = time.perf_counter()
                v.step(x)
                sync()
                out.seconds[v.name].append(time.perf_counter() - t)
            if progress is not None:
                progress(r + 1, v.name, len(x) / statistics.median(out.seconds[v.name][-steps:]))
    return out
