"""`stylestream export`: a trained model.pt -> ONNX / FP16 / INT8 / TensorRT / TorchScript / Triton,
verified against PyTorch, with a model card beside each file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stylestream.cli_types import size_wxh, sizes_wxh
from stylestream.export.formats import FLOORS, PRECISIONS, TRITON_BACKENDS, export_formats, format_names

HELP = "export a trained model to ONNX (FP32/FP16/INT8), TensorRT, TorchScript or Triton"
DESCRIPTION = HELP + (
    ".\n\nEvery export is run against PyTorch on real images at two sizes (one odd) and rejected, with a"
    "\nnon-zero exit and no file left behind, when its PSNR is below the format's floor"
    f" ({', '.join(f'{k} {v:g} dB' for k, v in FLOORS.items())})."
    "\nA model card OUT.json (name, title, thumbnail, format, source, verification) is written beside it."
    "\nA full or read-only output disk is exit 2 with nothing left behind."
)
EPILOG = "formats:\n" + "\n".join(f"  {f.name:<14} {f.help}" for f in export_formats()) + """
  all            every format into the folder -o OUT_DIR (skips what this machine or command cannot do)

examples:
  stylestream export runs/mosaic/model.pt --format onnx -o styles/mosaic.onnx
  stylestream export model.pt --format onnx-int8 --calibration ../shared/media/video/webcam_walk.mkv -o m-int8.onnx
  stylestream export model.pt --format all --calibration photos/ -o exported/
  stylestream export model.pt --format triton --triton-backend python --name mosaic -o triton-repo/
"""


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a batch size >= 1 or 'dynamic', got {text!r}")


def _profile(text: str) -> tuple[tuple[int, int], ...]:
    """'64x64:640x480:1920x1080' (width x height each) -> three (H, W) shapes, as TensorRT takes them."""
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN:OPT:MAX sizes like 64x64:640x480:1920x1080, got {text!r}")
    return tuple(size_wxh(p)[::-1] for p in parts)


def _sizes_hw(text: str) -> list[tuple[int, int]]:
    """'320x240,243x181' (width x height) -> [(240, 320), (181, 243)]: (H, W) as the exporter takes them."""
    return [wh[::-1] for wh in sizes_wxh(text)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="a model.pt written by `stylestream train`")
    p.add_argument("--format", "-f", required=True, choices=[*format_names(), "all"], metavar="FORMAT",
                   help=f"one of: {', '.join(format_names())}, all")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (a folder for triton and for --format all)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--static", type=size_wxh, metavar="WxH",
                   help="fix the input size, width x height, e.g. 640x480 (default: dynamic H and W)")
    p.add_argument("--batch", type=_batch, default=None, metavar="N|dynamic", help="fixed batch size (default dynamic)")
    p.add_argument("--calibration", type=Path, metavar="DIR|VIDEO",
                   help="calibration images (folder) or a video; required for onnx-int8 / --precision int8")
    p.add_argument("--calibration-frames", type=int, default=32, metavar="N", help="frames used to calibrate (32)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="tensorrt/triton: which ONNX (fp32, fp16 casts, int8 Q/DQ) to build from (default fp32)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where verification runs (default cpu)")
    p.add_argument("--workspace", type=float, default=4.0, metavar="GB", help="TensorRT builder workspace (4 GB)")
    p.add_argument("--trt-profile", type=_profile, metavar="MIN:OPT:MAX", default=None,
                   help="TensorRT size profile, width x height each (default 64x64:640x480:1920x1080)")
    p.add_argument("--triton-backend", choices=list(TRITON_BACKENDS), default="onnxruntime",
                   help="triton: model.onnx for the onnxruntime backend, a TensorRT model.plan, or python: "
                        "model.onnx run by ONNX Runtime in a small model.py, for Triton builds without the "
                        "onnxruntime backend (default: onnxruntime)")
    p.add_argument("--no-verify", action="store_true", help="skip verification against PyTorch (not recommended)")
    p.add_argument("--verify-images", type=Path, metavar="DIR|VIDEO|IMAGE",
                   help="real images to verify on (default: --calibration, else a photo shipped with matplotlib)")
    p.add_argument("--verify-sizes", type=_sizes_hw, default=None, metavar="WxH,WxH",
                   help="verification sizes, width x height (default 320x240,243x181)")
    p.add_argument("--name", help="style name in the card (default: output file name)")
    p.add_argument("--title", help="human title in the card")
    p.add_argument("--description", help="description in the card")


def _print_result(r) -> None:
    mark = {"ok": "OK  ", "failed": "FAIL", "skipped": "SKIP"}[r.status]
    where = f" -> {r.path}" if r.path and r.status == "ok" else ""
    print(f"{mark} {r.format:<12}{where}" + (f"  ({r.seconds:.1f} s)" if r.seconds else ""))
    v = r.verification
    if v and not v.get("skipped"):
        for s in v["sizes"]:
            print(f"       {s['size'][1]}x{s['size'][0]}: PSNR {s['psnr_db']} dB, max |err| {s['max_abs_error']}"
                  f"  (floor {v['floor_db']:g} dB, {v['runtime']})")
    if r.message:
        print(f"       {r.message}")


def run(args: argparse.Namespace) -> int:
    from stylestream.cli import CLIError
    from stylestream.export.exporter import ExportResult, export, export_all
    from stylestream.export.formats import ExportError, VerificationError
    from stylestream.export.options import ExportOptions
    from stylestream.models.io import WriteError

    opts = ExportOptions(
        opset=args.opset, static=args.static[::-1] if args.static else None,  # --static W x H -> (H, W)
        batch=args.batch, precision=args.precision,
        calibration=args.calibration, calibration_frames=args.calibration_frames, device=args.device,
        workspace_gb=args.workspace, triton_backend=args.triton_backend, verify=not args.no_verify,
        verify_images=args.verify_images, name=args.name, title=args.title, description=args.description,
    )  # fmt: skip
    if args.verify_sizes:
        opts.verify_sizes = args.verify_sizes
    if args.trt_profile:
        opts.trt_min, opts.trt_opt, opts.trt_max = args.trt_profile
    try:
        if args.format == "all":
            results = export_all(args.model, args.output, opts)
        else:
            results = [export(args.model, args.format, args.output, opts)]
    except VerificationError as exc:
        _print_result(ExportResult(args.format, "failed", verification=exc.verification))
        print(f"stylestream export: error: {exc}", file=sys.stderr)
        return 1
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    except WriteError as exc:  # the disk, not the model: nothing was kept
        raise CLIError(exc.line("--output")) from None
    for r in results:
        _print_result(r)
        if r.card:
            print(f"       card: {r.card}")
    return 1 if any(r.status == "failed" for r in results) else 0
