"""ExecuTorch programs (NAME.pte, XNNPACK) on CPU, through ExecuTorch's Python runtime: what an Android or
embedded-Linux app runs, here for verification, the benchmark and serving.

A program has a fixed input shape (stylestream.export.executorch); a batch larger than the program's
runs in chunks of its batch size, and a frame of another size is a one-line error naming the size."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from stylestream.export.formats import EXECUTORCH
from stylestream.runtime.base import Backend, register

MAX_PLANNED_BYTES = 4 * 2**30  # activation memory a program may plan; the runtime allocates it on load


@register
class ExecuTorchBackend(Backend):
    name = "executorch"
    help = "an ExecuTorch program (NAME.pte, XNNPACK) on CPU, fixed input size"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        reason = EXECUTORCH.reason()
        if reason:
            return reason
        if device != "cpu":
            return f"ExecuTorch programs (XNNPACK) run on CPU here, not {device}"
        return None

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        from importlib.metadata import version

        import torch
        from executorch.exir._serialize._program import deserialize_pte_binary
        from executorch.runtime import Runtime, Verification

        # plugins imports the runtime: imported on use
        from stylestream.plugins.modelfiles import check_pte, first_line

        check_pte(self.path)
        data = self.path.read_bytes()
        try:  # parsed in Python first: the memory plan is what the runtime allocates on load
            parsed = deserialize_pte_binary(data)
            plans = getattr(parsed, "program", parsed).execution_plan
        except Exception as exc:  # noqa: BLE001 - a corrupt flatbuffer raises anything
            raise ValueError(f"{path}: not an ExecuTorch program ({first_line(exc)})") from None
        forward = next((p for p in plans if p.name == "forward"), None)
        if forward is None:
            raise ValueError(f"{path}: not a style model (no forward method)")
        planned = sum(forward.non_const_buffer_sizes)
        if planned > MAX_PLANNED_BYTES:
            raise ValueError(f"{path}: not a style model (it plans {planned / 2**30:.1f} GiB of activations; "
                             f"at most {MAX_PLANNED_BYTES // 2**30} GiB)")  # fmt: skip
        self._torch = torch
        try:
            program = Runtime.get().load_program(data, verification=Verification.InternalConsistency)
            self.method = program.load_method("forward")
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{path}: not a loadable ExecuTorch program ({first_line(exc)})") from None
        meta = self.method.metadata
        shape = tuple(meta.input_tensor_meta(0).sizes()) if meta.num_inputs() == 1 else ()
        out = tuple(meta.output_tensor_meta(0).sizes()) if meta.num_outputs() == 1 else ()
        if len(shape) != 4 or shape[1] != 3 or out != shape:
            raise ValueError(f"{path}: not a style model (input {shape}, output {out}; expected one "
                             "(N, 3, H, W) input and an output of the same shape)")  # fmt: skip
        self.shape = shape
        self._program = program
        self._lock = threading.Lock()
        self._version = version("executorch")

    def run(self, x: np.ndarray) -> np.ndarray:
        n, _, h, w = self.shape
        if x.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path.name} takes {w}x{h} frames (exported with --static {w}x{h}); "
                             f"got {x.shape[3]}x{x.shape[2]}")  # fmt: skip
        x = np.ascontiguousarray(x, dtype=np.float32)
        pad = -len(x) % n  # whole program batches; the repeated frames are dropped after
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        outs = []
        with self._lock:
            for i in range(0, len(x), n):
                outs.append(self.method.execute([self._torch.from_numpy(x[i : i + n])])[0].numpy().copy())
        return np.concatenate(outs)[: len(x) - pad]

    def describe(self) -> str:
        return "executorch (XNNPACK, cpu)"

    def version(self) -> str:
        return f"ExecuTorch {self._version}"

    def close(self) -> None:
        with self._lock:
            self.method = self._program = None  # type: ignore[assignment]
