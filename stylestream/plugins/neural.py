"""Neural styles: a plugin that wraps one style's model files (NAME.pt / .onnx / .engine) and runs
them through an inference backend, loaded lazily on first use (discovery stays fast). `root` is the
plugin folder every file the style reads must stay inside (None for a model named by trusted code)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stylestream.devices import resolve_name
from stylestream.plugins.backends import BACKENDS, Backend, cached_onnx, pick_backend
from stylestream.plugins.base import Param, StylePlugin
from stylestream.plugins.paths import confined

SCALE = Param("scale", "Processing scale", 1.0, 0.25, 1.0, 0.05,
              "run the network at this fraction of the frame size (faster, softer)")  # fmt: skip

MIN_SIDE = 16  # every architecture needs H, W >= 16


class NeuralPlugin(StylePlugin):
    kind = "neural"
    extra_params = (SCALE,)

    def __init__(self, name: str, models: dict[str, Path], title: str = "", description: str = "",
                 thumbnail: Path | None = None, card: dict[str, Any] | None = None,
                 backend: str = "auto", device: str = "auto", root: Path | None = None) -> None:  # fmt: skip
        if not models:
            raise ValueError(f"style {name!r} has no model file")
        self.name = name  # type: ignore[misc]
        self.title = title or name.replace("-", " ").replace("_", " ").title()  # type: ignore[misc]
        formats = "/".join(sorted(models))
        self.description = description or f"neural style ({formats})"  # type: ignore[misc]
        self.thumbnail = thumbnail
        self.models = dict(models)
        self.card = dict(card or {})
        self.root = root
        self.requested_backend = backend
        self.requested_device = device
        self._runner: Backend | None = None
        self._error: Exception | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return resolve_name(self.requested_device)

    def _converts_pt_to_onnx(self, device: str) -> bool:
        """A .pt-only style under --backend auto on CPU runs on ONNX Runtime via a cached conversion."""
        return self.requested_backend == "auto" and device == "cpu" and set(self.models) == {"pt"}

    @property
    def backend(self) -> str:  # type: ignore[override]
        """The backend that will run (or runs) this style; 'unavailable' when none can (runner() says why)."""
        if self._runner is not None:
            return self._runner.name
        try:
            device = self.device
            if self._converts_pt_to_onnx(device):
                return "onnxruntime"  # runner() converts the .pt once (cached_onnx)
            return pick_backend(self.models, device, self.requested_backend)[0]
        except Exception:  # noqa: BLE001 -- a listing must not fail; runner() raises the reason
            return "unavailable"

    def bind(self, backend: str = "auto", device: str = "auto") -> NeuralPlugin:
        """A copy that runs with this backend/device (each engine owns its loaded copies)."""
        if backend != "auto" and backend not in BACKENDS:
            BACKENDS.entry(backend)  # raises UnknownNameError listing the backends
        return NeuralPlugin(self.name, self.models, self.title, self.description, self.thumbnail, self.card,
                            backend, device, self.root)  # fmt: skip

    def runner(self) -> Backend:
        """Load the model (once, thread-safe). A failed load is remembered and re-raised fast, so a broken
        model does not cost a reload per frame."""
        if self._runner is not None:
            return self._runner
        with self._lock:
            if self._runner is None:
                if self._error is not None:
                    raise self._error
                try:
                    device = self.device
                    models = self.models
                    if self._converts_pt_to_onnx(device):
                        onnx = cached_onnx(models["pt"])
                        models = {**models, "onnx": onnx} if onnx else models
                    name, path = pick_backend(models, device, self.requested_backend)
                    root = self.root if path in self.models.values() else None  # not for our cached copy
                    if root is not None:  # again: the folder may have changed since discovery
                        confined(root, path.absolute(), "model")
                    self._runner = BACKENDS[name](path, device, root=root)
                except Exception as exc:
                    self._error = exc
                    raise
        return self._runner

    def describe(self) -> str:
        return self.runner().describe()

    def apply(self, frames: np.ndarray, params: dict[str, float]) -> np.ndarray:
        _, h, w, _ = frames.shape
        scale = params.get("scale", 1.0)
        src = frames
        # tiny frames are upscaled to the networks' minimum size and brought back afterwards
        sw, sh = max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale))
        if (sh, sw) != (h, w):
            src = np.stack([cv2.resize(f, (sw, sh), interpolation=cv2.INTER_AREA) for f in frames])
        x = np.ascontiguousarray(src.transpose(0, 3, 1, 2), dtype=np.float32)
        y = self.runner().run(x)
        out = np.clip(y.transpose(0, 2, 3, 1) + 0.5, 0, 255).astype(np.uint8)
        if out.shape[1:3] != (h, w):
            out = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in out])
        return out

    def process_tensor(self, frames: Any, params: dict[str, Any] | None = None) -> Any:
        """Device-resident path: uint8 RGB torch tensor (N, H, W, 3) on the backend's device -> same, without
        a round trip through host memory where the backend allows it (torch, tensorrt)."""
        import torch

        p = self.resolve_params(params)
        runner = self.runner()
        x = frames.permute(0, 3, 1, 2).float()
        if hasattr(runner, "run_tensor"):
            y = runner.run_tensor(x.to(runner.device))
        else:  # ONNX Runtime takes host arrays
            y = torch.from_numpy(runner.run(x.cpu().numpy())).to(frames.device)
        y = y.to(frames.device)
        if p["strength"] < 1.0:
            y = y * p["strength"] + x * (1.0 - p["strength"])
        return (y + 0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def close(self) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.close()
                self._runner = None


def model_files(folder: Path, stem: str) -> dict[str, Path]:
    """The model files of one style in a folder: NAME.pt / NAME.onnx / NAME.engine."""
    from stylestream.plugins.backends import FORMATS

    return {fmt: folder / f"{stem}{suf}" for suf, fmt in FORMATS.items() if (folder / f"{stem}{suf}").is_file()}
