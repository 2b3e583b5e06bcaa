"""PyTorch eager on a stylestream model.pt (CPU, CUDA, MPS)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.runtime.base import Backend, register


@register
class TorchBackend(Backend):
    name = "torch"
    help = "PyTorch on CPU/CUDA/MPS (CUDA: fp32/TF32 eager, bf16 + channels_last when compiled)"

    def __init__(self, path: Path, device: str, root: Path | None = None, *, compile: bool | None = None) -> None:
        """compile: wrap the model in torch.compile; None: when $STYLESTREAM_TORCH_COMPILE=1."""
        super().__init__(path, device, root)
        import torch

        from stylestream.models import inference_model, load_model

        self._torch = torch
        self.model = inference_model(load_model(path)).to(device)  # outputs clamped to [0, 255]
        self.dtype = None
        self.compiled = os.environ.get("STYLESTREAM_TORCH_COMPILE") == "1" if compile is None else compile
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # frame sizes repeat, so autotuning pays off
            # Measured on an H200 (bench/RESULTS.md, GPU section): eager, the net is bound by its
            # elementwise/InstanceNorm/padding kernels, which autocast casts and channels_last copies
            # make slower (bf16 + channels_last 26.5 ms at 1080p vs fp32 16.6 ms, TF32 convolutions);
            # compiled, those fuse away and bf16 + channels_last wins (6.4 ms).
            if self.compiled:
                self.model = self.model.to(memory_format=torch.channels_last)
                # bf16 keeps fp32's range, so InstanceNorm's variance of [0, 255] inputs cannot overflow
                self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if self.compiled:
            # Static shapes, one compile per frame size (~10 s each on an H200; torch's recompile limit,
            # 8 sizes, then runs eager). Measured there: a dynamic-shape graph (dynamic=True, or the
            # default's recompile after a second size) ran 720p at 11 ms and 1080p at 27 ms per frame,
            # slower than eager; static graphs ran them at 2.5 ms (batch 8) and 6.4 ms.
            self.model = torch.compile(self.model, dynamic=False)

    def run_tensor(self, x: Any) -> Any:
        """Device-resident path: float (N, 3, H, W) tensor in [0, 255] -> same, on this backend's device."""
        torch = self._torch
        x = x.to(self.device, torch.float32)
        with torch.inference_mode():
            if self.dtype is not None:
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type="cuda", dtype=self.dtype):
                    return self.model(x).float()
            return self.model(x)

    def run(self, x: np.ndarray) -> np.ndarray:
        t = self._torch.from_numpy(x).to(self.device, non_blocking=True)
        return self.run_tensor(t).cpu().numpy()

    def describe(self) -> str:
        default = "fp32/tf32" if self.device.startswith("cuda") else "fp32"
        prec = default if self.dtype is None else str(self.dtype).replace("torch.", "")
        return f"torch ({self.device}, {prec}{', compiled' if self.compiled else ''})"

    def version(self) -> str:
        return f"torch {self._torch.__version__}"
