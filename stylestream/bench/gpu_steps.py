"""The steps of `stylestream bench gpu` (see stylestream.bench.gpu), in the order they run. Each records
its figures into ctx.figures as it goes; budgets are shares of a full ~8 minute run on one H100/H200."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.util
import itertools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.bench.gpu import (
    COCO_TRAIN_IMAGES,
    REPO,
    STUDY_EPOCHS,
    Context,
    GpuUtil,
    Skip,
    Step,
    _sync,
    _version,
    goal,
    table,
    time_calls,
)
from stylestream.registry import Registry

STEPS: Registry[Step] = Registry("bench step")

Render = Callable[[dict[str, Any]], list[str]]


def step(name: str, title: str, budget_s: float,
         render: Render | None = None) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:  # fmt: skip
    """Register a step (in order); `budget_s` is its share of a full ~8 minute run."""

    def deco(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        STEPS.add(name, Step(name, title, fn, budget_s, render), title)
        return fn

    return deco

# ---------------------------------------------------------------------------------------- environment


def _nvidia_smi(query: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], check=False,
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _render_env(f: dict[str, Any]) -> list[str]:
    return [f"- **{k}**: {v if v is not None else '—'}" for k, v in f.items()]


@step("env", "Environment", 5, _render_env)
def env(ctx: Context) -> None:
    import torch

    from stylestream import devices

    f = ctx.figures
    f["device"] = devices.device_name(ctx.device)
    if ctx.shared.cuda:
        props = torch.cuda.get_device_properties(torch.device(ctx.device))
        f["gpu"] = props.name
        f["gpus"] = torch.cuda.device_count()
        f["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        f["compute_capability"] = f"{props.major}.{props.minor}"
        f["multiprocessors"] = props.multi_processor_count
        f["driver"] = _nvidia_smi("driver_version")
    f["cuda (torch build)"] = torch.version.cuda
    f["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    f["torch"] = torch.__version__
    f["python"] = platform.python_version()
    f["cpu"] = f"{devices.cpu_model()}, {devices.available_cores()} cores"
    f["onnxruntime"] = _version("onnxruntime") or _version("onnxruntime-gpu")
    try:
        import onnxruntime

        f["onnxruntime providers"] = ", ".join(onnxruntime.get_available_providers())
    except ImportError:
        f["onnxruntime providers"] = None
    f["tensorrt"] = _version("tensorrt") or ("installed" if importlib.util.find_spec("tensorrt") else "not installed")
    for dist in ("triton", "aiortc", "av", "nvidia-ml-py", "onnxconverter-common", "onnxslim"):
        f[dist] = _version(dist) or "not installed"


# ------------------------------------------------------------------------------------------- training


def _render_train(f: dict[str, Any]) -> list[str]:
    head = [f"johnson at {f.get('size')}², Adam, random-weight VGG-16; images/s (median of timed steps).", ""]
    return head + table(f.get("rows", []), [("batch", "batch"), ("variant", "step"), ("images_per_s", "images/s"),
                                             ("vs_baseline", "× pytorch/examples"), ("status", "status")])  # fmt: skip


@step("train", "Training step: stylestream vs pytorch/examples", 75, _render_train)
def train(ctx: Context) -> None:
    import torch

    from stylestream.bench.baseline import Baseline, StylestreamStep, measure
    from stylestream.train.data import ImageFolderDataset
    from stylestream.train.images import load_image
    from stylestream.train.vgg import load_vgg

    dev = torch.device(ctx.device)
    size, batches, (steps, warmup, rounds) = (32, (2,), (1, 1, 1)) if ctx.quick else (256, (4, 16), (5, 2, 2))
    data = ImageFolderDataset(ctx.shared.photos(), size)  # real photos, resized and cropped
    style = load_image(ctx.shared.style_image(), size=size)
    rows: list[dict[str, Any]] = []
    ctx.figures.update(size=size, rows=rows)
    for i, batch in enumerate(batches):
        x = torch.stack([data[j % len(data)] for j in range(batch)]).to(dev)
        variants = [Baseline(style, batch, dev, load_vgg("random", device=dev).features),
                    StylestreamStep(style, dev, load_vgg("random", device=dev), False, True),
                    StylestreamStep(style, dev, load_vgg("random", device=dev), True, True)]  # fmt: skip
        # the first batch size may use half of what is left, the last all of it
        deadline = time.monotonic() + ctx.left() / (len(batches) - i)
        ips = measure(variants, x, steps, warmup, rounds, deadline=deadline).images_per_s()
        base = ips.get(Baseline.name)
        for v in variants:
            rows.append({"batch": batch, "variant": v.name, "images_per_s": round(ips[v.name], 2),
                         "vs_baseline": round(ips[v.name] / base, 2) if base else None, "status": "ok"})  # fmt: skip
        del variants, x
        if ctx.shared.cuda:
            torch.cuda.empty_cache()
    best = max((r for r in rows if r["variant"] != Baseline.name and r["vs_baseline"]),
               key=lambda r: r["vs_baseline"], default=None)  # fmt: skip
    if best is not None:
        met = best["vs_baseline"] >= 4.0 if ctx.shared.cuda and not ctx.quick else None
        ctx.figures["goals"] = [goal("train_speedup", f"{best['vs_baseline']}× ({best['variant']}, batch "
                                                      f"{best['batch']}, {ctx.figures['size']}²)", met)]  # fmt: skip


# ------------------------------------------------------------------------------------------ lockstep


def _training_folder(ctx: Context, n: int, side: int) -> Path:
    """n real photos (crops of the repository's content photos) as JPEG files, for a data loader."""
    import cv2

    folder = ctx.shared.work / f"train-{n}-{side}"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for i in range(n):
            frame = ctx.shared.frame(side + 8 * (i % 5), side + 8 * (i % 3), i)  # a different crop each
            cv2.imwrite(str(folder / f"{i:04d}.jpg"), frame[..., ::-1].copy())
    return folder


def _mark(marks: dict[int, float], cfg: Any, step: int, losses: Any) -> None:
    marks[step] = time.perf_counter()  # the last run's end of each step: group steps are the gaps


def _render_lockstep(f: dict[str, Any]) -> list[str]:
    out = [(f"{len(f.get('optimizers', []))} optimizers in one lockstep group, {f.get('arch')} at "
            f"{f.get('size')}², batch {f.get('batch')}, {f.get('steps')} steps; random-weight VGG-16. "
            f"Fused lockstep: {f.get('fused')}."), ""]  # fmt: skip
    out += table(f.get("groups", []), [("variant", "variant"), ("group_step_ms", "group step ms"),
                                       ("per_model_images_per_s", "images/s per model"),
                                       ("group_images_per_s", "images/s, all models"),
                                       ("projected_study_hours", "projected study, hours"), ("wall_s", "wall s"),
                                       ("status", "status")])  # fmt: skip
    runs = f.get("runs", [])
    if runs:
        out += ["", "Per run (own compute + its share of the shared work):", ""]
        out += table(runs, [("variant", "variant"), ("optimizer", "optimizer"), ("status", "status"),
                            ("images_per_s", "images/s"), ("error", "error")])  # fmt: skip
    return out


@step("lockstep", "Lockstep sweep: 8 optimizers in one group", 90, _render_lockstep)
def lockstep(ctx: Context) -> None:
    from stylestream.cli_choices import STUDY_OPTIMIZERS
    from stylestream.train.config import TrainConfig
    from stylestream.train.lockstep import train_lockstep

    # --quick: the small `lite` net, so that 8 runs take seconds on 2 cores; the study trains johnson
    arch, size, batch, steps, images = ("lite", 32, 2, 2, 8) if ctx.quick else ("johnson", 256, 4, 25, 64)
    data = _training_folder(ctx, images, size + 32)
    style = ctx.shared.style_image()
    fused = [f.name for f in dataclasses.fields(TrainConfig) if "fused" in f.name]
    variants: list[tuple[str, dict[str, Any]]] = [("lockstep", {})]
    if fused:
        variants = [("fused", {fused[0]: "on"}), ("unfused", {fused[0]: "off"})]
    groups: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    ctx.figures.update(optimizers=list(STUDY_OPTIMIZERS), arch=arch, size=size, batch=batch, steps=steps,
                       fused=f"TrainConfig.{fused[0]}" if fused else "not implemented yet (no TrainConfig flag)",
                       groups=groups, runs=runs)  # fmt: skip
    study_steps = STUDY_EPOCHS * (COCO_TRAIN_IMAGES // batch)
    for i, (label, extra) in enumerate(variants):
        with ctx.part(groups, {"variant": label}) as row:
            ctx.check_time(5)
            marks: dict[int, float] = {}
            cfgs = [TrainConfig(style=str(style), data=str(data), out=str(ctx.shared.work / f"lockstep-{label}" / o),
                                arch=arch, optimizer=o, steps=steps, batch_size=batch, image_size=size,
                                vgg_weights="random", device=ctx.device, progress=False, checkpoint_every=10**6, log_every=10**6,
                                workers=None if ctx.shared.cuda else 0, **extra)
                    for o in STUDY_OPTIMIZERS]  # fmt: skip
            t0 = time.perf_counter()
            outcomes = train_lockstep(cfgs, on_step=functools.partial(_mark, marks), progress=False)
            row["wall_s"] = round(time.perf_counter() - t0, 2)
            ticks = [marks[s] for s in sorted(marks)]
            gaps = np.diff(ticks)  # step 2 onwards: the first step's autotuning is left out
            step_s = float(np.median(gaps)) if len(gaps) else row["wall_s"] / steps
            row.update(group_step_ms=round(step_s * 1000, 2), per_model_images_per_s=round(batch / step_s, 1),
                       group_images_per_s=round(len(cfgs) * batch / step_s, 1),
                       projected_study_hours=round(study_steps * step_s / 3600, 3))  # fmt: skip
            for oc, cfg in zip(outcomes, cfgs):
                ips = round(oc.step * batch / oc.seconds, 1) if oc.seconds else None
                runs.append({"variant": label, "optimizer": cfg.optimizer, "status": oc.status, "error": oc.error,
                             "images_per_s": ips})  # fmt: skip
        if i == 0 and ctx.left() < ctx.budget_s / 2 and len(variants) > 1:
            ctx.notes.append("the second variant may not fit the step's budget")
    done = [g for g in groups if "projected_study_hours" in g]
    if done:
        best = min(done, key=lambda g: g["projected_study_hours"])
        met = best["projected_study_hours"] < 1.0 if ctx.shared.cuda and not ctx.quick else None
        ctx.figures["goals"] = [goal("study_hours", f"{best['projected_study_hours']} h projected ({best['variant']}, "
                                                    f"{study_steps} group steps of batch {batch})", met)]  # fmt: skip


# -------------------------------------------------------------------------------- export and latency


def _render_export(f: dict[str, Any]) -> list[str]:
    return table(f.get("rows", []), [("format", "format"), ("precision", "precision"), ("status", "status"),
                                     ("min_psnr_db", "min PSNR dB"), ("floor_db", "floor dB"), ("passed", "passed"),
                                     ("size_mb", "MB"), ("seconds", "export s")])  # fmt: skip


@step("export", "Export: TensorRT FP32/FP16/INT8 (and ONNX) with verification", 70, _render_export)
def export(ctx: Context) -> None:
    rows: list[dict[str, Any]] = []
    ctx.figures["rows"] = rows
    items = [("onnx", "fp32"), ("onnx-fp16", "fp16"), ("tensorrt", "fp32"), ("tensorrt", "fp16"), ("tensorrt", "int8")]
    for fmt, precision in items:
        with ctx.part(rows, {"format": fmt, "precision": precision}) as row:
            ctx.shared.require(fmt)  # what is missing here is said even when time is short
            ctx.check_time(5)
            res = ctx.shared.export(fmt, precision, verify=True)
            v = res.verification or {}
            path = Path(res.path)
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            row.update(min_psnr_db=v.get("min_psnr_db"), floor_db=v.get("floor_db"), passed=v.get("passed"),
                       size_mb=round(sum(p.stat().st_size for p in files) / 1e6, 2), seconds=round(res.seconds, 1))  # fmt: skip


def _open_runtime(ctx: Context, label: str) -> tuple[Any, bool]:
    """(backend, runs device tensors) for one latency row; Skip when it cannot run here."""
    from stylestream.runtime import open_model

    model = ctx.shared.model()
    if label == "torch eager":
        return open_model(model, "torch", ctx.device), True
    if label == "torch compiled":
        if ctx.quick:
            raise Skip("--quick leaves torch.compile out (it takes minutes on a CPU)")
        return open_model(model, "torch", ctx.device, compile=True), True
    if label.startswith("onnxruntime"):
        import onnxruntime as ort

        provider = label.split()[1].lower()  # "onnxruntime CUDA EP" -> "cuda"
        name = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(provider)
        if name and not ctx.shared.cuda:
            raise Skip(f"{name} runs on a CUDA device; this run is on {ctx.device}")
        if name and name not in ort.get_available_providers():
            raise Skip(f"onnxruntime {ort.__version__} has no {name} (the CPU build; pip install onnxruntime-gpu)")
        fmt, precision = ("onnx-fp16", "fp16") if provider == "tensorrt" else ("onnx", "fp32")
        path = ctx.shared.export(fmt, precision).path
        return open_model(path, "onnxruntime", ctx.device, providers=(provider,)), False
    precision = label.split()[-1]  # "tensorrt fp16"
    if not ctx.shared.cuda:
        raise Skip(f"TensorRT engines run on a CUDA GPU; this run is on {ctx.device}")
    return open_model(ctx.shared.export("tensorrt", precision).path, "tensorrt", ctx.device), True


def _render_latency(f: dict[str, Any]) -> list[str]:
    out = [(f"johnson (random weights) per frame, model only: {f.get('input')}. Median of timed runs; "
            "first call s includes compilation/autotuning."), ""]  # fmt: skip
    return out + table(f.get("rows", []), [("runtime", "runtime"), ("describe", "runs as"), ("size", "W×H"),
                                           ("batch", "batch"), ("ms_per_frame", "ms/frame"), ("fps", "frames/s"),
                                           ("first_call_s", "first call s"), ("status", "status")])  # fmt: skip


@step("latency", "Inference latency per runtime", 110, _render_latency)
def latency(ctx: Context) -> None:
    import torch

    sizes = [(48, 64), (72, 128)] if ctx.quick else [(480, 640), (720, 1280), (1080, 1920)]
    batches = (1, 2) if ctx.quick else (1, 8)
    reps, warmup = (3, 1) if ctx.quick else (20, 3)
    labels = ["torch eager", "torch compiled", "onnxruntime CUDA EP", "onnxruntime TensorRT EP", "tensorrt fp16",
              "tensorrt fp32", "tensorrt int8"]  # fmt: skip
    if not ctx.shared.cuda:
        labels.append("onnxruntime CPU EP")  # so the host-array path is exercised where no GPU provider runs
    rows: list[dict[str, Any]] = []
    ctx.figures.update(rows=rows, input="device tensors for torch/TensorRT, host arrays for ONNX Runtime")
    for label in labels:
        header: dict[str, Any] = {"runtime": label}
        try:
            backend, on_device = _open_runtime(ctx, label)
        except Exception:  # reported as this row's status by ctx.part
            with ctx.part(rows, header):
                raise
            continue
        try:
            for h, w in sizes:
                for b in batches:
                    cell = {"runtime": label, "describe": backend.describe(), "size": f"{w}x{h}", "batch": b}
                    with ctx.part(rows, cell):
                        ctx.check_time(2)
                        cell.update(_time_cell(ctx, backend, on_device, h, w, b, reps, warmup))
        finally:
            backend.close()
            if ctx.shared.cuda:
                torch.cuda.empty_cache()
    _latency_goals(ctx, rows, sizes, batches)


def _time_cell(ctx: Context, backend: Any, on_device: bool, h: int, w: int, b: int, reps: int,
               warmup: int) -> dict[str, Any]:  # fmt: skip
    """One runtime at one size and batch: real photos, model only (device tensors where it takes them)."""
    import torch

    x = np.stack([ctx.shared.frame(h, w, i) for i in range(b)]).transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if on_device:
        xt = torch.from_numpy(x).to(ctx.device)
        t = time_calls(lambda: backend.run_tensor(xt), reps, warmup, _sync(ctx.device), ctx.deadline())
    else:
        t = time_calls(lambda: backend.run(x), reps, warmup, _sync(ctx.device), ctx.deadline())
    return {"ms_per_frame": round(t["median_ms"] / b, 3), "fps": round(b * 1000 / t["median_ms"], 1),
            "reps": t["reps"], "first_call_s": round(t["first_call_s"], 2)}  # fmt: skip


def _latency_goals(ctx: Context, rows: list[dict[str, Any]], sizes: list[tuple[int, int]], batches: tuple) -> None:
    timed = [r for r in rows if "ms_per_frame" in r]
    big = f"{sizes[-1][1]}x{sizes[-1][0]}"
    trt = [r for r in timed if r["runtime"] == "tensorrt fp16" and r["size"] == big and r["batch"] == 1]
    one = trt or sorted((r for r in timed if r["size"] == big and r["batch"] == 1), key=lambda r: r["ms_per_frame"])[:1]
    full = ctx.shared.cuda and not ctx.quick
    goals = []
    if one:
        r = one[0]
        what = f"{r['ms_per_frame']} ms ({r['runtime']}, {r['size']}, batch 1)"
        goals.append(goal("fp16_1080p_ms", what + ("" if trt else "; TensorRT FP16 did not run here"),
                          r["ms_per_frame"] <= 3.0 if full and trt else None))  # fmt: skip
    mid = f"{sizes[1][1]}x{sizes[1][0]}"
    batched = sorted((r for r in timed if r["size"] == mid and r["batch"] == batches[-1]), key=lambda r: -r["fps"])
    if batched:
        r = batched[0]
        what = f"{r['fps']} frames/s ({r['runtime']}, {r['size']}, batch {r['batch']}, model only)"
        goals.append(goal("fps_720p", what,
                          r["fps"] >= 1000 if full else None))  # fmt: skip
    ctx.figures["goals"] = goals


# --------------------------------------------------------------------------------------------- engine


def _stage_ms(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """ms per frame of each engine stage between two Engine.stats() snapshots."""
    out = {}
    for stage, a in after["stages"].items():
        b = before["stages"].get(stage, {"seconds": 0.0, "frames": 0})
        if a["frames"] > b["frames"]:
            out[stage] = round(1000 * (a["seconds"] - b["seconds"]) / (a["frames"] - b["frames"]), 3)
    return out


async def _drive(engine: Any, style: str, frames: list[np.ndarray], seconds: float,
                 at_least: int = 0) -> tuple[int, list[float], float]:  # fmt: skip
    """Each frame's caller submits, awaits, submits again for `seconds` (and at least `at_least` times):
    (frames done, latencies s, wall s)."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def caller(frame: np.ndarray) -> None:
        for i in itertools.count():
            if i >= at_least and time.monotonic() >= stop:
                break
            t = time.perf_counter()
            await engine.submit(style, frame)
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(f) for f in frames))
    return len(latencies), latencies, time.perf_counter() - t0


def _compare_paths(ctx: Context, model: Path, h: int, w: int) -> dict[str, Any]:
    """The same frames through the numpy and the tensor path on this device (strength 0.6, half scale:
    every stage): how far apart their uint8 results are. Within 1 level is the design."""
    from stylestream.plugins import Engine, PluginSet, plugin_from_model

    plugins = PluginSet()
    plugins.add(plugin_from_model(model), str(model))
    style = plugins.names()[0]
    frames = np.stack([ctx.shared.frame(h, w, i) for i in range(2)])
    out = {}
    for path in ("numpy", "tensor"):
        with Engine(plugins, backend="torch", device=ctx.device, frame_path=path) as eng:
            out[path] = [eng.process(style, frames, p).astype(np.int16) for p in ({}, {"strength": 0.6, "scale": 0.5})]
    diffs = [np.abs(a - b) for a, b in zip(out["numpy"], out["tensor"])]
    return {"max_abs_diff": int(max(d.max() for d in diffs)), "mean_abs_diff": round(float(np.mean(diffs)), 4),
            "frames": f"2 photos at {w}x{h}, scale 1 and 0.5 with strength 0.6"}  # fmt: skip


def _render_engine(f: dict[str, Any]) -> list[str]:
    out = [(f"`Engine.submit` from N concurrent callers at {f.get('size')}, johnson (random weights) on the torch "
            "backend; per-stage times from `Engine.stats()` (ms per frame; GPU stages are GPU time)."), ""]  # fmt: skip
    agree = f.get("paths_agree")
    if agree:
        out += [(f"numpy vs tensor path on this device ({agree['frames']}): max difference "
                 f"{agree['max_abs_diff']} levels, mean {agree['mean_abs_diff']}."), ""]  # fmt: skip
    rows = [{**r, **{f"stage_{k}": v for k, v in r.get("stages_ms", {}).items()}} for r in f.get("rows", [])]
    return out + table(rows, [("frame_path", "frame path"), ("callers", "callers"), ("fps", "frames/s"),
                              ("latency_p50_ms", "p50 ms"), ("latency_p95_ms", "p95 ms"), ("mean_batch", "batch"),
                              ("stage_queue", "queue"), ("stage_stage", "stage"), ("stage_upload", "upload"),
                              ("stage_prepare", "prepare"), ("stage_model", "model"), ("stage_finish", "finish"),
                              ("stage_download", "download"), ("gpu_util_pct", "GPU %"),
                              ("status", "status")])  # fmt: skip


@step("engine", "Engine: concurrent callers through Engine.submit", 45, _render_engine)
def engine(ctx: Context) -> None:
    from stylestream.plugins import Engine, PluginSet, plugin_from_model

    (h, w), callers, seconds = ((48, 64), (1, 4), 0.5) if ctx.quick else ((720, 1280), (1, 8, 32), 3.0)
    # on a GPU "auto" is the GPU-resident tensor path; the numpy path beside it shows what it saves
    paths = ("auto", "numpy") if ctx.shared.cuda else ("numpy", "tensor")
    rows: list[dict[str, Any]] = []
    ctx.figures.update(size=f"{w}x{h}", rows=rows)
    model = ctx.shared.model()
    ctx.figures["paths_agree"] = _compare_paths(ctx, model, h, w)
    for path in paths:
        for n in callers:
            with ctx.part(rows, {"frame_path": path, "callers": n}) as row:
                ctx.check_time(seconds + 2)
                plugins = PluginSet()
                plugins.add(plugin_from_model(model), str(model))
                style = plugins.names()[0]
                with Engine(plugins, backend="torch", device=ctx.device, max_batch=min(n, 32), frame_path=path) as eng:
                    frames = [ctx.shared.frame(h, w, i) for i in range(n)]
                    asyncio.run(_drive(eng, style, frames, 0.0, at_least=2))  # load, autotune, allocate
                    before = eng.stats()
                    with GpuUtil(ctx.device) as util:
                        done, lat, wall = asyncio.run(_drive(eng, style, frames, seconds))
                    after = eng.stats()
                    row.update(frame_path=eng.frame_path_of(style), max_batch=min(n, 32), frames=done,
                               fps=round(done / wall, 1),
                               latency_p50_ms=round(1000 * float(np.percentile(lat, 50)), 2),
                               latency_p95_ms=round(1000 * float(np.percentile(lat, 95)), 2),
                               mean_batch=round((after["frames"] - before["frames"])
                                                / max(1, after["batches"] - before["batches"]), 2),
                               stages_ms=_stage_ms(before, after),
                               gpu_util_pct=(util.summary() or {}).get("mean_pct"))  # fmt: skip


# ---------------------------------------------------------------------------------------------- serve


def _render_serve(f: dict[str, Any]) -> list[str]:
    return table(f.get("rows", []), [("peers", "peers"), ("size", "W×H"), ("fps_per_stream_mean", "fps/stream"),
                                     ("latency_p50_ms", "p50 ms"), ("latency_p95_ms", "p95 ms"),
                                     ("dropped_pct", "dropped %"), ("server_cpu_pct", "server CPU %"),
                                     ("gpu_util_pct", "GPU %"), ("status", "status")])  # fmt: skip


def _repo_module(relpath: str, name: str) -> Any:
    """A script of the repository's bench/ folder as a module (they are not part of the package)."""
    path = REPO / relpath
    if not path.is_file():
        raise Skip(f"needs {relpath} from the repository")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@step("serve", "serve: aiortc peers on loopback", 45, _render_serve)
def serve(ctx: Context) -> None:
    missing = [m for m in ("aiortc", "av") if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"{' and '.join(missing)} not installed (pip install aiortc av)")
    load = _repo_module("bench/serve_load.py", "stylestream_bench_serve_load")
    from tests.serve_process import free_port
    from tests.stream.rtc_client import load_clip

    peers, (w, h), seconds = (1, (160, 120), 2.0) if ctx.quick else (8, (1280, 720), 8.0)
    folder = ctx.shared.work / "serve-styles"
    folder.mkdir(exist_ok=True)
    (folder / "johnson.pt").write_bytes(ctx.shared.model().read_bytes())
    port = free_port()
    log_file = ctx.shared.work / "serve.log"
    cmd = [sys.executable, "-m", "stylestream", "serve", "--port", str(port), "--ice-interface", "lo",
           "--max-sessions", "64", "--plugins", str(folder), "--no-user-plugins", "--device", ctx.device,
           "--backend", "torch"]  # fmt: skip
    rows: list[dict[str, Any]] = []
    ctx.figures["rows"] = rows
    with open(log_file, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_child_env())
    try:
        _wait_for_server(proc, log_file, 60)
        clip = load_clip(REPO / "tests" / "data" / "media" / "video" / "webcam_walk.mkv", (w, h))
        with GpuUtil(ctx.device) as util, ctx.part(rows, {"peers": peers, "size": f"{w}x{h}"}) as row:
            url = f"http://127.0.0.1:{port}"
            row.update(asyncio.run(load.run_load(url, proc.pid, peers, seconds, "johnson", clip)))
            row["gpu_util_pct"] = (util.summary() or {}).get("mean_pct")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _child_env() -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH (the GPU machine runs the
    project from its working tree, and carried wheels may be on the path too)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}


def _wait_for_server(proc: subprocess.Popen, log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_file.read_text()
        if "http://" in text and "open" in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"stylestream serve exited with {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"stylestream serve was not ready after {timeout:.0f} s:\n{log_file.read_text()[-2000:]}")


# ------------------------------------------------------------------------------------------------ DDP


@step("ddp", "DDP: two processes", 30)
def ddp(ctx: Context) -> None:
    import torch

    if not ctx.shared.cuda:
        raise Skip("this step measures GPUs; DDP on CPU (gloo) is tested by tests/train/test_ddp.py")
    if torch.cuda.device_count() < 2:
        raise Skip(f"one GPU here ({torch.cuda.device_count()}): stylestream's DDP uses NCCL on CUDA, and NCCL "
                   "refuses two ranks on one device; it needs two GPUs")  # fmt: skip
    steps, batch = 20, 4
    out = ctx.shared.work / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "stylestream",
           "train", "--style", str(ctx.shared.style_image()),
           "--data", str(_training_folder(ctx, 32, 288)), "--out", str(out), "--steps", str(steps),
           "--batch-size", str(batch), "--vgg-weights", "random", "--no-progress", "--device", "cuda"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=max(10.0, ctx.left()),
                          env=_child_env())  # fmt: skip
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with {done.returncode}:\n{done.stderr[-2000:]}")
    ctx.figures.update(processes=2, steps=steps, batch_per_process=batch, wall_s=round(wall, 1),
                       images_per_s_incl_startup=round(2 * batch * steps / wall, 1))  # fmt: skip
    ctx.notes.append("wall time includes process start, NCCL setup and the first step's autotuning")

