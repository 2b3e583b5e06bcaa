"""LiteRT models (NAME.tflite) on CPU through the LiteRT interpreter (ai-edge-litert, XNNPACK delegate):
what an Android or embedded-Linux app runs, here for verification, the benchmark and serving.

The runtime's frames are NCHW; a model whose input is (N, H, W, 3) (stylestream's LiteRT exports) gets
them transposed to NHWC and back. The input size is the model's: a batch larger than the model's runs
in chunks, a frame of another size is a one-line error naming the size."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from stylestream.devices import compute_threads
from stylestream.export.formats import LITERT
from stylestream.runtime.base import Backend, register


@register
class LiteRTBackend(Backend):
    name = "litert"
    help = "a LiteRT / TensorFlow Lite model (NAME.tflite) on CPU, fixed input size, NHWC or NCHW"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        reason = LITERT.reason()
        if reason:
            return reason
        if device != "cpu":
            return f"LiteRT models run on CPU here, not {device}"
        return None

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        from importlib.metadata import version

        from ai_edge_litert.interpreter import Interpreter

        # plugins imports the runtime: imported on use
        from stylestream.plugins.modelfiles import check_tflite, first_line

        check_tflite(self.path)
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=compute_threads())
            self.interpreter.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError variously
            raise ValueError(f"{path}: not a loadable LiteRT model ({first_line(exc)})") from None
        ins, outs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        shape = tuple(int(d) for d in ins[0]["shape"]) if len(ins) == 1 else ()
        out = tuple(int(d) for d in outs[0]["shape"]) if len(outs) == 1 else ()
        self.nhwc = len(shape) == 4 and shape[3] == 3 and shape[1] != 3
        ok = len(shape) == 4 and out == shape and (self.nhwc or shape[1] == 3)
        if not ok or not all(_io_ok(d) for d in (ins[0], outs[0])):
            raise ValueError(f"{path}: not a style model (input {shape}, output {out}; expected one float32 or "
                             "quantized int8/uint8 (N, H, W, 3) or (N, 3, H, W) input and an output of the same "
                             "shape)")  # fmt: skip
        self._in_q, self._out_q = _quantization(ins[0]), _quantization(outs[0])
        n, h, w = (shape[0], shape[1], shape[2]) if self.nhwc else (shape[0], shape[2], shape[3])
        self.shape = (n, 3, h, w)  # as the runtime's frames are: NCHW
        self._in, self._out = ins[0]["index"], outs[0]["index"]
        self._lock = threading.Lock()  # one interpreter: runs must not interleave
        self._version = version("ai-edge-litert")

    def run(self, x: np.ndarray) -> np.ndarray:
        n, _, h, w = self.shape
        if x.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path.name} takes {w}x{h} frames (exported with --static {w}x{h}); "
                             f"got {x.shape[3]}x{x.shape[2]}")  # fmt: skip
        x = x.transpose(0, 2, 3, 1) if self.nhwc else x
        x = np.ascontiguousarray(x, dtype=np.float32)
        pad = -len(x) % n  # whole model batches; the repeated frames are dropped after
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        if self._in_q:  # a quantized input (an INT8 model whose first op took the input's quantization)
            scale, zero, dtype = self._in_q
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        outs = []
        with self._lock:
            for i in range(0, len(x), n):
                self.interpreter.set_tensor(self._in, x[i : i + n])
                self.interpreter.invoke()
                outs.append(self.interpreter.get_tensor(self._out).copy())
        y = np.concatenate(outs)[: len(x) - pad]
        if self._out_q:
            scale, zero, _ = self._out_q
            y = (y.astype(np.float32) - zero) * scale
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if self.nhwc else y

    def describe(self) -> str:
        return f"litert (XNNPACK, cpu, {'NHWC' if self.nhwc else 'NCHW'})"

    def version(self) -> str:
        return f"LiteRT {self._version}"

    def close(self) -> None:
        with self._lock:
            self.interpreter = None  # type: ignore[assignment]


def _io_ok(detail: dict) -> bool:
    """float32, or int8/uint8 with a scale (quantized I/O)."""
    return detail["dtype"] == np.float32 or (detail["dtype"] in (np.int8, np.uint8) and detail["quantization"][0] > 0)


def _quantization(detail: dict) -> tuple[float, int, type] | None:
    """(scale, zero point, dtype) of a quantized input/output; None for float32."""
    if detail["dtype"] == np.float32:
        return None
    scale, zero = detail["quantization"]
    return float(scale), int(zero), detail["dtype"]
