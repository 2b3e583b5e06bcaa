"""TensorRT engines built with the TensorRT Python API (10.x and 11.x) from our ONNX files.

Precision lives in the ONNX (FP32, FP16 casts, INT8 Q/DQ nodes) and the network is strongly typed:
TensorRT 11 removed BuilderFlag.FP16/INT8 and implicit calibrators, and 10.x has the
STRONGLY_TYPED creation flag for the same behaviour. One optimization profile covers min/opt/max
H x W (and batch); a timing cache per GPU + TensorRT version makes rebuilds fast. Engines only run
on the GPU model and TensorRT version that built them, so both are recorded (`engine_key`) in the
model card and in the timing-cache file name."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.export.formats import ExportError
from stylestream.export.options import MIN_SIDE, ExportJob

log = logging.getLogger(__name__)

MISSING_HINT = "the tensorrt format needs an NVIDIA GPU with CUDA and TensorRT: `pip install stylestream[trt]`"


def require_tensorrt() -> Any:
    """Import TensorRT on a CUDA machine, or raise an ExportError naming everything missing."""
    missing = []
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken CUDA install counts as no GPU
        has_gpu = False
    if not has_gpu:
        missing.append("an NVIDIA GPU (CUDA reports no device)")
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
        missing.append("the TensorRT Python package")
    if missing:
        raise ExportError(f"TensorRT export is not possible here: missing {' and '.join(missing)}; {MISSING_HINT}")
    return trt


def engine_key() -> dict[str, str]:
    """What an engine is valid for: the GPU model, its compute capability, the TensorRT version."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}",
            "tensorrt": trt.__version__}  # fmt: skip


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def timing_cache_path(key: dict[str, str]) -> Path:
    root = Path(os.environ.get("STYLESTREAM_CACHE", Path.home() / ".cache" / "stylestream")) / "tensorrt"
    return root / f"timing-{_slug(key['gpu'])}-sm{key['compute_capability']}-trt{key['tensorrt']}.cache"


def _profile_shapes(job: ExportJob) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    o = job.options
    if o.static:
        hw_min = hw_opt = hw_max = o.static
    else:
        hw_min, hw_opt, hw_max = o.trt_min, o.trt_opt, o.trt_max
        if min(hw_min) < MIN_SIDE:
            raise ExportError(f"TensorRT profile minimum {hw_min} is below {MIN_SIDE} px (reflection padding limit)")
        if not (hw_min[0] <= hw_opt[0] <= hw_max[0] and hw_min[1] <= hw_opt[1] <= hw_max[1]):
            raise ExportError(f"TensorRT profile needs min <= opt <= max, got {hw_min} / {hw_opt} / {hw_max}")
    if o.batch:
        b_min = b_opt = b_max = o.batch
    else:
        b_min, b_opt, b_max = 1, 1, max(1, o.trt_max_batch)
    return (b_min, 3, *hw_min), (b_opt, 3, *hw_opt), (b_max, 3, *hw_max)


def build_engine(job: ExportJob) -> None:
    trt = require_tensorrt()
    opts = job.options
    onnx_path = job.onnx_for(opts.precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 11:  # 11.x: always strongly typed; the flag is deprecated
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse the {opts.precision} ONNX: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
    if opts.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # FP32 means FP32: TF32 convs would eat the 45 dB floor

    shapes = _profile_shapes(job)
    profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)

    key = engine_key()
    cache_file = timing_cache_path(key)
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    log.info("building TensorRT %s engine for %s (profile %s .. %s)", opts.precision, key["gpu"], shapes[0], shapes[2])
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError("TensorRT failed to build the engine (see the TensorRT log above)")
    job.artifact.write_bytes(bytes(plan))

    from stylestream.models.io import atomic_write

    timing = config.get_timing_cache().serialize()
    atomic_write(cache_file, lambda tmp: Path(tmp).write_bytes(bytes(timing)))
    job.info["tensorrt"] = {
        "engine_key": key, "precision": opts.precision, "strongly_typed": True,
        "profile": {"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])},
        "workspace_gb": opts.workspace_gb, "timing_cache": str(cache_file),
    }  # fmt: skip


class TrtRunner:
    """Runs a serialized engine on CUDA tensors owned by PyTorch (no extra CUDA bindings needed)."""

    def __init__(self, path: Path, device: str = "cuda"):
        trt = require_tensorrt()
        import torch

        self.torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ExportError(
                f"{path}: TensorRT could not load this engine; engines only run on the GPU model and "
                f"TensorRT version that built them (this is {engine_key()}); rebuild it with `stylestream export`"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = [self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
        self.input = next(n for n, i in zip(names, is_input) if i)
        self.output = next(n for n, i in zip(names, is_input) if not i)
        self.stream = torch.cuda.Stream()
        self.desc = f"TensorRT {trt.__version__} ({torch.cuda.get_device_name()})"

    def run_device(self, x: Any) -> Any:
        """CUDA float32 (N, 3, H, W) tensor -> CUDA tensor, on this runner's stream."""
        torch = self.torch
        self.context.set_input_shape(self.input, tuple(x.shape))
        y = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=torch.float32, device=x.device)
        self.context.set_tensor_address(self.input, x.data_ptr())
        self.context.set_tensor_address(self.output, y.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (input shape outside the engine's profile?)")
        return y

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            xt = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", non_blocking=False)
            y = self.run_device(xt)
            out = y.cpu()
        self.stream.synchronize()
        return out.numpy()

    def close(self) -> None:
        del self.context, self.engine, self.runtime


def trt_runner(path: Path, device: str = "cuda", **kw: Any) -> TrtRunner:
    return TrtRunner(path, device)
