"""One-file model format: weights + architecture config (+ optional card) in a torch.save dict.

Loaded with `weights_only=True`, so a model file cannot run code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "stylestream-model"
FORMAT_VERSION = 1


class ModelLoadError(ValueError):
    """A model file that is missing, corrupt or not a stylestream model. The message names the file."""


def atomic_write(path: str | os.PathLike, write) -> None:
    """Write via a temp file in the same folder + rename, so a killed process never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_config(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "stylestream_config", None)
    if cfg is None:
        raise ValueError("model was not built by stylestream.models.build_model; its config is unknown")
    return dict(cfg)


def save_model(model: nn.Module, path: str | os.PathLike, card: dict[str, Any] | None = None) -> None:
    cfg = model_config(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "version": FORMAT_VERSION, "arch": cfg.pop("arch"), "config": cfg,
            "state_dict": state, "card": card or {}}  # fmt: skip
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises many kinds for garbage input
        reason = str(exc).splitlines()[0][:200]
        if "weights_only" in reason:  # torch's advice to unpickle with code execution: never for a model file
            reason = "not a torch.save archive of tensors"
        raise ModelLoadError(
            f"{path}: not a readable stylestream model ({type(exc).__name__}: {reason}); "
            "expected a model.pt written by `stylestream train`"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        hint = ""
        if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
            hint = " (it looks like a bare state_dict; stylestream needs the architecture config too)"
        raise ModelLoadError(f"{path}: not a stylestream model file{hint}")
    if blob.get("version", 0) > FORMAT_VERSION:
        raise ModelLoadError(f"{path}: model format v{blob['version']} is newer than this stylestream supports")
    return blob


def load_model(path: str | os.PathLike) -> nn.Module:
    """Load a model saved by `save_model`, in eval mode on CPU."""
    from stylestream.models import build_model

    blob = read_model_file(path)
    try:
        model = build_model(blob["arch"], **blob["config"])
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # noqa: BLE001 -- any mismatch means: not this architecture
        raise ModelLoadError(f"{path}: weights do not fit architecture {blob.get('arch')!r}: {exc}") from None
    model.stylestream_card = blob.get("card", {})
    return model.eval()


def load_card(path: str | os.PathLike) -> dict[str, Any]:
    return dict(read_model_file(path).get("card", {}))
