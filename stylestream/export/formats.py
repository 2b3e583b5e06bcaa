"""The table of export formats. One entry per format drives `stylestream export --format`, the
export itself, its verification floor and the format benchmark (the ultralytics exporter's idea).

Builders and runners live in their own modules and are imported lazily, so listing the formats
(CLI help) never imports onnxruntime, TensorRT or torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stylestream.registry import Registry


class ExportError(Exception):
    """A user-facing export failure: bad input, a missing dependency, or failed verification."""


class VerificationError(ExportError):
    """The exported model disagrees with PyTorch beyond the format's floor; nothing was kept."""

    def __init__(self, message: str, verification: dict[str, Any]):
        super().__init__(message)
        self.verification = verification


# PSNR floors (dB) vs PyTorch FP32 on real images, per numeric precision.
FLOORS: dict[str, float] = {"fp32": 45.0, "fp16": 35.0, "int8": 28.0}
PRECISIONS = tuple(FLOORS)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # file suffix of the artefact; "" for a folder (Triton repository)
    tag: str  # added to the file stem by `--format all`, so every artefact has its own card
    precision: str | None  # None: taken from --precision (tensorrt, triton)
    builder: str  # "module:function" -> build(job) writes job.artifact
    runner: str  # "module:function" -> open_runner(path, device, job_or_None) -> Runner
    needs_calibration: bool = False
    requires: tuple[str, ...] = field(default=())  # "gpu", "tensorrt"
    help: str = ""

    def floor(self, precision: str) -> float:
        return FLOORS[self.precision or precision]

    def resolve(self, ref: str) -> Callable[..., Any]:
        mod, fn = ref.split(":")
        return getattr(importlib.import_module(mod), fn)

    def build(self, job: Any) -> None:
        self.resolve(self.builder)(job)

    def open_runner(self, path: Path, device: str, **kw: Any) -> Any:
        return self.resolve(self.runner)(path, device, **kw)

    def default_path(self, out_dir: Path, stem: str) -> Path:
        return out_dir / f"{stem}{self.tag}{self.suffix}"


FORMATS: Registry[Format] = Registry("export format")

_P = "stylestream.export."


def _add(fmt: Format) -> None:
    FORMATS.add(fmt.name, fmt, fmt.help, suffix=fmt.suffix or "(folder)", floor=_floor_text(fmt))


def _floor_text(fmt: Format) -> str:
    if fmt.precision:
        return f"{FLOORS[fmt.precision]:g} dB"
    return " / ".join(f"{p} {v:g}" for p, v in FLOORS.items()) + " dB"


_add(Format("onnx", ".onnx", "", "fp32", _P + "onnx_export:build_onnx", _P + "runners:ort_runner",
            help="ONNX FP32, opset >= 17, dynamic N/H/W, simplified (onnxslim), onnx.checker clean"))
_add(Format("onnx-fp16", ".onnx", "-fp16", "fp16", _P + "onnx_export:build_onnx_fp16", _P + "runners:ort_runner",
            help="ONNX with FP16 weights/compute, float32 I/O, InstanceNormalization kept FP32"))
_add(Format("onnx-int8", ".onnx", "-int8", "int8", _P + "int8:build_onnx_int8", _P + "runners:ort_runner",
            needs_calibration=True,
            help="ONNX static QDQ INT8 (per-channel S8 weights); needs --calibration images or video"))
_add(Format("tensorrt", ".engine", "-trt", None, _P + "tensorrt:build_engine", _P + "tensorrt:trt_runner",
            requires=("gpu", "tensorrt"),
            help="TensorRT engine (strongly typed, from the ONNX of --precision); NVIDIA GPU + `trt` extra"))
_add(Format("torchscript", ".torchscript", "-torchscript", "fp32", _P + "torchscript:build_torchscript",
            _P + "runners:torchscript_runner", help="traced TorchScript, for C++/mobile (LibTorch)"))
_add(Format("triton", "", "-triton", None, _P + "triton:build_triton", _P + "triton:triton_runner",
            help="Triton Inference Server repository: <name>/config.pbtxt + 1/model.onnx or model.plan"))  # fmt: skip


def format_names() -> list[str]:
    return FORMATS.names()
