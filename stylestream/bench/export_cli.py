"""`stylestream bench export`: the export-format benchmark table (Markdown + JSON)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stylestream.cli_types import sizes_wxh

HELP = "benchmark exported formats: size, latency per frame at several sizes, PSNR vs PyTorch"
DESCRIPTION = HELP + (
    ".\n\nEach format is exported to a scratch folder, timed (median of >= 20 runs after warm-up, batch 1)"
    "\nand compared with PyTorch FP32 on a real frame. Numbers describe this machine only."
)


def _sizes(text: str) -> list[tuple[int, int]]:
    """'320x240,640x480' (W x H, as everywhere) -> [(240, 320), (480, 640)], the (H, W) run_benchmark takes."""
    return [(h, w) for w, h in sizes_wxh(text)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from stylestream.export.formats import PRECISIONS, format_names

    p.add_argument("model", type=Path, help="a model.pt written by `stylestream train`")
    p.add_argument("--formats", default="onnx,onnx-fp16,onnx-int8,torchscript",
                   help=f"comma-separated, from: {', '.join(format_names())} (default: the CPU-capable ones)")
    p.add_argument("--sizes", type=_sizes, default=None, metavar="WxH,...",
                   help="frame sizes, width x height (default 320x240,640x480,1280x720)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--reps", type=int, default=20, help="timed runs per size (>= 20; default 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calibration", type=Path, help="calibration images/video (needed for onnx-int8)")
    p.add_argument("--images", type=Path, help="frame to measure PSNR on (default: --calibration)")
    p.add_argument("--torch", default="eager", help="torch baselines: comma-separated from eager, compile, or none")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp16", help="tensorrt/triton precision")
    p.add_argument("-o", "--output", type=Path, default=Path("out/bench/export_formats"),
                   help="output prefix: writes PREFIX.md and PREFIX.json")


def run(args: argparse.Namespace) -> int:
    from stylestream.cli import CLIError
    from stylestream.export.benchmark import run_benchmark, to_markdown, write_outputs
    from stylestream.export.formats import ExportError, format_names

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in format_names()]
    if unknown:
        raise CLIError(f"--formats: unknown format {unknown[0]!r}; choose from {', '.join(format_names())}")
    baselines = tuple(b for b in args.torch.split(",") if b and b != "none")
    if set(baselines) - {"eager", "compile"}:
        raise CLIError(f"--torch: choose from eager, compile, none; got {args.torch!r}")
    try:
        result = run_benchmark(args.model, formats, args.sizes, args.device, args.reps, args.warmup,
                               args.calibration, args.images, baselines, args.precision)  # fmt: skip
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    md, js = write_outputs(result, args.output)
    print(to_markdown(result))
    print(f"wrote {md} and {js}")
    return 0
