"""Style-transfer network architectures (a registry) and their save/load format.

Every architecture maps float32 RGB in [0, 255], shape (N, 3, H, W), to the same shape and range,
for every H, W >= 16 (odd sizes included)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from stylestream.registry import Registry

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")


def build_model(arch: str, **config) -> nn.Module:
    """Build an architecture by name; the config is kept on the module so `save_model` can store it."""
    model = ARCHITECTURES[arch](**config)
    model.stylestream_config = {"arch": arch, **config}
    return model


# Importing the modules registers them.
from stylestream.models import johnson, lite  # noqa: F401
from stylestream.models.io import ModelLoadError, load_model, save_model

__all__ = ["ARCHITECTURES", "ModelLoadError", "build_model", "load_model", "save_model"]
