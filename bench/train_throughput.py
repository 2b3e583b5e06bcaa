"""Training throughput (images/s) of `stylestream train`'s step for --arch johnson at 256x256, batch 4,
on the current device, next to a faithful re-implementation of the pytorch/examples
fast_neural_style training step (--baseline) measured in the same run, interleaved round by round so
a shared machine's load hits both alike. Random-weight VGG-16 (speed does not depend on the weights).

    python bench/train_throughput.py --baseline            # CPU here; prints the device
    python bench/train_throughput.py --baseline --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


# --- pytorch/examples fast_neural_style (transformer_net.py, vgg.py, utils.py, neural_style.py) -------
class _ConvLayer(nn.Module):
    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class _ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.in1 = _ConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.conv2, self.in2 = _ConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.in2(self.conv2(self.relu(self.in1(self.conv1(x))))) + x


class _UpsampleConvLayer(nn.Module):
    def __init__(self, cin, cout, kernel, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x):
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class ExamplesTransformerNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.in1 = _ConvLayer(3, 32, 9, 1), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = _ConvLayer(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = _ConvLayer(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        self.res = nn.Sequential(*[_ResidualBlock(128) for _ in range(5)])
        self.deconv1, self.in4 = _UpsampleConvLayer(128, 64, 3, 1, 2), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = _UpsampleConvLayer(64, 32, 3, 1, 2), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = _ConvLayer(32, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class ExamplesVgg16(nn.Module):
    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.slices = nn.ModuleList([features[0:4], features[4:9], features[9:16], features[16:23]])
        self.requires_grad_(False)

    def forward(self, x):
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out  # relu1_2, relu2_2, relu3_3, relu4_3


def _normalize_batch(batch):
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(255.0)
    return (batch - mean) / std


def _examples_gram(y):
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


class Baseline:
    name = "pytorch/examples (fp32)"

    def __init__(self, style, batch, device, vgg_features):
        torch.manual_seed(0)
        self.transformer = ExamplesTransformerNet().to(device)
        self.optimizer = torch.optim.Adam(self.transformer.parameters(), 1e-3)
        self.vgg = ExamplesVgg16(vgg_features).to(device)
        self.mse = nn.MSELoss()
        style = style.repeat(batch, 1, 1, 1).to(device)
        self.gram_style = [_examples_gram(f) for f in self.vgg(_normalize_batch(style))]

    def step(self, x):
        n_batch = len(x)
        self.optimizer.zero_grad()
        x = x.clone()  # normalize_batch divides in place
        y = self.transformer(x)
        y, x = _normalize_batch(y), _normalize_batch(x)
        features_y, features_x = self.vgg(y), self.vgg(x)
        content_loss = 1e5 * self.mse(features_y[1], features_x[1])
        style_loss = 0.0
        for ft_y, gm_s in zip(features_y, self.gram_style):
            style_loss += self.mse(_examples_gram(ft_y), gm_s[:n_batch, :, :])
        total = content_loss + 1e10 * style_loss
        total.backward()
        self.optimizer.step()
        return total.item()


# --- stylestream ---------------------------------------------------------------------------------------
class Stylestream:
    def __init__(self, style, batch, device, vgg, amp, channels_last):
        from stylestream.models import build_model
        from stylestream.train.loop import amp_setup
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
        amp_name = str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "fp32"
        self.name = f"stylestream ({amp_name}{', channels_last' if channels_last else ''})"

    def step(self, x):
        from stylestream.train.step import content_targets, train_step

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = content_targets(self.loss, x, self.amp_dtype)
        return train_step(self.model, self.optimizer, self.loss, x, targets, amp_dtype=self.amp_dtype)[
            "total"
        ].item()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"CPU {cpu}, {torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}"
    )


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", action="store_true", help="also measure the pytorch/examples training step")
    ap.add_argument("--fp32", action="store_true", help="also measure stylestream with --no-amp")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="variants alternate this many times")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="default: as train")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--plot", type=Path, help="write a bar chart (PNG) here")
    args = ap.parse_args(argv)

    from stylestream.devices import resolve as resolve_device
    from stylestream.train.data import ImageFolderDataset
    from stylestream.train.images import load_image
    from stylestream.train.vgg import load_vgg

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    content = ImageFolderDataset(MEDIA / "content", args.size)
    x = torch.stack([content[i % len(content)] for i in range(args.batch_size)]).to(device)
    style = load_image(MEDIA / "styles" / "starry_night.jpg", size=args.size)
    vgg = load_vgg("random", device=device)

    variants = [Stylestream(style, args.batch_size, device, vgg, args.amp, args.channels_last)]
    if args.fp32:
        variants.append(Stylestream(style, args.batch_size, device, load_vgg("random", device=device), False,
                                    args.channels_last))  # fmt: skip
    if args.baseline:
        variants.append(Baseline(style, args.batch_size, device, load_vgg("random", device=device).features))
    load_before = os.getloadavg()
    print(
        f"device: {_device_name(device)}; torch {torch.__version__}; johnson {args.size}^2, batch {args.batch_size}"
    )
    print(f"load average before: {load_before[0]:.2f} (other processes share this machine when > 0)")
    for v in variants:
        for _ in range(args.warmup):
            v.step(x)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            for _ in range(args.steps):
                _sync(device)
                t = time.perf_counter()
                v.step(x)
                _sync(device)
                times[v.name].append(time.perf_counter() - t)
            print(f"  round {r + 1}: {v.name}: {args.batch_size / statistics.median(times[v.name][-args.steps:]):.3f} img/s",
                  flush=True)  # fmt: skip
    load_after = os.getloadavg()
    results = {name: args.batch_size * len(ts) / sum(ts) for name, ts in times.items()}
    print(f"load average after: {load_after[0]:.2f}")
    for name, ips in results.items():
        print(f"{name:45s} {ips:7.3f} images/s  (median step {statistics.median(times[name]):.3f} s)")
    base = next((results[v.name] for v in variants if isinstance(v, Baseline)), None)
    if base:
        print(f"speed-up of {variants[0].name} over the baseline: {results[variants[0].name] / base:.2f}x")
    report = {"device": _device_name(device), "torch": torch.__version__, "size": args.size,
              "batch_size": args.batch_size, "images_per_s": results, "step_seconds": times,
              "load_average": [load_before[0], load_after[0]]}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 1 + 0.6 * len(results)))
        ax.barh(list(results), list(results.values()), color="tab:blue")
        ax.set_xlabel("images/s (johnson, 256², batch 4, training)")
        ax.set_title(_device_name(device), fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
