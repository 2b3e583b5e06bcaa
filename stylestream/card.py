"""Model cards: the JSON files that describe a model (a training run's card.json, an export's OUT.json,
a plugin's NAME.json). One reader and one writer for all of them: writes are atomic and JSON-safe
(no NaN, paths as text), reads check the content is a JSON object and, for files that come from
untrusted plugin folders, that they are small."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from stylestream.models.io import atomic_write

MAX_UNTRUSTED_BYTES = 1 << 20  # a card is a few KiB; a plugin folder's 1 GiB "card" is refused unread


class CardError(ValueError):
    """A card that is not a readable JSON object; the message names the file."""


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN/inf as text (JSON has none), Paths as text, private (_) keys left out."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_card(path: str | os.PathLike, card: dict[str, Any]) -> None:
    """Atomically (temp file + rename; mode 0666 less the umask)."""
    text = json.dumps(jsonable(card), indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_card(path: str | os.PathLike, *, max_bytes: int | None = None, missing_ok: bool = False) -> dict[str, Any]:
    """The card as a dict. `max_bytes` for untrusted files (refused unread when larger); `missing_ok`
    returns {} for a card that does not exist or cannot be parsed (a run still pending)."""
    path = Path(path)
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise CardError(f"{path}: model card is {path.stat().st_size} bytes, over the {max_bytes // 1024} KiB limit")
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        if missing_ok:
            return {}
        raise CardError(f"{path}: not a readable model card ({exc.__class__.__name__}: {exc})") from None
    except CardError:
        if missing_ok:
            return {}
        raise
    if not isinstance(card, dict):
        if missing_ok:
            return {}
        raise CardError(f"{path}: a model card must be a JSON object, got {type(card).__name__}")
    return card
