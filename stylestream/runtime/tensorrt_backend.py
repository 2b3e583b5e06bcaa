"""Serialized TensorRT engines (NAME.engine) on a CUDA GPU, run on tensors owned by PyTorch (no
other CUDA bindings needed)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.export.formats import TENSORRT
from stylestream.runtime.base import Backend, register


def engine_key() -> dict[str, str]:
    """What an engine is valid for: the GPU model, its compute capability, the TensorRT version."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}",
            "tensorrt": trt.__version__}  # fmt: skip


@register
class TensorRTBackend(Backend):
    name = "tensorrt"
    help = "a serialized TensorRT engine (NAME.engine) on a CUDA GPU"
    gpu_only = True

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        reason = TENSORRT.reason()
        if reason:
            return reason
        if not device.startswith("cuda"):
            return "TensorRT engines run only on a CUDA GPU"
        return None

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        import tensorrt as trt
        import torch

        self._torch = torch
        self._trt_version = trt.__version__
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ValueError(f"{path}: TensorRT could not load this engine; engines only run on the GPU model and "
                             f"TensorRT version that built them (this is {engine_key()}); rebuild it with "
                             "`stylestream export`")  # fmt: skip
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) != mode)
        self.in_dtype = self._torch_dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.out_dtype = self._torch_dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.context = self.engine.create_execution_context()
        self._lock = threading.Lock()  # one execution context: runs must not interleave
        self._done: Any = None  # CUDA event after the last enqueued execution

    def _torch_dtype(self, np_dtype: Any) -> Any:
        return {np.float32: self._torch.float32, np.float16: self._torch.float16}[np.dtype(np_dtype).type]

    def run_tensor(self, x: Any) -> Any:
        """Enqueued on the caller's current CUDA stream without waiting for it (the engine's tensor path
        overlaps batches); an execution on another stream first waits for the previous one, since one
        execution context must not run twice at once."""
        torch = self._torch
        x = x.to(self.device, self.in_dtype).contiguous()
        stream = torch.cuda.current_stream(x.device)
        with self._lock:
            if self._done is not None:
                stream.wait_event(self._done)
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.out_dtype,
                              device=x.device)  # fmt: skip
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"{self.path}: TensorRT execution failed for input shape {tuple(x.shape)} "
                                   "(outside the engine's optimization profile?)")  # fmt: skip
            self._done = torch.cuda.Event()
            self._done.record(stream)
        return out.float()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_tensor(self._torch.from_numpy(np.ascontiguousarray(x))).cpu().numpy()

    def describe(self) -> str:
        return f"tensorrt ({self.device})"

    def version(self) -> str:
        return f"TensorRT {self._trt_version}"

    def close(self) -> None:
        with self._lock:
            if self._done is not None:  # an execution may still run on the GPU
                self._done.synchronize()
            self.context = self.engine = None
