"""The table of model formats (the ultralytics exporter's idea). One row per format drives:

- `stylestream export --format` (choices, help) and the export itself: the row's `export` function,
  what it `requires` (pip extra + import names -> one "pip install stylestream[X]" line), calibration;
- verification and the format benchmark: the runtime `backend` that runs the file, the PSNR floor;
- serving: plugin discovery and `stylize --style FILE` take the file `suffixes` and the `backend`
  that serves each from here (the `pytorch` row is the training output: served, never exported).

Functions are named as "module:function" and imported on use, so reading the table (CLI help,
discovery) never imports onnxruntime, TensorRT or torch."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stylestream.registry import Registry

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob
    from stylestream.export.options import ExportOptions


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


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install counts as no GPU
        return False


@dataclass(frozen=True)
class Requirement:
    """What a format (or backend) needs beyond the base install: the pip extra that provides the
    `imports`, and whether it needs a CUDA GPU."""

    extra: str
    imports: tuple[str, ...]
    gpu: bool = False

    def missing(self) -> list[str]:
        """What this machine lacks, in words; empty when everything is here. Never imports the packages."""
        out = ["an NVIDIA GPU (CUDA reports no device)"] if self.gpu and not _cuda_available() else []
        return out + [f"the {m} Python package" for m in self.imports if importlib.util.find_spec(m) is None]

    def hint(self) -> str:
        gpu = "an NVIDIA GPU with CUDA and " if self.gpu else ""
        return f"it needs {gpu}`pip install stylestream[{self.extra}]`"

    def reason(self) -> str | None:
        """'missing X and Y; it needs `pip install stylestream[E]`', or None when nothing is missing: the
        one line export and the runtime backends give."""
        missing = self.missing()
        return f"missing {' and '.join(missing)}; {self.hint()}" if missing else None

    def check(self, what: str) -> None:
        """Raise ExportError naming everything missing and what to install."""
        reason = self.reason()
        if reason:
            raise ExportError(f"{what} is not possible here: {reason}")


TENSORRT = Requirement("trt", ("tensorrt",), gpu=True)
# `--triton-backend`: the Triton backend a repository is written for (export/triton.py writes each)
TRITON_BACKENDS = ("onnxruntime", "tensorrt", "python")
# edge formats: each in its own extra, so the core install stays lean
OPENVINO = Requirement("openvino", ("openvino",))
OPENVINO_INT8 = Requirement("openvino", ("openvino", "nncf"))  # NNCF post-training quantization
EXECUTORCH = Requirement("executorch", ("executorch",))
LITERT_EXPORT = Requirement("litert", ("litert_torch", "ai_edge_litert"))
LITERT = Requirement("litert", ("ai_edge_litert",))  # the interpreter that runs .tflite files
NCNN_EXPORT = Requirement("ncnn", ("pnnx", "ncnn"))
NCNN = Requirement("ncnn", ("ncnn",))
COREML = Requirement("coreml", ("coremltools",))  # converts anywhere; its runtime backend runs only on macOS


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]  # the first is what export writes; all are served; () for a folder
    tag: str  # added to the file stem by `--format all`, so every artefact has its own card
    precision: str | None  # None: taken from --precision (tensorrt, triton)
    export: str | None  # "module:function": build(job) writes job.artifact; None: not an export target
    backend: str | None  # the runtime backend that verifies and serves it; None: stylestream does not serve it
    requires: Requirement | None = None
    calibration: bool = False  # needs --calibration data
    check: str | None = None  # "module:function"(options): preflight of the options only this format reads
    verify_with: str | None = None  # "module:function"(artifact, options) -> (backend, file), when the
    # artefact is not itself a file `backend` runs (a Triton repository)
    marker: str = ""  # the file inside that identifies a folder format, or a folder with the suffix (.mlpackage)
    not_served: str = ""  # for backend None: the one-line why, and what to do instead
    companions: tuple[str, ...] = ()  # suffixes of files that belong beside the main one (OpenVINO's .bin):
    # written, moved, sized and removed with it
    fixed_size: bool = False  # exports one input size (--static required); the benchmark exports it per size
    runs_on: str = ""  # where `backend` runs, when not everywhere the format exports (Core ML: "macOS");
    # elsewhere the builder's structural check is all there is, and the card says verification was not run
    help: str = ""

    @property
    def suffix(self) -> str:
        return self.suffixes[0] if self.suffixes else ""

    @property
    def is_folder(self) -> bool:
        return not self.suffixes

    def floor(self, precision: str) -> float:
        return FLOORS[self.precision or precision]

    @staticmethod
    def resolve(ref: str) -> Callable[..., Any]:
        mod, fn = ref.split(":")
        return getattr(importlib.import_module(mod), fn)

    def preflight(self, options: ExportOptions) -> None:
        """What this format needs from the machine and from `options`; ExportError says what is missing."""
        if self.export is None:
            raise ExportError(f"{self.name} is not an export format; choose one of: {', '.join(format_names())}")
        if self.requires is not None:
            self.requires.check(f"{self.name} export")
        if self.fixed_size and options.static is None:
            raise ExportError(f"{self.name} has a fixed input size: pass --static WxH (the camera's resolution, "
                              "e.g. --static 640x480)")  # fmt: skip
        if self.check:
            self.resolve(self.check)(options)

    def build(self, job: ExportJob) -> None:
        assert self.export is not None, "preflight refuses formats without an export function"
        self.resolve(self.export)(job)

    def verify_target(self, artifact: Path, options: ExportOptions) -> tuple[str, Path]:
        """(runtime backend, file) that verification runs: the artefact itself, or the file in it that
        its server loads (a Triton repository's 1/model.onnx or model.plan)."""
        if self.verify_with:
            return self.resolve(self.verify_with)(artifact, options)
        assert self.backend is not None, f"format {self.name} needs a backend or verify_with"
        return self.backend, artifact

    def not_run_reason(self, options: ExportOptions) -> str | None:
        """Why this machine cannot run exports of a `runs_on` row (its backend's reason: Core ML off macOS),
        so verification and the benchmark do not run them; None where they run (and for every other row,
        whose preflight already refuses what is missing)."""
        if not self.runs_on or self.backend is None:
            return None
        from stylestream.runtime import BACKENDS  # the runtime imports this table: imported on use

        return BACKENDS[self.backend].unavailable_reason(options.device)

    def default_path(self, out_dir: Path, stem: str) -> Path:
        return out_dir / f"{stem}{self.tag}{self.suffix}"

    def files(self, path: Path) -> list[Path]:
        """The files one export of this format consists of: `path` and its companions (mosaic.xml ->
        mosaic.xml, mosaic.bin)."""
        return [Path(path), *(Path(path).with_suffix(s) for s in self.companions)]


FORMATS: Registry[Format] = Registry("format")

_P = "stylestream.export."


def _add(fmt: Format) -> None:
    FORMATS.add(fmt.name, fmt, fmt.help, suffix=", ".join(fmt.suffixes) or "(folder)", floor=_floor_text(fmt),
                backend=fmt.backend or "-")  # fmt: skip


def _floor_text(fmt: Format) -> str:
    if fmt.export is None:
        return "-"
    if fmt.precision:
        return f"{FLOORS[fmt.precision]:g} dB"
    return " / ".join(f"{p} {v:g}" for p, v in FLOORS.items()) + " dB"


# fmt: off
_add(Format("pytorch", (".pt",), "", "fp32", None, "torch",
            help="the model.pt `stylestream train` writes: the source of every export (served, not exported)"))
_add(Format("onnx", (".onnx",), "", "fp32", _P + "onnx_export:build_onnx", "onnxruntime",
            help="ONNX FP32, opset >= 17, dynamic N/H/W, simplified (onnxslim), onnx.checker clean"))
_add(Format("onnx-fp16", (".onnx",), "-fp16", "fp16", _P + "onnx_export:build_onnx_fp16", "onnxruntime",
            help="ONNX with FP16 weights/compute, float32 I/O, InstanceNormalization kept FP32"))
_add(Format("onnx-int8", (".onnx",), "-int8", "int8", _P + "int8:build_onnx_int8", "onnxruntime",
            calibration=True,
            help="ONNX static QDQ INT8 (per-channel S8 weights); needs --calibration images or video"))
_add(Format("tensorrt", (".engine",), "-trt", None, _P + "tensorrt:build_engine", "tensorrt", requires=TENSORRT,
            help="TensorRT engine (strongly typed, from the ONNX of --precision); NVIDIA GPU + `trt` extra"))
_add(Format("torchscript", (".torchscript", ".ts"), "-torchscript", "fp32", _P + "torchscript:build_torchscript",
            "torchscript", help="traced, frozen TorchScript, for LibTorch (C++) / mobile; served on CPU/CUDA"))
_add(Format("triton", (), "-triton", None, _P + "triton:build_triton", None,
            check=_P + "triton:preflight", verify_with=_P + "triton:served_file", marker="config.pbtxt",
            not_served="a Triton model repository is served by Triton Inference Server, not by stylestream: "
                       "start tritonserver --model-repository on its parent folder and pass --triton-url "
                       "grpc://HOST:8001 (its models become styles), or export the style with --format onnx "
                       "to serve it here",
            help="Triton Inference Server repository: <name>/config.pbtxt + 1/model.onnx, model.plan, or "
                 "model.onnx + model.py (--triton-backend)"))
_add(Format("openvino", (".xml",), "-openvino", "fp32", _P + "openvino:build_openvino", "openvino",
            requires=OPENVINO, companions=(".bin",),
            help="OpenVINO IR (.xml + .bin), FP32 weights, run in f32; Intel CPU/GPU/NPU; `openvino` extra"))
_add(Format("openvino-fp16", (".xml",), "-openvino-fp16", "fp16", _P + "openvino:build_openvino_fp16",
            "openvino", requires=OPENVINO, companions=(".bin",),
            help="OpenVINO IR with FP16 weights, run in the device's fast precision (bf16 on AVX512-BF16/AMX CPUs)"))
_add(Format("openvino-int8", (".xml",), "-openvino-int8", "int8", _P + "openvino:build_openvino_int8",
            "openvino", requires=OPENVINO_INT8, calibration=True, companions=(".bin",),
            help="OpenVINO IR, INT8 by NNCF post-training quantization on --calibration frames"))
_add(Format("executorch", (".pte",), "-executorch", "fp32", _P + "executorch:build_executorch", "executorch",
            requires=EXECUTORCH, fixed_size=True,
            help="ExecuTorch program lowered to XNNPACK (Android/iOS/embedded Linux), FP32; needs --static"))
_add(Format("executorch-int8", (".pte",), "-executorch-int8", "int8", _P + "executorch:build_executorch_int8",
            "executorch", requires=EXECUTORCH, calibration=True, fixed_size=True,
            help="ExecuTorch/XNNPACK, INT8 by the PT2E quantizer on --calibration frames; needs --static"))
_add(Format("litert", (".tflite",), "-litert", "fp32", _P + "litert:build_litert", "litert", requires=LITERT_EXPORT,
            fixed_size=True,
            help="LiteRT (TensorFlow Lite) model, NHWC I/O, FP32, via litert-torch; needs --static"))
_add(Format("litert-fp16", (".tflite",), "-litert-fp16", "fp16", _P + "litert:build_litert_fp16", "litert",
            requires=LITERT_EXPORT, fixed_size=True,
            help="LiteRT with FP16 weights (float casting), NHWC I/O; needs --static"))
_add(Format("litert-int8", (".tflite",), "-litert-int8", "int8", _P + "litert:build_litert_int8", "litert",
            requires=LITERT_EXPORT, calibration=True, fixed_size=True,
            help="LiteRT, INT8 by PT2E static quantization on --calibration frames, NHWC I/O; needs --static"))
_add(Format("ncnn", (".param",), "-ncnn", "fp16", _P + "ncnn:build_ncnn", "ncnn", requires=NCNN_EXPORT,
            fixed_size=True, companions=(".bin",),
            help="ncnn model (.param + .bin, FP16 weight storage) through pnnx; needs --static"))
_add(Format("coreml", (".mlpackage",), "-coreml", "fp16", _P + "coreml:build_coreml", "coreml", requires=COREML,
            marker="Manifest.json", runs_on="macOS",
            help="Core ML ML Program (.mlpackage folder), FP16, flexible H x W; verified on macOS only"))
_add(Format("coreml-fp32", (".mlpackage",), "-coreml-fp32", "fp32", _P + "coreml:build_coreml_fp32", "coreml",
            requires=COREML, marker="Manifest.json", runs_on="macOS",
            help="Core ML ML Program computed in FP32 (CPU/GPU; the Neural Engine runs FP16 only)"))
# fmt: on


def export_formats() -> list[Format]:
    """The rows `stylestream export --format` accepts, in table order."""
    return [e.obj for e in FORMATS if e.obj.export is not None]


def format_names() -> list[str]:
    return [f.name for f in export_formats()]


def served_suffixes() -> dict[str, Format]:
    """File suffix -> the first row with that suffix that a runtime backend serves ('.onnx' -> onnx)."""
    out: dict[str, Format] = {}
    for e in FORMATS:
        for suffix in e.obj.suffixes if e.obj.backend else ():
            out.setdefault(suffix, e.obj)
    return out


def served_by(backend: str) -> list[str]:
    """The format keys (`served_suffixes` rows) whose files `backend` runs."""
    return sorted({f.name for f in served_suffixes().values() if f.backend == backend})


def format_of(path: Path) -> Format | None:
    """The row a model file or folder belongs to: by suffix, or a folder by its marker file (and its
    suffix, for rows with one: NAME.mlpackage/Manifest.json); None when it is neither (rows stylestream
    does not serve are returned too, for their message)."""
    path = Path(path)
    if path.is_dir():
        return next((e.obj for e in FORMATS if e.obj.marker and (path / e.obj.marker).is_file()
                     and (not e.obj.suffixes or path.suffix in e.obj.suffixes)), None)  # fmt: skip
    return next((e.obj for e in FORMATS if path.suffix in e.obj.suffixes), None)


def served_suffix_text() -> str:
    """'.pt, .onnx, .engine, .torchscript or .ts', for messages."""
    s = list(served_suffixes())
    return ", ".join(s[:-1]) + f" or {s[-1]}" if len(s) > 1 else "".join(s)
