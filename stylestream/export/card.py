"""The model card written next to every export (`OUT.json`). The plugin loader reads `name`,
`title`, `description` and `thumbnail` (relative to the card) from it; the rest documents where the
file came from and how well it matched PyTorch."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from stylestream import card as cards


def card_path(artifact: Path) -> Path:
    """mosaic.onnx -> mosaic.json; a Triton model folder keeps its card inside (card.json)."""
    return artifact / "card.json" if artifact.is_dir() else artifact.with_suffix(".json")


def base_name(model_path: Path, source_card: dict[str, Any]) -> str:
    """A style name from the training card, else the model file (its run folder for `model.pt`)."""
    for key in ("name", "style_name"):
        if isinstance(source_card.get(key), str) and source_card[key].strip():
            return source_card[key].strip()
    style = source_card.get("style") or source_card.get("style_image")
    if isinstance(style, str) and style.strip():
        return Path(style).stem
    return model_path.parent.name if model_path.stem == "model" and model_path.parent.name else model_path.stem


def safe_name(name: str) -> str:
    """A name usable as a folder and as a Triton model name (letters, digits, _ . -)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "style"


def write_card(path: Path, card: dict[str, Any]) -> None:
    """An export's card: the one card writer, stamped with the export time."""
    cards.write_card(path, {"exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **card})


read_card = cards.read_card
