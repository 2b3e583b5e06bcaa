"""`stylestream bench gpu`: every GPU feature, run and measured by one command (about 8 minutes on one
H100/H200), written as PREFIX.md (a section for bench/RESULTS.md) and PREFIX.json. This module runs
steps and writes their results; the steps themselves are in stylestream.bench.gpu_steps (STEPS).

The steps are independent: each runs in its own thread with its own time budget (a share of
--budget-s), records its figures as it goes, and ends "ok", "skipped" (with the reason: a
library or device missing here) or "failed" (with the traceback); the rest go on either way, and the
outputs are rewritten after every step so a killed run keeps what it measured. Parts of a step that
cannot run here (TensorRT, ONNX Runtime's CUDA providers, aiortc) say "not available here: <why>".
`--quick --device cpu` runs the same code at tiny sizes in seconds (CI keeps the script correct);
its numbers mean nothing. Goals are reported next to the figures, never enforced."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.bench import output_path
from stylestream.registry import Registry

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
MEDIA = REPO / "tests" / "data" / "media"  # real photos and clips that ship with the repository
COCO_TRAIN_IMAGES = 118_287  # COCO 2017 train: the optimizer study's data set
STUDY_EPOCHS = 2
GOALS = {
    "train_speedup": "stylestream's training step ≥ 4× the pytorch/examples step (one H100)",
    "study_hours": "8 optimizers × 2 epochs of COCO 2017 train in < 1 hour (one H100)",
    "fp16_1080p_ms": "johnson FP16 at 1920×1080 ≤ 3 ms per frame",
    "fps_720p": "≥ 1000 frames/s aggregate at 1280×720 with batching",
}


class Skip(Exception):
    """This step, or a part of it, cannot run here; the message says why (what is missing)."""


class OutOfTime(Exception):
    """Too little of the step's time budget is left for this part."""


# --------------------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[Context], None]  # records into ctx.figures as it goes
    budget_s: float  # its share of a full run; scaled so that the steps run fit --budget-s
    render: Callable[[dict[str, Any]], list[str]] | None = None  # figures -> Markdown lines


def steps() -> Registry[Step]:
    """The registry of the steps, in the order they run (stylestream.bench.gpu_steps.STEPS)."""
    from stylestream.bench.gpu_steps import STEPS  # the steps import this module

    return STEPS


@dataclass
class Shared:
    """What the steps of one run share: the device, the scratch folder, and things made once on demand
    (a random-weight model, exported files), so that any step can run without the others."""

    device: str
    quick: bool
    work: Path
    media: Path
    cache: dict[Any, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def photos(self) -> Path:
        folder = self.media / "content"
        if not any(folder.glob("*.jpg")):
            raise Skip(f"needs the photos in {folder} (run from the repository, or pass --media)")
        return folder

    def style_image(self) -> Path:
        path = self.media / "styles" / "starry_night.jpg"
        if not path.is_file():
            raise Skip(f"needs the style image {path} (run from the repository, or pass --media)")
        return path

    def frame(self, h: int, w: int, i: int = 0) -> np.ndarray:
        """A real photo, centre-cropped to the aspect ratio and resized to (h, w): uint8 RGB."""
        import cv2

        paths = sorted(self.photos().glob("*.jpg"))
        img = cv2.imread(str(paths[i % len(paths)]))[..., ::-1]
        ih, iw = img.shape[:2]
        s = min(ih / h, iw / w)
        ch, cw = round(h * s), round(w * s)
        y, x = (ih - ch) // 2, (iw - cw) // 2
        return np.ascontiguousarray(cv2.resize(img[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA))

    def model(self) -> Path:
        """A johnson network with random weights (the speed of a trained one); tiny in --quick."""
        with self.lock:
            if "model" not in self.cache:
                import torch

                from stylestream.models import build_model, save_model

                torch.manual_seed(0)
                cfg = {"width": 8, "res_blocks": 1} if self.quick else {}
                path = self.work / "johnson.pt"
                save_model(build_model("johnson", **cfg), path, card={"note": "random weights: speed only"})
                self.cache["model"] = path
            return self.cache["model"]

    def require(self, fmt: str) -> None:
        """Skip, saying what is missing, when this machine cannot export `fmt`."""
        from stylestream.export import FORMATS

        row = FORMATS[fmt]
        missing = row.requires.missing() if row.requires else []
        if missing:
            raise Skip(f"missing {' and '.join(missing)}")

    def export(self, fmt: str, precision: str, verify: bool = False) -> Any:
        """`stylestream export` of the model to fmt at precision (once per run; an earlier verified
        export is reused). Skip when the format needs what this machine lacks."""
        from stylestream.export import FORMATS, ExportError, ExportOptions, export

        key = ("export", fmt, precision)
        with self.lock:
            if key in self.cache and (self.cache[key].verification or not verify):
                return self.cache[key]
        self.require(fmt)
        row = FORMATS[fmt]
        # verification runs the reference in PyTorch on the CPU: two sizes, two photos keep it to seconds
        sizes = [(64, 64)] if self.quick else [(240, 320), (480, 640)]
        opts = ExportOptions(precision=precision, device="cuda" if self.cuda else "cpu", verify=verify,
                             thumbnail=False, verify_images=self.photos(), verify_frames=1 if self.quick else 2,
                             verify_sizes=sizes,
                             calibration=self.photos() if precision == "int8" or row.calibration else None)  # fmt: skip
        out = self.work / "export" / f"johnson-{fmt}-{precision}{row.suffix}"
        try:
            result = export(self.model(), fmt, out, opts)
        except ExportError as exc:
            if "not possible here" in str(exc):
                raise Skip(str(exc)) from None
            raise
        with self.lock:
            self.cache[key] = result
        return result


class Context:
    """One step's view: the shared things, its figures, its time budget."""

    def __init__(self, shared: Shared, budget_s: float) -> None:
        self.shared = shared
        self.device = shared.device
        self.quick = shared.quick
        self.budget_s = budget_s
        self.started = time.monotonic()
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def deadline(self) -> float:
        return self.started + self.budget_s

    def check_time(self, need_s: float) -> None:
        """OutOfTime (the part is reported as skipped) when less than `need_s` of the budget is left."""
        if self.left() < need_s:
            raise OutOfTime(f"skipped: out of this step's time budget ({self.budget_s:.0f} s)")

    @contextlib.contextmanager
    def part(self, rows: list[dict[str, Any]], row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """One independent part of a step, added to `rows` as `row`: "ok", "not available here: <why>",
        skipped (OutOfTime) or "failed" with its traceback. The step goes on with its next part either way."""
        rows.append(row)
        try:
            yield row
        except OutOfTime as exc:
            row["status"] = str(exc)
        except Exception as exc:  # noqa: BLE001 -- one part's failure is reported, the step goes on
            reason = _unavailable(exc)
            if reason is not None:
                row["status"] = f"not available here: {reason}"
            else:
                row["status"] = "failed"
                row["error"] = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
                row["traceback"] = traceback.format_exc()
                log.warning("%s: %s", row.get("runtime") or row.get("format") or row, row["error"])
        else:
            row.setdefault("status", "ok")


def _unavailable(exc: BaseException) -> str | None:
    """Why a library or device is missing, for errors that mean just that; None for real failures."""
    from stylestream.runtime import BackendUnavailable

    if isinstance(exc, (Skip, BackendUnavailable)):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError):
        return f"the {exc.name} Python package is not installed"
    return None


# ------------------------------------------------------------------------------------------ running


@dataclass
class Options:
    device: str = "auto"
    quick: bool = False
    steps: list[str] | None = None  # None: all, in registry order
    budget_s: float = 480.0  # the whole run
    output: Path = Path("out/bench/gpu")
    media: Path = MEDIA
    command: str | None = None  # as typed, for the report


ABANDONED: list[threading.Thread] = []  # steps still running past their hard limit (the CLI exits hard)


def run_step(s: Step, ctx: Context, grace_s: float = 30.0) -> dict[str, Any]:
    """Run one step in a thread, waiting at most 1.5x its budget + `grace_s`; its result record. A step
    still running then is abandoned (a thread cannot be stopped) and reported as failed."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            s.run(ctx)
        except Skip as exc:
            box["reason"] = str(exc)
        except BaseException as exc:  # noqa: BLE001 -- reported with its traceback; the next step runs
            box["error"] = f"{type(exc).__name__}: {str(exc).strip()[:1000]}"
            box["traceback"] = traceback.format_exc()

    t0 = time.monotonic()
    thread = threading.Thread(target=target, name=f"bench-gpu-{s.name}", daemon=True)
    thread.start()
    hard = ctx.budget_s * 1.5 + grace_s
    thread.join(hard)
    out: dict[str, Any] = {"title": s.title, "budget_s": round(ctx.budget_s, 1)}
    if thread.is_alive():
        ABANDONED.append(thread)
        out.update(status="failed", error=f"still running after {hard:.0f} s (budget {ctx.budget_s:.0f} s): "
                                          "abandoned; later steps share the device with it")  # fmt: skip
    elif "error" in box:
        out.update(status="failed", error=box["error"], traceback=box["traceback"])
    elif "reason" in box:
        out.update(status="skipped", reason=box["reason"])
    else:
        out["status"] = "ok"
    out["seconds"] = round(time.monotonic() - t0, 2)
    out["figures"] = json.loads(json.dumps(ctx.figures, default=str))  # a copy: an abandoned step may go on
    if ctx.notes:
        out["notes"] = list(ctx.notes)
    return out


@contextlib.contextmanager
def _one_thread(active: bool) -> Iterator[None]:
    """--quick on CPU: one compute thread for torch and ONNX Runtime. Its tiny sizes gain nothing from
    more, and on a loaded CI machine more threads spin-wait on each other (stylestream.devices)."""
    if not active:
        yield
        return
    import torch

    env, threads = os.environ.get("STYLESTREAM_THREADS"), torch.get_num_threads()
    os.environ["STYLESTREAM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("STYLESTREAM_THREADS", None)
        else:
            os.environ["STYLESTREAM_THREADS"] = env


def run_bench(opts: Options, registry: Registry[Step] | None = None,
              on_result: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the selected steps on opts.device; writes PREFIX.md and PREFIX.json after every step and
    returns the report. An unknown step name raises UnknownNameError before anything runs."""
    from stylestream import __version__, devices

    registry = registry if registry is not None else steps()
    selected = [registry[n] for n in (opts.steps or registry.names())]
    device = devices.resolve_name(opts.device)
    scale = opts.budget_s / max(1e-9, sum(s.budget_s for s in selected))
    report: dict[str, Any] = {
        "benchmark": "stylestream bench gpu", "stylestream": __version__, "device": device,
        "device_name": devices.device_name(device), "quick": opts.quick, "budget_s": opts.budget_s,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": opts.command,
        "steps": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="stylestream-bench-gpu-") as tmp, \
            _one_thread(opts.quick and device == "cpu"):  # fmt: skip
        report["device_name"] = devices.device_name(device)
        shared = Shared(device, opts.quick, Path(tmp), Path(opts.media))
        for s in selected:
            log.info("step %s (budget %.0f s)", s.name, s.budget_s * scale)
            result = run_step(s, Context(shared, s.budget_s * scale))
            report["steps"][s.name] = result
            write_outputs(report, opts.output, registry)
            if on_result is not None:
                on_result(s.name, result)
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_outputs(report, opts.output, registry)
    return report


# ------------------------------------------------------------------------------------------ writing


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v).replace("|", "/").replace("\n", " ")


def table(rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, str]]) -> list[str]:
    """Markdown table of `rows` by (key, header) columns; a row's status shows where it has no figures."""
    if not rows:
        return []
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(k)) for k, _ in cols) + " |")
    return out


def _generic(figures: dict[str, Any]) -> list[str]:
    return [f"- {k}: {_cell(v)}" for k, v in figures.items() if not isinstance(v, (list, dict))]


def to_markdown(report: dict[str, Any], registry: Registry[Step] | None = None) -> str:
    registry = registry if registry is not None else steps()
    done = report["steps"]
    md = [f"## GPU benchmark: {report['device_name']}", "",
          f"`{report.get('command') or 'stylestream bench gpu'}` — stylestream {report['stylestream']}, "
          f"started {report['started']}, budget {report['budget_s']:.0f} s"
          + (" — **--quick: tiny sizes, the numbers mean nothing**" if report["quick"] else "") + ".", "",
          "| step | status | seconds (budget) |", "|---|---|---|"]  # fmt: skip
    for name, r in done.items():
        why = r.get("reason") or r.get("error")
        status = r["status"] + (f": {why}" if why else "")
        md.append(f"| {name} | {_cell(status)} | {r['seconds']} ({r['budget_s']}) |")
    goals = [g for r in done.values() for g in r["figures"].get("goals", [])]
    if goals:
        md += ["", "Goals (reported, never enforced):", ""]
        md += table(goals, [("goal", "goal"), ("measured", "measured"), ("met", "met")])
    for name, r in done.items():
        md += ["", f"### {r['title']} (`{name}`)", ""]
        render = registry[name].render if name in registry else None
        body = (render or _generic)(r["figures"]) if r["figures"] else []
        md += body or [f"_{r['status']}_" + (f": {r.get('reason') or r.get('error')}" if r["status"] != "ok" else "")]
        for note in r.get("notes", []):
            md.append(f"- note: {note}")
        if r.get("traceback"):
            md += ["", "<details><summary>traceback</summary>", "", "```", r["traceback"].rstrip(), "```", "</details>"]
    return "\n".join(md) + "\n"


def write_outputs(report: dict[str, Any], prefix: Path, registry: Registry[Step] | None = None) -> tuple[Path, Path]:
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    md, js = output_path(prefix, ".md"), output_path(prefix, ".json")
    md.write_text(to_markdown(report, registry))
    js.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return md, js


# ------------------------------------------------------------------------------------------ helpers


def goal(key: str, measured: str, met: bool | None) -> dict[str, Any]:
    return {"goal": GOALS[key], "measured": measured, "met": met}


class GpuUtil:
    """GPU utilisation sampled every `period` s while in the `with` block: torch.cuda.utilization (NVML),
    else nvidia-smi; nothing on CPU."""

    def __init__(self, device: str, period: float = 0.25) -> None:
        self.device, self.period = device, period
        self.samples: list[float] = []
        self.source: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        import torch

        if self.source in (None, "nvml"):
            try:
                v = float(torch.cuda.utilization(torch.device(self.device)))
                self.source = "nvml"
                return v
            except Exception:  # noqa: BLE001 -- no pynvml: try nvidia-smi
                self.source = "nvidia-smi"
        index = torch.device(self.device).index or 0
        try:
            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", str(index)]
            out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            self.source = "unavailable"
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            v = self._read()
            if v is None:
                return
            self.samples.append(v)

    def __enter__(self) -> GpuUtil:  # noqa: PYI034
        if self.device.startswith("cuda"):
            self._thread = threading.Thread(target=self._loop, name="bench-gpu-util", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def summary(self) -> dict[str, Any] | None:
        if not self.samples:
            return None
        return {"mean_pct": round(statistics.fmean(self.samples), 1), "max_pct": max(self.samples),
                "samples": len(self.samples), "source": self.source}  # fmt: skip


def time_calls(fn: Callable[[], Any], reps: int, warmup: int, sync: Callable[[], None],
               deadline: float | None = None) -> dict[str, float]:  # fmt: skip
    """Median and min ms of `fn` (synchronized), after `warmup` calls; the first call's seconds (compile,
    autotuning) separately. Stops early, keeping at least 3 timed calls, past `deadline` (monotonic)."""
    t = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t
    for _ in range(max(0, warmup - 1)):
        fn()
    sync()
    times: list[float] = []
    for _ in range(reps):
        if deadline is not None and time.monotonic() > deadline and len(times) >= 3:
            break
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "reps": len(times), "first_call_s": first}


def _sync(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return lambda: torch.cuda.synchronize(torch.device(device))
    return lambda: None


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
