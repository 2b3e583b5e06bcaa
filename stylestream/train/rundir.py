"""The run directory: model.pt, metrics.csv, card.json, checkpoint.pt. Every file is replaced
atomically (temp file + rename), so killing the process never leaves a torn file; metrics rows are
appended and flushed one per step. A write the disk refuses (full, read-only) raises WriteError."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from stylestream import card as cards
from stylestream.models.io import atomic_write, remove_stale_temps, torch_save, writing

# images: training images the run has taken so far (x-axis of loss curves whose batch sizes differ)
# temporal: the --temporal-weight term (stylestream.train.temporal_loss), 0 when off; total includes it
METRIC_FIELDS = ("step", "epoch", "images", "content", "style", "tv", "temporal", "total", "lr", "images/s",
                 "seconds")  # fmt: skip
# what a run writes (sweeps add stylized.jpg); `clear` removes these and nothing else in the folder
RUN_FILES = (
    "model.pt",
    "checkpoint.pt",
    "metrics.csv",
    "card.json",
    "losses.png",
    "samples.jpg",
    "stylized.jpg",
)


class RunDir:
    def __init__(self, path: str | os.PathLike, writable: bool = True):
        self.path = Path(path)
        self.writable = writable  # False on non-zero ranks of a distributed run

    model_path = property(lambda self: self.path / "model.pt")
    card_path = property(lambda self: self.path / "card.json")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")

    def holds_run(self) -> bool:
        return any(
            p.exists() for p in (self.model_path, self.checkpoint_path, self.metrics_path, self.card_path)
        )

    def clear(self) -> None:
        """Remove an earlier run's files (--overwrite, or --resume of a run that stopped before its first
        checkpoint); anything else in the folder is kept."""
        if not self.writable or not self.path.is_dir():
            return
        with writing(self.path):
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            shutil.rmtree(self.path / "tensorboard", ignore_errors=True)

    def prepare_folder(self) -> None:
        """Create the folder, and remove the temp files a killed run left in it."""
        if self.writable:
            with writing(self.path):
                self.path.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.path)

    # card.json
    def write_card(self, card: dict[str, Any]) -> None:
        if self.writable:
            cards.write_card(self.card_path, card)

    def read_card(self, missing_ok: bool = False) -> dict[str, Any]:
        return cards.read_card(self.card_path, missing_ok=missing_ok)

    # metrics.csv
    def start_metrics(self, keep_through_step: int | None = None) -> None:
        """Start a fresh file, or (on resume) keep only rows up to the checkpoint's step, so steps
        re-run after a crash are not listed twice."""
        if not self.writable:
            return
        rows = self.read_metrics() if keep_through_step is not None and self.metrics_path.exists() else []
        rows = [r for r in rows if int(r["step"]) <= (keep_through_step or 0)]
        for r in rows:  # a file written before the temporal term existed: it was 0 then
            if not r.get("temporal"):
                r["temporal"] = "0"

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
                w.writeheader()
                w.writerows(rows)

        atomic_write(self.metrics_path, write)

    def log_metrics(self, row: dict[str, Any]) -> None:
        if self.writable:
            with writing(self.metrics_path), open(self.metrics_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=METRIC_FIELDS).writerow({k: row[k] for k in METRIC_FIELDS})

    def read_metrics(self) -> list[dict[str, str]]:
        """metrics.csv's rows as text (sweep_report.read_metrics turns them into float columns)."""
        with open(self.metrics_path, newline="") as f:
            return list(csv.DictReader(f))

    # checkpoint.pt
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        if self.writable:
            atomic_write(self.checkpoint_path, lambda tmp: torch_save(state, tmp))

    def load_checkpoint(self) -> dict[str, Any]:
        # weights_only: a checkpoint holds only tensors and plain containers, so loading runs no code
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
