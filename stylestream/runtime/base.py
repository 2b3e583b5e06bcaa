"""The backend contract and its registry. A backend loads one model file on one device and maps float32
RGB (N, 3, H, W) in [0, 255] to the same shape and range; serving (NeuralPlugin, Engine), export
verification and the format benchmark all run models through these classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stylestream.registry import Registry


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (library or device missing); the message says what to install."""


class Backend:
    """Load in __init__, run batches in `run`. Implementations must be thread-safe.
    `root`: the folder that files the model names (ONNX external data) must stay inside; None: the
    model's own folder."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    gpu_only: ClassVar[bool] = False  # runs only on a CUDA device (verification moves it there)
    remote: ClassVar[bool] = False  # a server runs the style's model by name; any of its files only names it

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        self.path = Path(path)
        self.device = device
        self.root = Path(root) if root is not None else self.path.parent

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        """None when this backend can run on `device`, else why not (and what to install)."""
        return None

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_tensor(self, x: Any) -> Any:
        """Torch float tensor (N, 3, H, W) in [0, 255] -> same. This default goes through host memory and
        answers on x's device; torch-based backends override it to stay on their own device."""
        import torch

        return torch.from_numpy(self.run(x.detach().cpu().numpy())).to(x.device)

    def describe(self) -> str:
        """What runs the model, for logs, `stylize` and model cards: 'onnxruntime (CUDA, CPU)'."""
        return f"{self.name} ({self.device})"

    def version(self) -> str:
        """The library that runs the model, with its version: 'onnxruntime 1.22.0'."""
        return self.name

    def close(self) -> None:
        pass


BACKENDS: Registry[type[Backend]] = Registry("backend")


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: add a backend to BACKENDS (which drives --backend choices and help)."""
    BACKENDS.add(cls.name, cls, cls.help)
    return cls
