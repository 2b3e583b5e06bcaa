"""Core ML ML Programs (NAME.mlpackage, a folder) through coremltools' predict, on macOS only: what an
iPhone, iPad or Mac app runs, here for export verification and the benchmark on a Mac.

Core ML itself runs only on Apple systems: elsewhere `unavailable_reason` says so in one line (and the
exporter checks such exports structurally instead: stylestream.export.coreml). Devices: `cpu` runs on
the CPU only (as verification does), `mps` lets Core ML choose among CPU, GPU and Neural Engine.
A batch larger than the package's runs in chunks, and a frame outside its size range is a one-line error."""

from __future__ import annotations

import logging
import platform
import sys
import threading
from pathlib import Path

import numpy as np

from stylestream.export.formats import COREML
from stylestream.runtime.base import Backend, register

log = logging.getLogger(__name__)

_UNITS = {"cpu": "CPU_ONLY", "mps": "ALL"}  # runtime device -> ct.ComputeUnit


def _not_apple() -> str | None:
    system = platform.system()
    return None if system == "Darwin" else f"Core ML runs only on Apple systems (macOS), not {system or 'this system'}"


def _bounds(text: str) -> tuple[int, int]:
    low, high = map(int, text.split(".."))
    return low, high if high >= 0 else sys.maxsize


@register
class CoreMLBackend(Backend):
    name = "coreml"
    help = "a Core ML ML Program (NAME.mlpackage) via coremltools, on macOS only: CPU (cpu) or CPU/GPU/ANE (mps)"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        why = _not_apple()
        if why:
            return why
        reason = COREML.reason()
        if reason:
            return reason
        if device.split(":")[0] not in _UNITS:
            return f"Core ML runs on the Mac's CPU (cpu) or on CPU/GPU/Neural Engine (mps), not {device}"
        return None

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        from stylestream.export.coreml import quiet_coremltools, structure
        from stylestream.export.formats import ExportError

        # plugins imports the runtime: imported on use
        from stylestream.plugins.modelfiles import check_package, first_line

        why = self.unavailable_reason(device)
        if why:
            from stylestream.runtime.base import BackendUnavailable

            raise BackendUnavailable(f"{path}: {why}")
        if not (self.path.is_dir() and (self.path / "Manifest.json").is_file()):
            raise ValueError(f"{path}: not a Core ML package (a NAME.mlpackage folder with a Manifest.json)")
        check_package(self.path, self.root)  # before Core ML reads a byte: nothing links out
        try:
            facts = structure(self.path)
        except ExportError as exc:
            raise ValueError(str(exc)) from None
        shape = facts["input"].get("shape", [])
        if facts["input"]["dtype"] != "float32" or len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{path}: not a style model (input {facts['input']}; expected float32 (N, 3, H, W))")
        self.input, self.output = facts["input"]["name"], facts["output"]["name"]
        # (low, high) per dimension; an unbounded range (upper bound -1 in the spec) has no high
        self.ranges = [(d, d) if isinstance(d, int) else _bounds(d) for d in shape]
        with quiet_coremltools() as ct:
            units = _UNITS[device.split(":")[0]]
            try:
                self.model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, units))
            except Exception as exc:  # noqa: BLE001 - Core ML's compiler raises anything
                raise ValueError(f"{path}: Core ML cannot load it ({first_line(exc)})") from None
            self._version = ct.__version__
        self.units = units
        self.precision = facts["compute"]
        self._lock = threading.Lock()
        log.info("%s: Core ML (%s, %s)", self.path.name, units, self.precision)

    def run(self, x: np.ndarray) -> np.ndarray:
        (n_lo, n_hi), _, (h_lo, h_hi), (w_lo, w_hi) = self.ranges
        h, w = x.shape[2:]
        if not (h_lo <= h <= h_hi and w_lo <= w <= w_hi):
            size = f"{h_lo}x{w_lo}" if (h_lo, w_lo) == (h_hi, w_hi) else f"{h_lo}..{h_hi} x {w_lo}..{w_hi}"
            raise ValueError(f"{self.path.name} takes frames of {size} (H x W); got {h}x{w}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        pad = -len(x) % n_hi if n_lo == n_hi else 0  # a fixed batch: whole batches, repeated frames dropped after
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        outs = []
        with self._lock:
            for i in range(0, len(x), n_hi):  # chunks of the largest batch the package takes
                chunk = x[i : i + n_hi]
                out = self.model.predict({self.input: chunk})[self.output]
                outs.append(np.asarray(out, dtype=np.float32).reshape(chunk.shape))
        return np.concatenate(outs)[: len(x) - pad]

    def describe(self) -> str:
        return f"coreml ({self.units}, {self.precision})"

    def version(self) -> str:
        return f"coremltools {self._version}"

    def close(self) -> None:
        with self._lock:
            self.model = None
