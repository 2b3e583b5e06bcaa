"""ONNX Runtime on CPU, or on a CUDA GPU through the TensorRT and CUDA execution providers."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.devices import cache_dir, compute_threads
from stylestream.runtime.base import Backend, BackendUnavailable, register
from stylestream.runtime.onnx_check import check_onnx_model

log = logging.getLogger(__name__)

# short names (OnnxRuntimeBackend(providers=...)) -> ONNX Runtime's, in the order serving tries them on a GPU
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
GPU_HINT = "pip install stylestream[gpu] (onnxruntime-gpu) on a machine with an NVIDIA GPU"


def trt_ep_cache(model: Path, device_id: int) -> Path:
    """The one TensorRT EP cache folder for a model on a GPU. Engines are valid for one GPU model,
    TensorRT and ORT version, and ORT names its cache files by graph structure, not weights, so the
    folder is keyed on the GPU, the ORT version and the model's bytes (a re-export gets new engines)."""
    import onnxruntime as ort

    gpu = f"gpu{device_id}"
    try:
        import torch

        gpu = torch.cuda.get_device_name(device_id)
    except Exception as exc:  # noqa: BLE001 - no usable torch CUDA: the device index still separates GPUs
        log.debug("no GPU name for the TensorRT EP cache (%s); keyed on the device index", exc)
    digest = hashlib.sha256()
    with Path(model).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{gpu}-ort{ort.__version__}").strip("-").lower()
    return cache_dir("trt-ep", slug, digest.hexdigest()[:16])


def has_fp16(path: Path) -> bool:
    """Whether the graph already computes in FP16 (an onnx-fp16 export): precision lives in the file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


@register
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    help = "ONNX Runtime; providers TensorRT EP -> CUDA EP -> CPU EP where available"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
        return None

    @staticmethod
    def gpu_providers() -> list[str]:
        import onnxruntime as ort

        have = ort.get_available_providers()
        return [PROVIDERS[p] for p in ("tensorrt", "cuda") if PROVIDERS[p] in have]

    def __init__(self, path: Path, device: str, root: Path | None = None, *,
                 providers: Sequence[str] | None = None) -> None:  # fmt: skip
        """providers: None (serving) = the best this device and install offer, with a warning when ORT
        falls back; or short names from PROVIDERS ('tensorrt', 'cuda', 'cpu') to use exactly, where a
        missing first one is BackendUnavailable (the benchmark times each provider on its own)."""
        super().__init__(path, device, root)
        import onnxruntime as ort

        check_onnx_model(self.path, self.root)  # before ONNX Runtime reads a byte of what it names
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # ORT's warnings about unused initializers are noise here
        wanted = self._providers(device, providers)
        if wanted == ["CPUExecutionProvider"]:
            # one session per style; intra-op threads use every core, no inter-op parallelism (a convnet
            # is a chain of ops)
            opts.intra_op_num_threads = compute_threads()
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        dev_id = int(device.split(":")[1]) if ":" in device else 0
        options = [self._provider_options(p, dev_id) for p in wanted]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=list(zip(wanted, options)))
        except Exception as exc:  # noqa: BLE001 -- ORT raises several kinds for a bad file
            raise ValueError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]})") from None  # fmt: skip
        self.providers = self.session.get_providers()
        if self.providers[0] != wanted[0]:  # a silent fallback must be seen
            if providers is not None:
                raise BackendUnavailable(f"{path}: onnxruntime could not start {wanted[0]} (it ran "
                                         f"{self.providers[0]}); {GPU_HINT}")  # fmt: skip
            log.warning("%s: asked for %s, onnxruntime gave %s", path, wanted, self.providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.on_gpu = self.providers[0] != "CPUExecutionProvider"
        self._ort_version = ort.__version__

    def _providers(self, device: str, short: Sequence[str] | None) -> list[str]:
        import onnxruntime as ort

        if short is None:
            gpu = self.gpu_providers() if device.startswith("cuda") else []
            if device.startswith("cuda") and not gpu:
                log.warning("%s: onnxruntime has no CUDA/TensorRT provider; running on CPU (%s)", self.path, GPU_HINT)
            return [*gpu, "CPUExecutionProvider"]
        unknown = [p for p in short if p not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown onnxruntime provider {unknown[0]!r}; choose from {', '.join(PROVIDERS)}")
        wanted = [PROVIDERS[p] for p in short]
        if wanted[0] != "CPUExecutionProvider":
            if not device.startswith("cuda"):
                raise BackendUnavailable(f"{wanted[0]} runs on a CUDA device, not {device}")
            if wanted[0] not in ort.get_available_providers():
                raise BackendUnavailable(f"onnxruntime has no {wanted[0]} here (available: "
                                         f"{', '.join(ort.get_available_providers())}); {GPU_HINT}")  # fmt: skip
        return wanted if "CPUExecutionProvider" in wanted else [*wanted, "CPUExecutionProvider"]

    def _provider_options(self, provider: str, dev_id: int) -> dict[str, Any]:
        if provider == "CPUExecutionProvider":
            return {}
        if provider == "CUDAExecutionProvider":
            return {"device_id": dev_id}
        cache = trt_ep_cache(self.path, dev_id)
        cache.mkdir(parents=True, exist_ok=True)
        return {
            "device_id": dev_id,
            # FP16 only where the file computes in FP16: TensorRT's FP16 InstanceNorm overflows on
            # [0, 255] activations (TensorRT 2691), which is why onnx-fp16 keeps it FP32
            "trt_fp16_enable": has_fp16(self.path),
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.on_gpu:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        # IO binding: the output stays on the GPU until one explicit copy (no hidden host round trips)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        binding.bind_output(self.output_name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def describe(self) -> str:
        return f"onnxruntime ({', '.join(p.replace('ExecutionProvider', '') for p in self.providers)})"

    def version(self) -> str:
        return f"onnxruntime {self._ort_version}"

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]  # frees the session (and its GPU memory) now
