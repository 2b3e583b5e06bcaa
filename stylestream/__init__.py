"""stylestream: real-time neural style transfer on live video."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    import torch


def load_model(path) -> torch.nn.Module:
    """Load a saved style network (weights + architecture config in one file), eval mode, on CPU."""
    from stylestream.models.io import load_model as _load

    return _load(path)


__all__ = ["__version__", "load_model"]
