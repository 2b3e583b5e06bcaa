"""`stylestream optimize`: per-image style transfer (the method of Gatys et al.) with any registry optimizer,
one run, several optimizers side by side (--compare) or one optimizer at several lrs (--lrs)."""

from __future__ import annotations

import argparse

from stylestream.cli_choices import LOSSES, OPTIMIZERS  # light: no torch
from stylestream.cli_types import list_of, number, whole_number
from stylestream.train import cli as train_cli
from stylestream.train.pixel_lr import defaults_text

HELP = "stylize one image by optimizing its pixels (Gatys et al.); compare optimizers or learning rates"
DESCRIPTION = (
    "Optimize the pixels of one image against a perceptual loss (--loss). Writes OUT (the best image\n"
    "found, the content's aspect ratio kept; --image-size is the longer side), OUT's loss curve as\n"
    "OUT.loss.png and the per-step losses as OUT.csv. A step is one loss evaluation (forward +\n"
    "backward) for every optimizer, L-BFGS included, so equal --steps is equal compute. A run whose\n"
    "loss ends above where it started is reported `diverged` (its best image is still written).\n"
    "--compare lbfgs,adam:5,... runs each optimizer (at its own lr after ':', else its family's\n"
    "default) on the same problem; --lrs 0.1,1,5 runs --optimizer at each lr. Both write OUT_<run>.png\n"
    "/.csv, OUT as a labelled grid (one row per --save-every step, then the images written) and\n"
    "OUT.loss.png with every loss curve."
)
EPILOG = (
    "losses:\n" + LOSSES.help_text() + "\n\noptimizers:\n" + OPTIMIZERS.help_text() + (
        "\n\nexamples:\n"
        "  stylestream optimize tubingen.jpg starry_night.jpg -o out.png --optimizer lbfgs --steps 500\n"
        "  stylestream optimize tubingen.jpg starry_night.jpg -o cmp.png --compare lbfgs,lbfgsb,adam:5,rmsprop\n"
        "  # seed 001's study: Adam's lr from 0.1 to 100, 500 vs 2000 iterations\n"
        "  stylestream optimize tubingen.jpg starry_night.jpg -o lrs.png --optimizer adam \\\n"
        "      --lrs 0.1,1,5,10,50,100 --steps 2000 --save-every 500\n"
        "exit codes: 0 every run ok, 2 bad options/inputs, 3 a run diverged"
    )
)  # fmt: skip


def parse_plan(text: str) -> list[tuple[str, float | None]]:
    """"lbfgs,adam:5,sgd:1e-6" -> [("lbfgs", None), ("adam", 5.0), ("sgd", 1e-6)]."""
    plan: list[tuple[str, float | None]] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, lr = item.partition(":")
        try:
            plan.append((name.strip(), float(lr) if lr.strip() else None))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected NAME or NAME:LR, e.g. adam:5") from None
    if not plan:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of optimizers, got {text!r}")
    return plan


def add_arguments(p: argparse.ArgumentParser) -> None:
    from stylestream.cli_choices import INITS

    p.add_argument("content", metavar="CONTENT", help="content image")
    p.add_argument("style", metavar="STYLE", help="style image")
    p.add_argument("-o", "--out", required=True, metavar="OUT.png", help="output image")
    p.add_argument("--optimizer", default="lbfgs", choices=OPTIMIZERS.names(), metavar="NAME",
                   help="optimizer of the registry (default: lbfgs)")  # fmt: skip
    runs = p.add_mutually_exclusive_group()
    runs.add_argument("--compare", type=parse_plan, default=None, metavar="A[:LR],B[:LR],...",
                      help="run several optimizers on the same problem, each at its LR or its default")  # fmt: skip
    runs.add_argument("--lr", type=number, default=None,
                      help=f"learning rate in [0, 255] pixel units (defaults: {defaults_text()})")  # fmt: skip
    p.add_argument("--lrs", type=list_of(float, "learning rates"), default=None, metavar="LR,...",
                   help="run --optimizer (or each --compare optimizer) at each of these lrs (seed 001's study)")  # fmt: skip
    p.add_argument("--steps", type=whole_number, default=500, help="loss evaluations (default: 500)")
    p.add_argument("--loss", default="johnson", choices=LOSSES.names(),
                   help="johnson (VGG-16, the loss `train` uses; default) or gatys (VGG-19)")  # fmt: skip
    p.add_argument("--image-size", type=whole_number, default=512,
                   help="longer side of the output in pixels (default: 512)")  # fmt: skip
    p.add_argument("--style-size", type=whole_number, default=None,
                   help="longer side of the style image (default: --image-size)")  # fmt: skip
    p.add_argument("--init", default="content", choices=INITS, help="start image (default: content)")
    p.add_argument("--content-weight", type=number, default=1e5, help="lambda_c (default: 1e5)")
    p.add_argument("--style-weight", type=number, default=1e10, help="lambda_s (default: 1e10)")
    p.add_argument("--tv-weight", type=number, default=0.0, help="total-variation weight (default: 0)")
    p.add_argument("--vgg-weights", default="imagenet", metavar="imagenet|random|PATH",
                   help="weights of the loss's VGG (as for `train`; VGG-19's file: $STYLESTREAM_VGG19_WEIGHTS)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--save-every", type=whole_number, default=0, metavar="N",
                   help="also write OUT_<step>.png (the best image so far) every N steps (default: 0, never)")  # fmt: skip
    p.add_argument("--seed", type=whole_number, default=0, help="seed for --init noise (default: 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stylestream.cli import CLIError
    from stylestream.registry import UnknownNameError
    from stylestream.train.images import ImageLoadError
    from stylestream.train.optimize import OptimizeConfig, optimize_image, out_path
    from stylestream.train.optimize_study import run_study
    from stylestream.train.vgg import VGGWeightsError

    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        raise CLIError(f"-o {args.out}: give an image file name such as out.png")
    plan = args.compare or [(args.optimizer, args.lr)]
    if args.lrs:
        if any(lr is not None for _, lr in plan):
            raise CLIError("give learning rates either per optimizer (--compare adam:5) or with --lrs, not both")
        plan = [(name, lr) for name, _ in plan for lr in args.lrs]
    cfg = OptimizeConfig(
        content=Path(args.content), style=Path(args.style), out=Path(args.out), optimizer=plan[0][0],
        lr=plan[0][1], steps=args.steps, loss=args.loss, image_size=args.image_size, style_size=args.style_size,
        init=args.init, content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, vgg_weights=args.vgg_weights, device=args.device, save_every=args.save_every,
        seed=args.seed, progress=args.progress,
    )  # fmt: skip
    study = len(plan) > 1 or args.compare is not None
    try:
        results = run_study(cfg, plan).results if study else [optimize_image(cfg)]
    except (ImageLoadError, VGGWeightsError, UnknownNameError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(f"device: {results[0].device}; loss: {args.loss}")
    for r in results:
        print(f"{r.label:<22} {r.status}: loss {r.initial_loss:.4g} -> {r.final_loss:.4g} (the image written, from "
              f"step {r.best_step}); last of {len(r.history)} steps {r.last_loss:.4g}; {r.wall_s:.1f} s  ({r.out})")  # fmt: skip
    if study:
        print(f"grid: {args.out}  loss plot: {out_path(Path(args.out), '.loss.png')}")
    return 0 if all(r.status == "ok" for r in results) else train_cli.EXIT_DIVERGED
