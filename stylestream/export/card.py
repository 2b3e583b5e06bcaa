"""The model card written next to every export (`OUT.json`). The plugin loader reads `name`,
`title`, `description` and `thumbnail` (relative to the card) from it; the rest documents where the
file came from and how well it matched PyTorch."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from stylestream.models.io import atomic_write


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_card(path: Path, card: dict[str, Any]) -> None:
    card = {"exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **card}
    text = json.dumps(_jsonable(card), indent=2, sort_keys=False) + "\n"

    atomic_write(path, lambda tmp: Path(tmp).write_text(text))  # mode: 0666 less the umask


def read_card(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
