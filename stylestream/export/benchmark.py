"""The format benchmark: export a model to each format, then time it (median of >= 20 runs after
warm-up, batch 1) at several frame sizes and measure PSNR vs PyTorch FP32 on real frames. Every file
runs through the runtime backend that serves it (stylestream.runtime), so the numbers are serving's.
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
from typing import TYPE_CHECKING, Any

import numpy as np

from stylestream.bench import output_path
from stylestream.export.formats import FORMATS, ExportError

if TYPE_CHECKING:
    from stylestream.export.options import ExportOptions
    from stylestream.runtime import Backend

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


def _backends_for(fmt_name: str, path: Path, opts: ExportOptions) -> list[tuple[str, Backend]]:
    """The runtime backend(s) to time for one exported file: ONNX on a GPU once per provider (CUDA EP,
    TensorRT EP), everything else as verification opens it."""
    from stylestream.export.exporter import open_for_verification
    from stylestream.runtime import BackendUnavailable, open_model

    fmt = FORMATS[fmt_name]
    backend, file = fmt.verify_target(path, opts)
    if backend != "onnxruntime" or opts.device != "cuda":
        return [(fmt_name, open_for_verification(fmt, path, opts))]
    out: list[tuple[str, Backend]] = []
    for providers, label in ((("cuda",), fmt_name), (("tensorrt",), f"{fmt_name} (TensorRT EP)")):
        try:
            out.append((label, open_model(file, backend, "cuda", providers=providers)))
        except BackendUnavailable as exc:
            log.warning("%s: %s", label, exc)
    return out


def run_benchmark(model_path: str | Path, formats: list[str], sizes: list[tuple[int, int]] | None = None,
                  device: str = "cpu", reps: int = 20, warmup: int = 3, calibration: Path | None = None,
                  images: Path | None = None, torch_baselines: tuple[str, ...] = ("eager",),
                  precision: str = "fp16") -> dict[str, Any]:  # fmt: skip
    """Export `model_path` to each format into a scratch folder and benchmark it.

    Returns {"machine", "model", "sizes", "rows": [{"format", "runtime", "size_mb", "psnr_db",
    "latency": {"WxH": {"median_ms", "min_ms", "reps"}}}], "gflops": {"WxH": float}}; `sizes` are (H, W)."""
    import torch

    from stylestream.export.exporter import export, load_export_model, preflight
    from stylestream.export.options import ExportOptions
    from stylestream.export.verify import psnr
    from stylestream.media import MediaError, default_images, fit, load_frames, to_nchw
    from stylestream.runtime import open_model

    if reps < 20:
        log.warning("reps=%d: fewer than the 20 runs the published tables use", reps)
    sizes = sizes or DEFAULT_SIZES
    model_path = Path(model_path)
    model = load_export_model(model_path)
    try:
        frame = load_frames(images or calibration or default_images(), 1)[0]
    except MediaError as exc:
        raise ExportError(str(exc)) from None
    inputs = {f"{w}x{h}": to_nchw([fit(frame, h, w)]) for h, w in sizes}  # labels as --sizes takes them
    with torch.inference_mode():
        refs = {k: model(torch.from_numpy(x)).numpy() for k, x in inputs.items()}
    result: dict[str, Any] = {
        "machine": machine_info(device), "model": str(model_path),
        "architecture": dict(getattr(model, "stylestream_config", {})),
        "sizes": list(inputs), "reps": reps, "warmup": warmup,
        "gflops": {k: round(model_gflops(model, *map(int, k.split("x"))), 3) for k in inputs},
        "rows": [],
    }  # fmt: skip

    def measure(name: str, backend: Backend, size_mb: float | None, key: str | None = None) -> None:
        """Time `backend` at every size, or only at `key` for a fixed-size file (one row per format: a
        fixed-size format's exports, one per size, fill in its row)."""
        row = next((r for r in result["rows"] if key and r["format"] == name and "latency" in r), None)
        if row is None:
            row = {"format": name, "runtime": backend.describe(), "runtime_version": backend.version(),
                   "size_mb": size_mb, "latency": {}, "psnr_db": "inf"}  # fmt: skip
            result["rows"].append(row)
        worst = float("inf") if row["psnr_db"] == "inf" else row["psnr_db"]
        for k_in, x in inputs.items() if key is None else [(key, inputs[key])]:
            worst = min(worst, psnr(backend.run(x), refs[k_in]))
            row["latency"][k_in] = {k: round(v, 2) if isinstance(v, float) else v
                                    for k, v in time_runner(backend.run, x, reps, warmup).items()}  # fmt: skip
            log.info("%-22s %-9s %8.1f ms", name, k_in, row["latency"][k_in]["median_ms"])
        row["psnr_db"] = round(worst, 2) if np.isfinite(worst) else "inf"
        if key is not None and size_mb is not None:  # a fixed-size format: its largest file
            row["size_mb"] = max(row["size_mb"] or 0.0, size_mb)

    from tqdm import tqdm

    for base in tqdm(torch_baselines, desc="torch baselines", leave=False):
        # the model.pt as serving's torch backend runs it (bf16 autocast on CUDA), torch.compile'd or not
        torch_backend = open_model(model_path, "torch", device, compile=base == "compile")
        try:
            measure(f"torch {base}", torch_backend, None)
        finally:
            torch_backend.close()

    with tempfile.TemporaryDirectory(prefix="stylestream-bench-") as tmp:
        for name in tqdm(formats, desc="formats", leave=False):
            fmt = FORMATS[name]
            # a fixed-size format (ExecuTorch, LiteRT, ncnn) is exported once per size (--static)
            keys: list[str | None] = list(inputs) if fmt.fixed_size else [None]
            for key in keys:
                static = inputs[key].shape[2:] if key else None
                opts = ExportOptions(calibration=calibration, verify=False, thumbnail=False, precision=precision,
                                     device=device, static=static)  # fmt: skip
                try:
                    preflight(fmt, opts)
                except ExportError as exc:
                    result["rows"].append({"format": name, "skipped": str(exc)})
                    break
                not_run = fmt.not_run_reason(opts)  # exports here, runs elsewhere (Core ML off macOS)
                if not_run:
                    result["rows"].append({"format": name, "skipped": f"{name} does not run here: {not_run}"})
                    break
                out = Path(tmp) / (name if fmt.is_folder else f"m{fmt.tag}{'-' + key if key else ''}{fmt.suffix}")
                res = export(model_path, name, out, opts, model=model)
                files = [p for p in res.path.rglob("*") if p.is_file()] if res.path.is_dir() else fmt.files(res.path)
                size_mb = round(sum(p.stat().st_size for p in files if p.suffix not in (".jpg", ".png", ".json")) / 1e6,
                                2)  # fmt: skip
                for label, backend in _backends_for(name, res.path, opts):
                    try:
                        measure(label, backend, size_mb, key)
                    finally:
                        backend.close()
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
    md, js = output_path(out_prefix, ".md"), output_path(out_prefix, ".json")
    md.write_text(to_markdown(result))
    js.write_text(json.dumps(result, indent=2) + "\n")
    return md, js
