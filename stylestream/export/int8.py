"""Static INT8 quantization (ONNX Runtime, QDQ format) from real calibration frames.

The scheme, found by measuring PSNR vs FP32 on real photos (bench/RESULTS.md, section export):
- quantize the convolutions only (per-channel S8 weights, S8 activations, MinMax calibration);
  InstanceNormalization, the residual adds, ReLU, Resize and Pad stay in float: quantizing their
  activations adds error and gains no speed on the ORT CPU EP;
- keep the last convolution (the one feeding the output tanh) in float. It maps 32 channels to the
  3 pre-tanh colour planes, whose wide, skewed range an 8-bit grid cannot hold: quantizing it alone
  costs ~20 dB (naive QDQ ~21 dB vs ~41+ dB with it kept float on a briefly trained johnson net).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stylestream.export.formats import ExportError
from stylestream.export.options import ExportOptions

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob

log = logging.getLogger(__name__)

SCHEME = "QDQ S8S8 per-channel MinMax; Conv only; last Conv (pre-tanh) kept float"


def calibration_batches(options: ExportOptions) -> list[np.ndarray]:
    from stylestream.media import MediaError, fit, load_frames, to_nchw

    if options.calibration is None:
        raise ExportError(
            "INT8 needs calibration data: pass --calibration DIR (a folder of images) or a video file "
            "with frames like the ones the style will see"
        )
    h, w = options.static or options.calibration_size
    try:
        frames = [fit(f, h, w) for f in load_frames(options.calibration, options.calibration_frames)]
    except MediaError as exc:
        raise ExportError(f"--calibration: {exc}") from None
    n = options.batch or 1
    while len(frames) % n:  # a fixed batch size needs whole batches
        frames.append(frames[len(frames) % len(frames)])
    return [to_nchw(frames[i : i + n]) for i in range(0, len(frames), n)]


def _float_convs(model_path: Path) -> list[str]:
    """Convolutions to keep in float: the last one (it feeds the output tanh)."""
    import onnx

    convs = [n.name for n in onnx.load(str(model_path)).graph.node if n.op_type == "Conv"]
    if not convs:
        raise ExportError(f"{model_path.name}: no Conv node found; is this a stylestream network?")
    return convs[-1:]


def quantize_int8(src: Path, dst: Path, options: ExportOptions, workdir: Path) -> dict[str, Any]:
    """Quantize `src` (FP32 ONNX) into `dst`; returns the scheme and PSNR vs FP32 on the
    calibration frames, for the model card."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = calibration_batches(options)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter({"input": b} for b in batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    pre = workdir / "int8-pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)  # shape inference + fusions
    keep_float = _float_convs(pre)
    quantize_static(
        str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv"], nodes_to_exclude=keep_float,
    )  # fmt: skip

    so = ort.SessionOptions()
    so.log_severity_level = 3
    fp32 = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"])
    from stylestream.export.verify import psnr

    values = [psnr(int8.run(None, {"input": b})[0], fp32.run(None, {"input": b})[0]) for b in batches]
    result = {
        "scheme": SCHEME,
        "kept_float": keep_float,
        "calibration": str(options.calibration),
        "calibration_frames": sum(len(b) for b in batches),
        "calibration_size": list(batches[0].shape[2:]),
        "psnr_vs_fp32_calibration_db": {"min": round(min(values), 2), "mean": round(float(np.mean(values)), 2)},
    }
    log.info("INT8: PSNR vs FP32 on %d calibration frames: min %.2f dB, mean %.2f dB",
             result["calibration_frames"], min(values), float(np.mean(values)))  # fmt: skip
    return result


def build_onnx_int8(job: ExportJob) -> None:
    import shutil

    shutil.copyfile(job.onnx_for("int8"), job.artifact)
