"""The run directory: model.pt, metrics.csv, card.json, checkpoint.pt. Every file is replaced
atomically (temp file + rename), so killing the process never leaves a torn file; metrics rows are
appended and flushed one per step."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import torch

from stylestream.models.io import atomic_write

METRIC_FIELDS = ("step", "epoch", "content", "style", "tv", "total", "lr", "images/s", "seconds")


class RunDir:
    def __init__(self, path: str | os.PathLike, writable: bool = True):
        self.path = Path(path)
        self.writable = writable  # False on non-zero ranks of a distributed run

    model_path = property(lambda self: self.path / "model.pt")
    card_path = property(lambda self: self.path / "card.json")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")

    def holds_run(self) -> bool:
        return any(p.exists() for p in (self.model_path, self.checkpoint_path, self.metrics_path))

    # card.json
    def write_card(self, card: dict[str, Any]) -> None:
        if self.writable:
            text = json.dumps(card, indent=2, sort_keys=False, default=str) + "\n"
            atomic_write(self.card_path, lambda tmp: Path(tmp).write_text(text))

    def read_card(self) -> dict[str, Any]:
        return json.loads(self.card_path.read_text())

    # metrics.csv
    def start_metrics(self, keep_through_step: int | None = None) -> None:
        """Start a fresh file, or (on resume) keep only rows up to the checkpoint's step, so steps
        re-run after a crash are not listed twice."""
        if not self.writable:
            return
        rows = self.read_metrics() if keep_through_step is not None and self.metrics_path.exists() else []
        rows = [r for r in rows if int(r["step"]) <= (keep_through_step or 0)]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
                w.writeheader()
                w.writerows(rows)

        atomic_write(self.metrics_path, write)

    def log_metrics(self, row: dict[str, Any]) -> None:
        if self.writable:
            with open(self.metrics_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=METRIC_FIELDS).writerow({k: row[k] for k in METRIC_FIELDS})

    def read_metrics(self) -> list[dict[str, str]]:
        with open(self.metrics_path, newline="") as f:
            return list(csv.DictReader(f))

    # checkpoint.pt
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        if self.writable:
            atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> dict[str, Any]:
        # weights_only: a checkpoint holds only tensors and plain containers, so loading runs no code
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
