"""The architecture registry: name -> builder. Its members (johnson.py, lite.py) import this module,
never the package, so registering an architecture cannot form an import cycle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from stylestream.registry import Registry

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")


def build_model(arch: str, **config: Any) -> nn.Module:
    """Build an architecture by name; the config is kept on the module so `save_model` can store it."""
    model = ARCHITECTURES[arch](**config)
    model.stylestream_config = {"arch": arch, **config}
    return model
