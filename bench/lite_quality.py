"""What does the `lite` architecture cost in quality compared with `johnson`?

Without COCO and ImageNet VGG weights on the development machine, we measure *capacity*: how closely each
architecture can learn the mapping of a well-trained fast-style model, from the reference outputs in
../shared/media/reference (chicago.jpg -> chicago_<style>.jpg, made by jcjohnson's trained models).
Each net is trained (Adam, L1) on random crops from the left 70% of the pair and evaluated by PSNR on the
unseen right 30%. Higher PSNR = closer to the trained Johnson model's look. Also reports parameters,
MFLOP/pixel and ORT CPU latency at 320x240.

    python bench/lite_quality.py --steps 400 --styles mosaic,candy,udnie
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from stylestream.models import build_model
from stylestream.train.amp import amp_setup
from stylestream.train.step import autocast

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def load(path: Path, width: int) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    h = round(img.height * width / img.width)
    return torch.from_numpy(np.asarray(img.resize((width, h), Image.BICUBIC))).permute(2, 0, 1).float()[None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(255.0**2 / F.mse_loss(a, b)))


def macs_per_pixel(model: torch.nn.Module, h: int = 240, w: int = 320) -> float:
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += out.numel() * (mod.in_channels // mod.groups) * k

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, h, w))
    for hnd in hs:
        hnd.remove()
    return total / (h * w)


def fit(arch: str, content: torch.Tensor, target: torch.Tensor, steps: int, crop: int, seed: int,
        amp_dtype: torch.dtype | None) -> float:
    torch.manual_seed(seed)
    model = build_model(arch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    split = int(content.shape[-1] * 0.7)
    train_c, train_t = content[..., :split], target[..., :split]
    test_c, test_t = content[..., split:], target[..., split:]
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc=arch, leave=False):
        ys = torch.randint(0, train_c.shape[-2] - crop + 1, (4,), generator=gen)
        xs = torch.randint(0, train_c.shape[-1] - crop + 1, (4,), generator=gen)
        c = torch.cat([train_c[..., y : y + crop, x : x + crop] for y, x in zip(ys, xs)])
        t = torch.cat([train_t[..., y : y + crop, x : x + crop] for y, x in zip(ys, xs)])
        with autocast(c.device, amp_dtype):
            loss = F.l1_loss(model(c).float(), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return psnr(model(test_c), test_t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--styles", default="mosaic,candy,udnie")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: as `train` has it, on for CPUs with AMX)")
    args = ap.parse_args()
    amp_dtype, _ = amp_setup(torch.device("cpu"), args.bf16, closure=False)
    content = load(MEDIA / "content" / "chicago.jpg", args.width)
    rows = []
    for style in args.styles.split(","):
        target = load(MEDIA / "reference" / f"chicago_{style}.jpg", args.width)
        target = F.interpolate(target, size=content.shape[-2:], mode="bilinear", align_corners=False)
        row = {"style": style, "identity_psnr": psnr(content, target)}
        for arch in ("johnson", "lite"):
            t0 = time.perf_counter()
            row[arch] = fit(arch, content, target, args.steps, args.crop, seed=0, amp_dtype=amp_dtype)
            row[f"{arch}_s"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row))
    for arch in ("johnson", "lite"):
        m = build_model(arch)
        print(f"{arch}: {sum(p.numel() for p in m.parameters()):,} params, {macs_per_pixel(m) / 1e3:.1f} kMAC/pixel")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
