"""TorchScript files (`stylestream export --format torchscript`, or any traced style) on CPU or CUDA."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.runtime.base import Backend, register
from stylestream.runtime.torchscript_check import check_torchscript

CHECK_SHAPE = (1, 3, 32, 32)  # one tiny run at load: the file must be a style (output shape = input shape)


@register
class TorchScriptBackend(Backend):
    name = "torchscript"
    help = "a TorchScript file (.torchscript/.ts) on CPU or CUDA, fp32"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        if device != "cpu" and not device.startswith("cuda"):
            return f"TorchScript styles run on CPU or CUDA, not {device}"
        return None

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        import torch

        check_torchscript(self.path)  # before torch.jit.load runs any of the archive's code
        self._torch = torch
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": still LibTorch's format
                self.module = torch.jit.load(str(self.path), map_location=device).eval()
        except Exception as exc:  # noqa: BLE001 - any load failure is one "not loadable" line
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path}: not a loadable TorchScript file ({why})") from None
        x = torch.rand(CHECK_SHAPE, generator=torch.Generator().manual_seed(0)) * 255
        try:
            y = self.run_tensor(x)
        except Exception as exc:  # noqa: BLE001 - whatever the graph raises, the file is not a usable style
            raise ValueError(f"{path}: not a style model (a check run at 32x32 fails: "
                             f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__})"
                             ) from None  # fmt: skip
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != CHECK_SHAPE or not y.is_floating_point():
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{path}: not a style model (returns {got} for a float32 {CHECK_SHAPE} input)")

    def run_tensor(self, x: Any) -> Any:
        torch = self._torch
        with torch.inference_mode():
            return self.module(x.to(self.device, torch.float32)).float()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_tensor(self._torch.from_numpy(x)).cpu().numpy()

    def describe(self) -> str:
        return f"torchscript ({self.device})"

    def version(self) -> str:
        return f"torch {self._torch.__version__} (TorchScript)"
