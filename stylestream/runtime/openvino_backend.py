"""OpenVINO IR (NAME.xml + NAME.bin) on a CPU, or on an Intel GPU/NPU.

Devices: the runtime's `cpu` is OpenVINO's CPU (any x86/ARM CPU, Intel or not). torch's device names
have no Intel GPU or NPU, so those are chosen with $STYLESTREAM_OPENVINO_DEVICE (GPU, GPU.1, NPU,
AUTO, AUTO:GPU,CPU), which replaces CPU when the runtime device is cpu; the backend also takes
OpenVINO's own names (gpu, npu, auto) as its device directly.

Precision: an export's IR says how to compile it (stylestream.export.openvino.INFERENCE_KEY): FP32
exports in f32, FP16/INT8 ones in the device's fast default (bf16 on CPUs with AMX or AVX512-BF16);
an IR from elsewhere is compiled in f32. describe() says which precision ran."""

from __future__ import annotations

import logging
import os
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.devices import cache_dir, compute_threads
from stylestream.export.formats import OPENVINO
from stylestream.runtime.base import Backend, BackendUnavailable, register

log = logging.getLogger(__name__)

ENV_DEVICE = "STYLESTREAM_OPENVINO_DEVICE"
_OV_DEVICE = re.compile(r"^(CPU|GPU(\.\d+)?|NPU|AUTO(:[A-Z0-9.,]+)?)$")
CHECK_SHAPE = (1, 3, 64, 48)  # shape inference at this size must give the same output shape
MAX_VALUES_PER_PIXEL = 512  # as for ONNX (onnx_check): no tensor far larger than the frame


def openvino_device(device: str) -> str | None:
    """The OpenVINO device for a runtime device name: cpu -> CPU (or $STYLESTREAM_OPENVINO_DEVICE),
    gpu/gpu.N/npu/auto -> GPU/GPU.N/NPU/AUTO; None for devices OpenVINO does not drive (cuda, mps)."""
    name = device.strip()
    if name.lower() == "cpu":
        name = os.environ.get(ENV_DEVICE, "").strip() or "CPU"
    name = name.upper()
    return name if _OV_DEVICE.match(name) else None


@lru_cache(maxsize=1)
def _available_devices() -> tuple[str, ...]:
    import openvino as ov

    return tuple(ov.Core().available_devices)


@register
class OpenVINOBackend(Backend):
    name = "openvino"
    help = "an OpenVINO IR (NAME.xml + NAME.bin) on CPU, or an Intel GPU/NPU via $STYLESTREAM_OPENVINO_DEVICE"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        reason = OPENVINO.reason()
        if reason:
            return reason
        ov_device = openvino_device(device)
        if ov_device is None:
            env = os.environ.get(ENV_DEVICE)
            return (f"{ENV_DEVICE}={env!r} is not an OpenVINO device (CPU, GPU, GPU.N, NPU, AUTO)" if env and
                    device == "cpu" else f"OpenVINO runs on CPU, Intel GPU or NPU, not {device}")  # fmt: skip
        base = ov_device.split(":")[0]
        if base != "AUTO" and base not in _available_devices():
            return f"OpenVINO sees no {ov_device} device here (it sees {', '.join(_available_devices())})"
        return None

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        import openvino as ov

        # plugins imports the runtime: imported on use
        from stylestream.plugins.modelfiles import check_openvino_ir, first_line

        # before OpenVINO parses a byte: the XML's structure, and the weights inside the plugin folder
        weights = check_openvino_ir(self.path, self.root)
        ov_device = openvino_device(device)
        if ov_device is None:
            raise BackendUnavailable(f"{path}: {self.unavailable_reason(device)}")
        self.ov_device = ov_device
        core = ov.Core()
        try:
            model = core.read_model(str(self.path), str(weights) if weights else None)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with a long trace
            raise ValueError(f"{path}: not a loadable OpenVINO IR ({first_line(exc)})") from None
        _check_style(model, self.path)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.ov_device == "CPU":
            config["INFERENCE_NUM_THREADS"] = compute_threads()
        if _inference_precision(model) == "f32" and self.ov_device.split(".")[0] in ("CPU", "GPU"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if self.ov_device != "CPU":  # GPU/NPU compile for seconds: keep the compiled blobs
            config["CACHE_DIR"] = str(cache_dir("openvino"))
        try:
            self.compiled = core.compile_model(model, self.ov_device, config)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{path}: OpenVINO cannot compile it for {self.ov_device} ({first_line(exc)})") from None
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            self.precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)  # f32, bf16
        except Exception:  # noqa: BLE001 - NPU/AUTO do not report it
            self.precision = "device default"
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: runs must not interleave
        self._version = ov.__version__.split("-")[0]
        log.info("%s: OpenVINO %s on %s, %s", self.path.name, self._version, self.ov_device, self.precision)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            self.request.infer({0: x})
            return self.request.get_output_tensor(0).data.copy()

    def describe(self) -> str:
        return f"openvino ({self.ov_device}, {self.precision})"

    def version(self) -> str:
        return f"OpenVINO {self._version}"

    def close(self) -> None:
        with self._lock:
            self.request = self.compiled = None  # type: ignore[assignment]


def _inference_precision(model: Any) -> str:
    from stylestream.export.openvino import INFERENCE_KEY

    if model.has_rt_info(INFERENCE_KEY):
        value = str(model.get_rt_info(INFERENCE_KEY).astype(str))
        if value in ("f32", "device"):
            return value
    return "f32"  # an IR from elsewhere: exact first


def _check_style(model: Any, path: Path) -> None:
    """One float32 (N, 3, H, W) input -> one output of the same shape, with no tensor far larger than the
    frame, by OpenVINO's shape inference at CHECK_SHAPE (dynamic dims) on a copy: nothing runs."""
    import openvino as ov

    from stylestream.plugins.modelfiles import first_line

    why = None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        why = f"{len(model.inputs)} input(s) and {len(model.outputs)} output(s)"
    elif model.inputs[0].get_element_type() != ov.Type.f32 or model.inputs[0].get_partial_shape().rank.get_length() != 4:
        why = f"input {model.inputs[0].get_element_type()} {model.inputs[0].get_partial_shape()}"
    if why is None:
        declared = model.inputs[0].get_partial_shape()
        shape = [d.get_length() if d.is_static else c for d, c in zip(declared, CHECK_SHAPE)]
        probe = model.clone()
        try:
            probe.reshape({probe.inputs[0]: ov.PartialShape(shape)})
        except Exception as exc:  # noqa: BLE001
            why = f"shape inference fails at {'x'.join(map(str, shape))} ({first_line(exc)})"
        else:
            out = probe.outputs[0].get_partial_shape()
            frame = shape[0] * shape[2] * shape[3]
            biggest = max((int(np.prod(o.get_shape(), dtype=np.int64)) for op in probe.get_ordered_ops()
                           if op.get_type_name() != "Constant"  # weights: sized by the .bin check
                           for o in op.outputs() if o.get_partial_shape().is_static), default=0)  # fmt: skip
            if not out.is_static or list(out.to_shape()) != shape:
                why = f"the output is {out} for a {'x'.join(map(str, shape))} input"
            elif biggest > MAX_VALUES_PER_PIXEL * frame:
                why = f"a tensor holds {biggest // frame} values per input pixel (at most {MAX_VALUES_PER_PIXEL})"
    if why is not None:
        raise ValueError(f"{path}: not a style model: {why}; expected one float32 (N, 3, H, W) input -> "
                         "one output of the same shape")  # fmt: skip
