"""Export options (every `stylestream export` flag) and the per-export job the builders share."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

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


@dataclass
class ExportJob:
    """One export in progress: the loaded model, its options and a private scratch folder. Builders
    write `artifact` inside `workdir`; the exporter moves it into place only after verification."""

    model: nn.Module
    model_path: Path
    options: ExportOptions
    workdir: Path
    artifact: Path
    name: str
    info: dict[str, Any] = field(default_factory=dict)  # builder facts for the card

    @cached_property
    def onnx_fp32(self) -> Path:
        """The FP32 ONNX every ONNX-derived format starts from, exported once per job."""
        from stylestream.export.onnx_export import export_onnx

        path = self.workdir / "fp32.onnx"
        export_onnx(self.model, path, self.options)
        return path

    def onnx_for(self, precision: str) -> Path:
        """The ONNX at a precision: FP32, FP16 casts or INT8 Q/DQ (TensorRT 10+/11 and Triton
        take the precision from the graph, not from builder flags)."""
        if precision == "fp32":
            return self.onnx_fp32
        if precision == "fp16":
            from stylestream.export.onnx_export import convert_fp16

            path = self.workdir / "fp16.onnx"
            if not path.exists():
                convert_fp16(self.onnx_fp32, path)
            return path
        if precision == "int8":
            from stylestream.export.int8 import quantize_int8

            path = self.workdir / "int8.onnx"
            if not path.exists():
                self.info["quantization"] = quantize_int8(self.onnx_fp32, path, self.options, self.workdir)
            return path
        raise ValueError(f"unknown precision {precision!r}")
