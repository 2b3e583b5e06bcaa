"""LiteRT (formerly TensorFlow Lite) models (NAME.tflite) for Android and embedded Linux, through the
PyTorch -> LiteRT converter (litert-torch, formerly ai-edge-torch): FP32, FP16 weights (ai-edge-quantizer
float casting) or INT8 (PT2E static quantization, calibrated on --calibration frames).

The file takes and returns NHWC (N, H, W, 3) float32 RGB in [0, 255], the layout of camera frames and
bitmaps on the device; the card's interface says so. The input size is fixed (--static WxH): the
converter cannot export these nets with dynamic H and W."""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import numpy as np

from stylestream.export.formats import ExportError
from stylestream.plugins.modelfiles import first_line

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob

log = logging.getLogger(__name__)

INT8_SCHEME = "PT2E static: symmetric per-channel INT8 weights, per-tensor INT8 activations, MinMax"
FP16_RECIPE = [{"regex": ".*", "operation": "*", "algorithm_key": "float_casting",
                "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                              "compute_precision": "FLOAT", "explicit_dequantize": True}}]  # fmt: skip


def _nhwc(job: ExportJob) -> tuple[Any, Any]:
    """(the model with NHWC input and output, an NHWC example at the --static size)."""
    import litert_torch
    import torch

    h, w = job.options.static  # type: ignore[misc]  # a fixed_size row: preflight checked
    example = torch.rand(job.options.batch or 1, h, w, 3, generator=torch.Generator().manual_seed(0)) * 255
    return litert_torch.to_channel_last_io(job.model.eval(), args=[0], outputs=[0]), example


def _convert(job: ExportJob, precision: str) -> None:
    import litert_torch
    import torch

    model, example = _nhwc(job)
    path = job.workdir / "fp32.tflite" if precision == "fp16" else job.artifact
    try:
        with torch.no_grad():
            if precision == "int8":
                converted, quant_config = _quantize(job, model, example)
                edge = litert_torch.convert(converted, (example,), quant_config=quant_config)
            else:
                edge = litert_torch.convert(model, (example,))
        edge.export(str(path))
        if precision == "fp16":
            from ai_edge_quantizer import quantizer

            fp16 = quantizer.Quantizer(str(path))
            fp16.load_quantization_recipe(FP16_RECIPE)
            fp16.quantize().export_model(str(job.artifact), overwrite=True)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the converter stack raises many kinds; one line says why
        raise ExportError(f"LiteRT could not convert the model ({first_line(exc)})") from None
    job.info["interface"] = _interface(job)
    job.info["litert"] = {"converter": f"litert-torch {version('litert-torch')}", "weights": precision}


def _interface(job: ExportJob) -> dict[str, Any]:
    """The card's interface: what the file itself declares (an INT8 model may take int8 input)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(job.artifact))
    out: dict[str, Any] = {"layout": "NHWC", "color": "RGB", "range": [0, 255]}
    for key, d in (("input", it.get_input_details()[0]), ("output", it.get_output_details()[0])):
        scale, zero = d["quantization"]
        out[key] = {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                    **({"scale": float(scale), "zero_point": int(zero)} if scale else {})}  # fmt: skip
    return out


def _quantize(job: ExportJob, model: Any, example: Any) -> tuple[Any, Any]:
    """PT2E static INT8: annotate, calibrate on real frames (NHWC), convert."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from stylestream.export.int8 import calibration_batches
    from stylestream.export.verify import psnr

    batches = [torch.from_numpy(b).permute(0, 2, 3, 1).contiguous() for b in calibration_batches(job.options)]
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
    for b in batches:
        prepared(b)
    converted = convert_pt2e(prepared, fold_quantize=False)
    values = [psnr(converted(b).numpy(), model(b).numpy()) for b in batches]
    job.info["quantization"] = {
        "scheme": INT8_SCHEME, "calibration": str(job.options.calibration),
        "calibration_frames": sum(len(b) for b in batches), "calibration_size": list(batches[0].shape[1:3]),
        "psnr_vs_fp32_calibration_db": {"min": round(min(values), 2), "mean": round(float(np.mean(values)), 2)},
    }  # fmt: skip
    return converted, QuantConfig(pt2e_quantizer=quantizer)


def build_litert(job: ExportJob) -> None:
    _convert(job, "fp32")


def build_litert_fp16(job: ExportJob) -> None:
    _convert(job, "fp16")


def build_litert_int8(job: ExportJob) -> None:
    _convert(job, "int8")

