"""ncnn models (NAME.param + NAME.bin) on CPU through the ncnn Python binding: what an Android or
embedded-Linux app runs, here for verification, the benchmark and serving. Frames run one by one
(ncnn's extractor takes one image); a model whose Input layer declares its size (stylestream's ncnn
exports) refuses other sizes with one line."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from stylestream.devices import compute_threads
from stylestream.export.formats import NCNN
from stylestream.runtime.base import Backend, register

_INPUT_SIZE = re.compile(r"^Input\s.*\b0=(\d+)\s+1=(\d+)", re.MULTILINE)


@register
class NcnnBackend(Backend):
    name = "ncnn"
    help = "an ncnn model (NAME.param + NAME.bin) on CPU, fixed input size"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        reason = NCNN.reason()
        if reason:
            return reason
        if device != "cpu":
            return f"ncnn models run on CPU here, not {device}"
        return None

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        from importlib.metadata import version

        import ncnn

        # plugins imports the runtime: imported on use
        from stylestream.plugins.modelfiles import check_ncnn_param

        weights = check_ncnn_param(self.path, self.root)  # before ncnn's parser reads a byte
        size = _INPUT_SIZE.search(self.path.read_text(encoding="utf-8", errors="replace"))
        self.size = (int(size[2]), int(size[1])) if size else None  # (H, W)
        self._ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = compute_threads()
        if self.net.load_param(str(self.path)) != 0 or self.net.load_model(str(weights)) != 0:
            raise ValueError(f"{path}: not a loadable ncnn model (ncnn refused the .param or its .bin)")
        ins, outs = self.net.input_names(), self.net.output_names()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"{path}: not a style model ({len(ins)} inputs, {len(outs)} outputs)")
        self._in, self._out = ins[0], outs[0]
        self._lock = threading.Lock()
        self._version = version("ncnn")

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.size and tuple(x.shape[2:]) != self.size:
            h, w = self.size
            raise ValueError(f"{self.path.name} takes {w}x{h} frames (exported with --static {w}x{h}); "
                             f"got {x.shape[3]}x{x.shape[2]}")  # fmt: skip
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = []
        with self._lock:
            for i in range(len(x)):
                ex = self.net.create_extractor()
                ex.input(self._in, self._ncnn.Mat(x[i : i + 1], batch_index=0).clone())
                status, out = ex.extract(self._out)
                y = np.array(out.numpy(batch_index=0), dtype=np.float32) if status == 0 else None
                if y is None or y.size != x[i].size:
                    got = "an error" if y is None else f"{y.size} values"
                    raise ValueError(f"{self.path.name}: ncnn returned {got} for a {x.shape[2]}x{x.shape[3]} frame")
                outs.append(y.reshape(x[i].shape))
        return np.stack(outs)

    def describe(self) -> str:
        return "ncnn (cpu)"

    def version(self) -> str:
        return f"ncnn {self._version}"

    def close(self) -> None:
        with self._lock:
            self.net = None  # type: ignore[assignment]
