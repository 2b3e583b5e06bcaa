"""TensorRT engines built with the TensorRT Python API (10.x and 11.x) from our ONNX files.

Precision lives in the ONNX (FP32, FP16 casts, INT8 Q/DQ nodes) and the network is strongly typed:
TensorRT 11 removed BuilderFlag.FP16/INT8 and implicit calibrators, and 10.x has the
STRONGLY_TYPED creation flag for the same behaviour. One optimization profile covers min/opt/max
H x W (and batch); a timing cache per GPU + TensorRT version makes rebuilds fast. Engines only run
on the GPU model and TensorRT version that built them, so both are recorded (`engine_key`) in the
model card and in the timing-cache file name."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from stylestream.devices import cache_dir
from stylestream.export.formats import TENSORRT, ExportError
from stylestream.export.options import MIN_SIDE
from stylestream.runtime.tensorrt_backend import engine_key

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def timing_cache_path(key: dict[str, str]) -> Path:
    return cache_dir("tensorrt") / f"timing-{_slug(key['gpu'])}-sm{key['compute_capability']}-trt{key['tensorrt']}.cache"


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
    TENSORRT.check("tensorrt export")
    import tensorrt as trt

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
