"""The optimizer-study report of a sweep: report.md (the study's Table 1 columns plus the content/style
split, steps and images seen, status and ranking, the setting, precision, device and library versions,
and what the runs had equal), report.json (the same data) and the figures (stylestream.train.sweep_figures).

Everything here reads the run directories (metrics.csv, card.json), so a report can be rebuilt from a
finished or half-finished sweep folder at any time."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stylestream.train.rundir import RunDir

log = logging.getLogger(__name__)

TAIL_FRACTION = 0.05  # the "loss value" of a run: mean total loss over the last 5% of its steps
# collapsed: finished, but the network's output is a constant image (no style, no content)
STATUSES = ("ok", "collapsed", "diverged", "crashed", "pending")
STUDY_DEFAULT = (1e-3, 4)  # the study's default setting (η, batch size): its Figs 3.1 and 3.2


@dataclass
class RunResult:
    """One (optimizer, learning rate, batch size) run of a sweep, as the report shows it."""

    name: str  # "<optimizer>/lr<lr>-bs<bs>", also the run directory relative to the sweep folder
    optimizer: str
    lr: float
    batch_size: int
    status: str = "pending"
    steps: int = 0  # optimizer steps taken
    total_steps: int = 0  # steps planned
    images_seen: int = 0  # training images its steps took, repeats included
    loss: float | None = None  # tail mean of the total training loss
    content: float | None = None
    style: float | None = None
    tv: float | None = None
    eval_loss: float | None = None  # mean total loss on the held-out images
    eval_content: float | None = None
    eval_style: float | None = None
    train_time_s: float | None = None
    error: str | None = None  # why a run diverged, crashed or collapsed
    stylized: str | None = None  # the run's stylized content image, relative to the sweep folder
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """What the best setting is chosen by: eval loss, else (no eval set) the training loss value."""
        v = self.value
        return v if v is not None and self.status == "ok" else math.inf

    @property
    def value(self) -> float | None:
        """Its eval loss, else its training loss value; None when it has neither (or a NaN)."""
        v = self.eval_loss if self.eval_loss is not None else self.loss
        return v if v is not None and math.isfinite(v) else None

    @property
    def setting(self) -> str:
        return f"η={self.lr:g}, bs={self.batch_size}"

    def to_json(self) -> dict[str, Any]:
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def run_name(optimizer: str, lr: float, batch_size: int) -> str:
    return f"{optimizer}/lr{lr:g}-bs{batch_size}"


# ---------------------------------------------------------------- metrics.csv


def read_metrics(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """metrics.csv as columns of floats (empty cells -> NaN). A missing file reads as no rows."""
    path = Path(path)
    if not path.is_file():
        return {}
    rows = RunDir(path.parent).read_metrics()  # the one metrics.csv reader; here as float columns
    if not rows:
        return {}
    cols: dict[str, np.ndarray] = {}
    for key in rows[0]:
        vals = []
        for r in rows:
            try:
                vals.append(float(r.get(key) or "nan"))
            except ValueError:
                vals.append(math.nan)
        cols[key] = np.asarray(vals, dtype=np.float64)
    return cols


def tail_means(cols: dict[str, np.ndarray], fraction: float = TAIL_FRACTION) -> dict[str, float]:
    """Mean of each loss term over the last `fraction` of the logged steps (at least one row)."""
    total = cols.get("total")
    if total is None or len(total) == 0:
        return {}
    n = max(1, math.ceil(len(total) * fraction))
    return {term: float(np.mean(cols[term][-n:])) for term in ("total", "content", "style", "tv") if term in cols}


# ---------------------------------------------------------------- choosing and ranking


def best_per_optimizer(runs: Iterable[RunResult]) -> dict[str, RunResult]:
    """Per optimizer, the finished run with the lowest eval loss; an optimizer whose runs all failed or
    collapsed keeps its first run so the report can still say what happened to it."""
    best: dict[str, RunResult] = {}
    for r in runs:
        cur = best.get(r.optimizer)
        if cur is None or r.score < cur.score:
            best[r.optimizer] = r
    return best


def ranking(runs: Iterable[RunResult]) -> list[RunResult]:
    """Best run per optimizer, best optimizer first; optimizers without a finished run come last."""
    return sorted(best_per_optimizer(runs).values(), key=lambda r: (r.score, r.optimizer))


def default_setting(lrs: Sequence[float], batch_sizes: Sequence[int]) -> tuple[float, int]:
    """The setting of Figs 3.1/3.2: the study's default (η 1e-3, bs 4), or the swept values closest to
    it (η on a log scale) when the sweep did not include it."""
    lr = min(lrs, key=lambda v: (abs(math.log10(v / STUDY_DEFAULT[0])), -v))
    bs = min(batch_sizes, key=lambda b: (abs(b - STUDY_DEFAULT[1]), -b))
    return lr, bs


def at_setting(runs: Iterable[RunResult], lr: float, batch_size: int) -> dict[str, RunResult]:
    """Per optimizer, its run at (lr, batch_size)."""
    return {r.optimizer: r for r in runs if r.lr == lr and r.batch_size == batch_size}


# ---------------------------------------------------------------- report.md / report.json


def _fmt(v: float | None, spec: str = ".3e") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, spec)


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def fairness_statement(meta: dict[str, Any], runs: Sequence[RunResult] = ()) -> str:
    """What every run of the sweep had equal, and what it did not."""
    seed = meta.get("seed", "?")
    parts = [
        (f"Every run started from the same initial weights (architecture `{meta.get('arch', '?')}`, "
         f"seed {seed}) and saw the same training images in the same order (data seed {seed}; "
         f"{meta.get('train_images', '?')} training images)."),
    ]  # fmt: skip
    steps = {r.batch_size: r.total_steps for r in sorted(runs, key=lambda r: r.batch_size) if r.total_steps}
    if meta.get("epochs") is not None:
        per_bs = "; ".join(f"bs {bs}: {n} steps" for bs, n in steps.items())
        parts.append(
            f"The budget is equal in epochs, as in the study: every run trained for {meta['epochs']} epoch(s), "
            "i.e. on the same images, the same number of times. The number of optimizer steps is not equal: "
            f"it is the epochs times the batches per epoch of the run's batch size ({per_bs}); each run's "
            "steps and images seen are listed below."
        )
    else:
        parts.append(
            f"The budget is equal in optimizer steps ({meta.get('steps')} per run); runs with larger "
            "batches therefore saw more images (each run's images seen are listed below)."
        )
    parts += [
        (f"The loss value is the mean total training loss over the last {TAIL_FRACTION:.0%} of a run's "
         "steps; the eval loss is the mean total loss on "
         f"{meta.get('eval_images', '?')} held-out images ({meta.get('eval_source', 'a split of the data')}) "
         "that no run trained on, and the best setting per optimizer is chosen by eval loss."),
        ("All runs use the same loss weights, image size, style image, VGG weights, precision "
         f"({meta.get('precision', '?')}) and device."
         if len(meta.get("devices") or ()) < 2 else
         "All runs use the same loss weights, image size, style image, VGG weights and precision "
         f"({meta.get('precision', '?')}); they trained on different devices of a Ray cluster "
         f"({', '.join(meta['devices'])}), which changes their times and can change the last digits of "
         "their losses."),
    ]  # fmt: skip
    where = "groups, each a Ray task in one worker process" if str(meta.get("trained_on")).startswith("Ray") else (
        "in one process")  # fmt: skip
    if meta.get("lockstep"):
        parts.append(
            f"Runs sharing a batch size were trained in lockstep {where} "
            "(one data loader and one content-target VGG pass per batch shared by all of them); a run's "
            "training time is the compute spent on that run plus an equal share of the shared work."
        )  # fmt: skip
    return " ".join(parts)


def setting_line(meta: dict[str, Any]) -> str:
    length = f"{meta['epochs']} epoch(s)" if meta.get("epochs") is not None else f"{meta.get('steps')} steps"
    style_size = meta.get("style_size")
    style = "its own size" if style_size == 0 else (f"{style_size} px" if style_size else "the image size")
    return (f"style {meta.get('style')} (used at {style}, {meta.get('style_image_size', '?')}), data "
            f"{meta.get('data')}, {length} per run, image size {meta.get('image_size')}, arch "
            f"`{meta.get('arch')}`, VGG-16 weights: {meta.get('vgg_weights')}, λc {meta.get('content_weight'):g}, "
            f"λs {meta.get('style_weight'):g}, λtv {meta.get('tv_weight'):g}")  # fmt: skip


def environment_line(meta: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())
    where = meta.get("trained_on")
    ray = f"; trained on {where}" if where and where != "this process" else ""
    return f"precision {meta.get('precision')}, device {meta.get('device')}{ray}; {versions}"


def markdown_report(runs: Sequence[RunResult], meta: dict[str, Any], images: dict[str, str]) -> str:
    ranked = ranking(runs)
    lines = ["# Optimizer sweep", ""]
    if "random" in str(meta.get("vgg_weights", "")):
        lines += [
            ("> **Random VGG-16 weights** (a test/plumbing run): these losses and images say nothing "
             "about the optimizers' quality as style-transfer trainers."),
            "",
        ]  # fmt: skip
    lines += [f"Setting: {setting_line(meta)}.", "", f"Environment: {environment_line(meta)}.", ""]
    lines += ["## Fairness", "", fairness_statement(meta, runs), ""]
    lines += [
        "## Best setting per optimizer (Table 1)",
        "",
        ("| rank | optimizer | η | bs | loss value | content | style | eval loss | steps | images seen "
        "| training time | status |"),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, r in enumerate(ranked, 1):
        rank = str(i) if r.status == "ok" else "–"
        lines.append(
            f"| {rank} | {r.optimizer} | {r.lr:g} | {r.batch_size} | {_fmt(r.loss)} | {_fmt(r.content)} | "
            f"{_fmt(r.style)} | {_fmt(r.eval_loss)} | {r.steps} | {r.images_seen} | {_fmt_time(r.train_time_s)} "
            f"| {r.status} |"
        )
    ok = [r for r in ranked if r.status == "ok"]
    if ok:
        lines += ["", "Ranking (by eval loss, lower is better): " + " < ".join(r.optimizer for r in ok) + "."]
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        lines += ["", "## Runs that did not finish well", ""]
        lines += [f"- `{r.name}`: {r.status} at step {r.steps}/{r.total_steps}" + (f": {r.error}" if r.error else "")
                  for r in failed]  # fmt: skip
    lines += [
        "",
        "## All runs",
        "",
        "| run | loss value | content | style | eval loss | steps | images seen | training time | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(runs, key=lambda r: (r.optimizer, r.lr, r.batch_size)):
        lines.append(
            f"| `{r.name}` | {_fmt(r.loss)} | {_fmt(r.content)} | {_fmt(r.style)} | {_fmt(r.eval_loss)} "
            f"| {r.steps}/{r.total_steps} | {r.images_seen} | {_fmt_time(r.train_time_s)} | {r.status} |"
        )
    if images:
        lr, bs = meta.get("default_setting", STUDY_DEFAULT)
        note = "" if (lr, bs) == STUDY_DEFAULT else " (the study's η 1e-3, bs 4 was not swept: the closest setting)"
        lines += ["", "## Figures", "",
                  (f"`grid.jpg` and `losses.png` (the study's Figs 3.1 and 3.2) show every optimizer at η={lr:g}, "
                  f"bs={bs}{note}; `grid_best.jpg` and `losses_best.png` (Fig 3.3) each optimizer at its best "
                  "setting. Loss curves are plotted against images seen when their batch sizes differ."), ""]  # fmt: skip
        lines += [f"![{label}]({path})" for label, path in images.items()]
    return "\n".join(lines) + "\n"


def write_report(sweep_dir: str | os.PathLike, runs: Sequence[RunResult], meta: dict[str, Any],
                 content: Image.Image | None = None, style: Image.Image | None = None) -> dict[str, Path]:
    """Write the figures (stylestream.train.sweep_figures), report.md and report.json. Returns the paths
    written."""
    from stylestream.train.sweep_figures import write_figures

    sweep_dir = Path(sweep_dir)
    written = write_figures(sweep_dir, runs, meta, content, style)
    images = {k: str(p.relative_to(sweep_dir)) for k, p in written.items()}
    written["md"] = sweep_dir / "report.md"
    written["md"].write_text(markdown_report(runs, meta, images))
    best = {r.optimizer: r for r in ranking(runs)}
    payload = {
        "meta": meta,
        "fairness": fairness_statement(meta, runs),
        "tail_fraction": TAIL_FRACTION,
        "ranking": [r.optimizer for r in ranking(runs) if r.status == "ok"],
        "best": {opt: r.name for opt, r in best.items()},
        "runs": [r.to_json() for r in runs],
        "figures": images,
    }
    written["json"] = sweep_dir / "report.json"
    written["json"].write_text(json.dumps(payload, indent=2, default=str))
    log.info("sweep report written to %s", written["md"])
    return written
