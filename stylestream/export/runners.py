"""Runtimes that execute an exported model on float32 (N, 3, H, W) batches, for verification and
the format benchmark. Each runner says which device/provider really ran it (`.desc`), so a silent
fallback (e.g. CUDA EP missing -> CPU) is visible in every report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stylestream.devices import cache_dir
from stylestream.export.formats import ExportError

log = logging.getLogger(__name__)


class Runner(Protocol):
    desc: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def ort_providers(device: str) -> list[Any]:
    """ORT provider list for a device name: cpu | cuda | trt-ep (TensorRT EP, CUDA EP after it to
    catch unsupported nodes). Engine/timing caches are per GPU + TRT + ORT version: ORT keys its
    cache file names on the model hash, the folder on the ORT version."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "trt-ep":
        cache = cache_dir("trt-ep", ort.__version__)
        cache.mkdir(parents=True, exist_ok=True)
        opts = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}  # fmt: skip
        return [("TensorrtExecutionProvider", opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ExportError(f"unknown device {device!r}; choose cpu, cuda or trt-ep")


class OrtRunner:
    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        wanted = ort_providers(device)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=wanted)
        except Exception as exc:  # noqa: BLE001 - ORT raises many kinds for a bad file; all become one clear error
            raise ExportError(f"{path}: ONNX Runtime cannot load this model: {exc}") from None
        got = self.session.get_providers()
        first = wanted[0][0] if isinstance(wanted[0], tuple) else wanted[0]
        if first not in got:
            raise ExportError(
                f"ONNX Runtime has no {first} here (available: {', '.join(ort.get_available_providers())}); "
                "for GPU install `pip install stylestream[gpu]` (onnxruntime-gpu) on a machine with an NVIDIA GPU"
            )
        self.input = self.session.get_inputs()[0].name
        self.desc = f"onnxruntime {ort.__version__} {got[0]}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]

    def close(self) -> None:
        del self.session


def ort_runner(path: Path, device: str = "cpu", **kw: Any) -> OrtRunner:
    return OrtRunner(path, device, threads=kw.get("threads"))


class TorchRunner:
    """PyTorch eager, TorchScript or torch.compile on cpu/cuda."""

    def __init__(self, module: Any, device: str, desc: str):
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise ExportError("--device cuda: PyTorch sees no CUDA GPU here")
        self.torch = torch
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.desc = f"{desc} (torch {torch.__version__}, {device})"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            y = self.module(self.torch.from_numpy(x).to(self.device))
            if self.device.type == "cuda":
                self.torch.cuda.synchronize()
            return y.float().cpu().numpy()

    def close(self) -> None:
        del self.module


def torchscript_runner(path: Path, device: str = "cpu", **kw: Any) -> TorchRunner:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any load failure is a user-facing "not TorchScript" error
        raise ExportError(f"{path}: not a loadable TorchScript file: {exc}") from None
    return TorchRunner(module, device, "TorchScript")


def eager_runner(model: Any, device: str = "cpu") -> TorchRunner:
    return TorchRunner(model, device, "torch eager")


def compiled_runner(model: Any, device: str = "cpu") -> TorchRunner:
    import torch

    return TorchRunner(torch.compile(model, dynamic=False), device, "torch.compile")
