"""The format benchmark: export a model to each format, then time it (median of >= 20 runs after
warm-up, batch 1) at several frame sizes and measure PSNR vs PyTorch FP32 on real frames.
Reports what ran where (runtime/provider, device, threads); never gates anything on time."""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.export.formats import FORMATS, ExportError

log = logging.getLogger(__name__)

DEFAULT_SIZES = [(240, 320), (480, 640), (720, 1280)]


def model_gflops(model: Any, h: int, w: int) -> float:
    """Forward GFLOPs of one (1, 3, h, w) frame, counted by PyTorch (convs + matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, h, w))
    return counter.get_total_flops() / 1e9


def time_runner(run: Any, x: np.ndarray, reps: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "reps": reps}


def machine_info(device: str) -> dict[str, Any]:
    import onnxruntime
    import torch

    info = {"device": device, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}  # fmt: skip
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _runners_for(fmt_name: str, path: Path, device: str) -> list[tuple[str, Any]]:
    from stylestream.export.runners import OrtRunner

    fmt = FORMATS[fmt_name]
    if fmt_name.startswith("onnx") and device == "cuda":
        out = [(fmt_name, OrtRunner(path, "cuda"))]
        try:
            out.append((f"{fmt_name} (TensorRT EP)", OrtRunner(path, "trt-ep")))
        except ExportError as exc:
            log.warning("TensorRT EP unavailable: %s", exc)
        return out
    return [(fmt_name, fmt.open_runner(path, device))]


def run_benchmark(model_path: str | Path, formats: list[str], sizes: list[tuple[int, int]] | None = None,
                  device: str = "cpu", reps: int = 20, warmup: int = 3, calibration: Path | None = None,
                  images: Path | None = None, torch_baselines: tuple[str, ...] = ("eager",),
                  precision: str = "fp16") -> dict[str, Any]:  # fmt: skip
    """Export `model_path` to each format into a scratch folder and benchmark it.

    Returns {"machine", "model", "sizes", "rows": [{"format", "runtime", "size_mb", "psnr_db",
    "latency": {"HxW": {"median_ms", "min_ms", "reps"}}}], "gflops": {"HxW": float}}."""
    import torch

    from stylestream.export.exporter import _load, export, preflight
    from stylestream.export.frames import default_images, fit, load_frames, to_nchw
    from stylestream.export.options import ExportOptions
    from stylestream.export.runners import compiled_runner, eager_runner
    from stylestream.export.verify import psnr

    if reps < 20:
        log.warning("reps=%d: fewer than the 20 runs the published tables use", reps)
    sizes = sizes or DEFAULT_SIZES
    model_path = Path(model_path)
    model = _load(model_path)
    frame = load_frames(images or calibration or default_images(), 1)[0]
    inputs = {f"{h}x{w}": to_nchw([fit(frame, h, w)]) for h, w in sizes}
    with torch.inference_mode():
        refs = {k: model(torch.from_numpy(x)).numpy() for k, x in inputs.items()}
    result: dict[str, Any] = {
        "machine": machine_info(device), "model": str(model_path),
        "architecture": dict(getattr(model, "stylestream_config", {})),
        "sizes": list(inputs), "reps": reps, "warmup": warmup,
        "gflops": {k: round(model_gflops(model, *map(int, k.split("x"))), 3) for k in inputs},
        "rows": [],
    }  # fmt: skip

    def measure(name: str, runner: Any, size_mb: float | None) -> None:
        row: dict[str, Any] = {"format": name, "runtime": runner.desc, "size_mb": size_mb, "latency": {}}
        worst = float("inf")
        for key, x in inputs.items():
            worst = min(worst, psnr(runner(x), refs[key]))
            row["latency"][key] = {k: round(v, 2) if isinstance(v, float) else v
                                   for k, v in time_runner(runner, x, reps, warmup).items()}  # fmt: skip
            log.info("%-22s %-9s %8.1f ms", name, key, row["latency"][key]["median_ms"])
        row["psnr_db"] = round(worst, 2) if np.isfinite(worst) else "inf"
        result["rows"].append(row)

    from tqdm import tqdm

    for base in tqdm(torch_baselines, desc="torch baselines", leave=False):
        maker = {"eager": eager_runner, "compile": compiled_runner}[base]
        measure(f"torch {base}", maker(model, device), None)

    with tempfile.TemporaryDirectory(prefix="stylestream-bench-") as tmp:
        for name in tqdm(formats, desc="formats", leave=False):
            opts = ExportOptions(calibration=calibration, verify=False, thumbnail=False, precision=precision,
                                 device=device)  # fmt: skip
            fmt = FORMATS[name]
            try:
                preflight(fmt, opts)
            except ExportError as exc:
                result["rows"].append({"format": name, "skipped": str(exc)})
                continue
            out = Path(tmp) / (name if fmt.suffix == "" else f"m{fmt.tag}{fmt.suffix}")
            res = export(model_path, name, out, opts, model=model)
            files = [p for p in res.path.rglob("*") if p.is_file()] if res.path.is_dir() else [res.path]
            size_mb = round(sum(p.stat().st_size for p in files if p.suffix not in (".jpg", ".png", ".json")) / 1e6, 2)
            for label, runner in _runners_for(name, res.path, device):
                try:
                    measure(label, runner, size_mb)
                finally:
                    runner.close()
    return result


def to_markdown(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    m = result["machine"]
    where = m.get("gpu") or f"{m['cpu']} ({m['cpu_count']} cores, torch threads {m['torch_threads']})"
    lines = [
        (f"Device: {m['device']} - {where}; torch {m['torch']}, onnxruntime {m['onnxruntime']}. "
         f"Latency: median of {result['reps']} runs after {result['warmup']} warm-up, batch 1, ms/frame."),
        "",
        "| format | runtime | size (MB) | " + " | ".join(f"{s} ms" for s in sizes) + " | PSNR vs PyTorch (dB) |",
        "|---|---|---|" + "---|" * len(sizes) + "---|",
    ]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['format']} | skipped: {r['skipped'][:110]} | - |" + " - |" * len(sizes) + " - |")
            continue
        lat = " | ".join(f"{r['latency'][s]['median_ms']:.1f}" for s in sizes)
        lines.append(f"| {r['format']} | {r['runtime']} | {r['size_mb'] if r['size_mb'] is not None else '-'} | "
                     f"{lat} | {r['psnr_db']} |")  # fmt: skip
    g = result["gflops"]
    lines += ["", "GFLOP per frame (PyTorch count): " + ", ".join(f"{s}: {g[s]}" for s in sizes)]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], out_prefix: Path) -> tuple[Path, Path]:
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    md, js = out_prefix.with_suffix(".md"), out_prefix.with_suffix(".json")
    md.write_text(to_markdown(result))
    js.write_text(json.dumps(result, indent=2) + "\n")
    return md, js
