"""Neural styles: a plugin that wraps one style's model files (NAME.pt / .onnx / .engine / .torchscript,
the served suffixes of the formats table) and runs them through a runtime backend (stylestream.runtime),
loaded lazily on first use (discovery stays fast). `root` is the plugin folder every file the style
reads must stay inside (None for a model named by trusted code)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.devices import resolve_name
from stylestream.plugins.base import SCALE, StylePlugin
from stylestream.plugins.options import MIN_SIDE
from stylestream.plugins.paths import confined
from stylestream.runtime import BACKENDS, Backend, pick_backend

__all__ = ["MIN_SIDE", "SCALE", "NeuralPlugin", "device_resident"]


def device_resident(runner: Backend) -> bool:
    """Whether the backend runs torch tensors on its own device (it overrides `run_tensor`), so a frame
    can stay on the GPU from upload to download; the default `run_tensor` goes through host memory."""
    return type(runner).run_tensor is not Backend.run_tensor


class NeuralPlugin(StylePlugin):
    kind = "neural"
    extra_params = (SCALE,)  # the engine runs the net at this fraction of the frame size
    min_side = MIN_SIDE  # every architecture needs H, W >= 16; the engine enlarges smaller frames

    def __init__(self, name: str, models: dict[str, Path], title: str = "", description: str = "",
                 thumbnail: Path | None = None, card: dict[str, Any] | None = None,
                 backend: str = "auto", device: str = "auto", root: Path | None = None,
                 backend_options: Mapping[str, Mapping[str, Any]] | None = None) -> None:  # fmt: skip
        """backend_options: backend name -> keyword arguments for it ({"triton": {"url": ...}})."""
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
        self.backend_options = {k: dict(v) for k, v in (backend_options or {}).items()}
        self._runner: Backend | None = None
        self._error: Exception | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return resolve_name(self.requested_device)

    def _converts_pt_to_onnx(self, device: str) -> bool:
        """A .pt-only style under --backend auto on CPU runs on ONNX Runtime via a cached conversion."""
        return self.requested_backend == "auto" and device == "cpu" and set(self.models) == {"pytorch"}

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

    def bind(self, backend: str = "auto", device: str = "auto",
             backend_options: Mapping[str, Mapping[str, Any]] | None = None) -> NeuralPlugin:  # fmt: skip
        """A copy that runs with this backend/device (each engine owns its loaded copies)."""
        if backend != "auto" and backend not in BACKENDS:
            BACKENDS.entry(backend)  # raises UnknownNameError listing the backends
        return NeuralPlugin(self.name, self.models, self.title, self.description, self.thumbnail, self.card,
                            backend, device, self.root, backend_options)  # fmt: skip

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
                        from stylestream.export.onnx_cache import cached_onnx

                        onnx = cached_onnx(models["pytorch"])
                        models = {**models, "onnx": onnx} if onnx else models
                    name, path = pick_backend(models, device, self.requested_backend)
                    root = self.root if path in self.models.values() else None  # not for our cached copy
                    if root is not None:  # again: the folder may have changed since discovery
                        confined(root, path.absolute(), "model")
                    self._runner = BACKENDS[name](path, device, root=root, **self.backend_options.get(name, {}))
                except Exception as exc:
                    self._error = exc
                    raise
        return self._runner

    def describe(self) -> str:
        return self.runner().describe()

    def apply(self, frames: np.ndarray, params: dict[str, float]) -> np.ndarray:
        x = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
        y = self.runner().run(x)
        return np.clip(y.transpose(0, 2, 3, 1) + 0.5, 0, 255).astype(np.uint8)

    def apply_tensor(self, x: Any) -> Any:
        """The engine's tensor path: float (N, 3, H, W) torch tensor in [0, 255] -> same, on the
        backend's device (stylestream.plugins.framepath quantizes, resizes and blends around it)."""
        return self.runner().run_tensor(x)

    def close(self) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.close()
                self._runner = None

