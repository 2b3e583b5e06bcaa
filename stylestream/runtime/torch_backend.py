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
    help = "PyTorch on CPU/CUDA/MPS (bf16/fp16 autocast + channels_last on CUDA)"

    def __init__(self, path: Path, device: str, root: Path | None = None, *, compile: bool | None = None) -> None:
        """compile: wrap the model in torch.compile; None: when $STYLESTREAM_TORCH_COMPILE=1."""
        super().__init__(path, device, root)
        import torch

        from stylestream.models import inference_model, load_model

        self._torch = torch
        self.model = inference_model(load_model(path)).to(device)  # outputs clamped to [0, 255]
        self.dtype = None
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # frame sizes repeat, so autotuning pays off
            self.model = self.model.to(memory_format=torch.channels_last)
            # bf16 keeps fp32's range, so InstanceNorm's variance of [0, 255] inputs cannot overflow
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.compiled = os.environ.get("STYLESTREAM_TORCH_COMPILE") == "1" if compile is None else compile
        if self.compiled:
            self.model = torch.compile(self.model, dynamic=True)

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
        prec = {None: "fp32"}.get(self.dtype, str(self.dtype).replace("torch.", ""))
        return f"torch ({self.device}, {prec}{', compiled' if self.compiled else ''})"

    def version(self) -> str:
        return f"torch {self._torch.__version__}"
