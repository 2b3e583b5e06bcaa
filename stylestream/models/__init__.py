"""Style-transfer network architectures (a registry) and their save/load format.

Every architecture maps float32 RGB in [0, 255], shape (N, 3, H, W), to the same shape for every
H, W >= 16 (odd sizes included); `inference_model` clamps the output to [0, 255] where images leave
the model (the study's `johnson` has an unbounded linear head)."""

from __future__ import annotations

# Importing the architecture modules registers them.
from stylestream.models import johnson, lite  # noqa: F401
from stylestream.models.inference import inference_model
from stylestream.models.io import ModelLoadError, load_model, save_model
from stylestream.models.registry import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "ModelLoadError", "build_model", "inference_model", "load_model", "save_model"]
