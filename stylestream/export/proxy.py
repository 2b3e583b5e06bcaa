"""A stand-in "trained" model for export tests and benchmarks when no real style model is at hand.

Quantization quality depends on the weights: a network at initialisation has tiny, symmetric
activations that quantize trivially, which would make INT8 look better (or worse) than it is. So
this fits a network for a few Adam steps to a fixed image-to-image target on real photos (a
colour-mapped, blurred blend of the input: a smooth, colourful, "painted" look), which moves the
weights and activation ranges well away from their initial values. It is NOT a style model and its
output must never be shown as a style-transfer result."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def proxy_target(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> the fixed target the proxy is fitted to."""
    import cv2

    out = []
    for f in frames:
        gray = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        mapped = cv2.applyColorMap(gray, cv2.COLORMAP_TWILIGHT_SHIFTED)[..., ::-1]
        blend = cv2.addWeighted(f, 0.5, mapped, 0.5, 0)
        out.append(cv2.GaussianBlur(blend, (3, 3), 0))
    return np.stack(out)


def fit_proxy_model(images: str | Path, arch: str = "johnson", steps: int = 60, size: int = 96,
                    batch: int = 4, lr: float = 2e-3, seed: int = 0, **arch_config):  # fmt: skip
    """Fit `arch` for `steps` Adam steps on random crops of `images` (a folder, image or video)
    toward `proxy_target`. Returns the model in eval mode with `stylestream_card` describing it."""
    import torch
    from tqdm import tqdm

    from stylestream.media import fit, load_frames
    from stylestream.models import build_model

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    photos = [fit(f, 2 * size, 2 * size) for f in load_frames(images, 32)]
    model = build_model(arch, **arch_config).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(steps), desc=f"fitting proxy {arch}", unit="step", leave=False):
        crops = []
        for _ in range(batch):
            p = photos[rng.integers(len(photos))]
            y, x = rng.integers(0, size + 1, 2)
            crops.append(p[y : y + size, x : x + size])
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
        target = torch.from_numpy(proxy_target(np.stack(crops))).permute(0, 3, 1, 2).float()
        loss = torch.nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    model.stylestream_card = {
        "name": f"proxy-{arch}", "title": f"Proxy {arch} (not a style)",
        "description": f"{arch} fitted {steps} Adam steps to a fixed colour-map target; a test/benchmark stand-in",
        "proxy": {"steps": steps, "size": size, "lr": lr, "final_mse": round(float(np.mean(losses[-5:])), 2)},
    }  # fmt: skip
    log.info("proxy %s: MSE %.1f -> %.1f over %d steps", arch, losses[0], losses[-1], steps)
    return model
