"""OpenVINO IR (NAME.xml + NAME.bin) for Intel CPUs, iGPUs and NPUs: FP32, FP16 weights, or INT8 by
NNCF post-training quantization on --calibration frames.

Converted from the job's FP32 ONNX (the graph every ONNX format shares; dynamic N, H, W unless
--batch/--static fix them). Two OpenVINO defaults would silently lower precision, so both are set:
`save_model` compresses weights to FP16 unless told not to, and the CPU plugin computes in bf16 on
CPUs with bf16 (AMX, AVX512-BF16) unless compile_model asks for f32 — a hint stored in the IR is
ignored. So the IR carries our own rt_info key INFERENCE_KEY, which the openvino runtime backend reads
to compile FP32 exports in f32 and the others in the device's fast precision."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from stylestream.export.formats import ExportError
from stylestream.plugins.modelfiles import first_line

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob

log = logging.getLogger(__name__)

INFERENCE_KEY = "stylestream_inference_precision"  # rt_info: "f32" | "device" (the device's fast default)
INT8_SCHEME = "NNCF PTQ: symmetric per-channel INT8 weights and activations, MinMax, fast bias correction"


def _convert(job: ExportJob) -> Any:
    import openvino as ov

    try:
        return ov.convert_model(str(job.onnx_fp32))
    except Exception as exc:  # noqa: BLE001 - the converter raises several kinds; one line says why
        raise ExportError(f"OpenVINO could not convert the ONNX graph ({first_line(exc)})") from None


def _save(model: Any, job: ExportJob, weights: str, inference: str) -> None:
    """Write job.artifact (.xml) and its .bin; record how the runtime is to compile it (`inference`:
    "f32" or "device")."""
    import openvino as ov

    model.set_rt_info(inference, INFERENCE_KEY)
    ov.save_model(model, str(job.artifact), compress_to_fp16=weights == "fp16")
    job.info["openvino"] = {
        "version": ov.__version__.split("-")[0], "weights": weights,
        "inference_precision": "f32" if inference == "f32" else
                               "the device's default (bf16 on CPUs with AMX/AVX512-BF16, f16 on GPU/NPU)",
    }  # fmt: skip


def build_openvino(job: ExportJob) -> None:
    _save(_convert(job), job, "fp32", "f32")


def build_openvino_fp16(job: ExportJob) -> None:
    _save(_convert(job), job, "fp16", "device")


def build_openvino_int8(job: ExportJob) -> None:
    """NNCF post-training quantization of the FP32 IR on the calibration frames; the card gets the
    scheme and the PSNR vs FP32 on those frames (both compiled in f32, so only quantization is measured)."""
    import nncf
    import openvino as ov

    from stylestream.export.int8 import calibration_batches
    from stylestream.export.verify import psnr

    batches = calibration_batches(job.options)
    model = _convert(job)
    try:
        quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=sum(len(b) for b in batches),
                                  fast_bias_correction=True)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - NNCF raises several kinds; one line says why
        raise ExportError(f"NNCF could not quantize the model ({first_line(exc)})") from None
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    fp32_run, int8_run = (core.compile_model(m, "CPU", f32) for m in (model, quantized))
    values = [psnr(int8_run(b)[0], fp32_run(b)[0]) for b in batches]
    _save(quantized, job, "int8", "device")
    job.info["quantization"] = {
        "scheme": INT8_SCHEME, "tool": f"nncf {nncf.__version__}", "calibration": str(job.options.calibration),
        "calibration_frames": sum(len(b) for b in batches), "calibration_size": list(batches[0].shape[2:]),
        "psnr_vs_fp32_calibration_db": {"min": round(min(values), 2), "mean": round(float(np.mean(values)), 2)},
    }  # fmt: skip
    log.info("OpenVINO INT8: PSNR vs FP32 on %d calibration frames: min %.2f dB, mean %.2f dB",
             len(values), min(values), float(np.mean(values)))  # fmt: skip
