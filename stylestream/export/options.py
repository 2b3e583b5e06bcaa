"""Export options: every `stylestream export` flag. Imports nothing of the exporters, so every builder
and the job (job.py) can import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Reflection padding in ORT/TensorRT is wrong when a pad exceeds the dimension (ORT 8265, 23878);
# 64 keeps every stage of both architectures well clear of it.
MIN_SIDE = 64


@dataclass
class ExportOptions:
    opset: int = 17
    static: tuple[int, int] | None = None  # (H, W) fixed input size; None: dynamic H, W
    batch: int | None = None  # fixed batch size; None: dynamic
    precision: str = "fp32"  # tensorrt / triton: which ONNX the engine or repository is built from
    calibration: Path | None = None  # folder of images or a video (onnx-int8, precision int8)
    calibration_frames: int = 32
    calibration_size: tuple[int, int] = (240, 320)
    device: str = "cpu"  # cpu | cuda: where verification (and TensorRT) run
    workspace_gb: float = 4.0  # TensorRT builder workspace
    trt_min: tuple[int, int] = (MIN_SIDE, MIN_SIDE)  # TensorRT optimization profile H x W
    trt_opt: tuple[int, int] = (480, 640)
    trt_max: tuple[int, int] = (1080, 1920)
    trt_max_batch: int = 4
    triton_backend: str = "onnxruntime"  # onnxruntime | tensorrt
    triton_max_batch: int = 8
    verify: bool = True
    verify_images: Path | None = None  # default: --calibration, else matplotlib's sample photo
    verify_frames: int = 4
    verify_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(240, 320), (181, 243)])
    name: str | None = None
    title: str | None = None
    description: str | None = None
    thumbnail: bool = True
