"""One export in progress (`ExportJob`): what every format's export function receives. It makes the
ONNX files that ONNX-derived formats share (FP32, FP16, INT8), once per job."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stylestream.export.int8 import quantize_int8
from stylestream.export.onnx_export import convert_fp16, export_onnx
from stylestream.export.options import ExportOptions

if TYPE_CHECKING:
    from torch import nn


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
        path = self.workdir / "fp32.onnx"
        export_onnx(self.model, path, self.options)
        self.info["opset"] = self.options.opset  # the card names the opset of formats built from ONNX
        return path

    def onnx_for(self, precision: str) -> Path:
        """The ONNX at a precision: FP32, FP16 casts or INT8 Q/DQ (TensorRT 10+/11 and Triton
        take the precision from the graph, not from builder flags)."""
        if precision == "fp32":
            return self.onnx_fp32
        if precision == "fp16":
            path = self.workdir / "fp16.onnx"
            if not path.exists():
                convert_fp16(self.onnx_fp32, path)
            return path
        if precision == "int8":
            path = self.workdir / "int8.onnx"
            if not path.exists():
                self.info["quantization"] = quantize_int8(self.onnx_fp32, path, self.options, self.workdir)
            return path
        raise ValueError(f"unknown precision {precision!r}")
