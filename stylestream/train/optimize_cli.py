"""`stylestream optimize`: per-image style transfer (Gatys et al.) with any registry optimizer."""

from __future__ import annotations

import argparse

from stylestream.train import cli as train_cli
from stylestream.train.optimizers import OPTIMIZERS

HELP = "stylize one image by optimizing its pixels (Gatys et al.); compare optimizers with --compare"
DESCRIPTION = (
    "Optimize the pixels of one image against the perceptual loss (same VGG-16 and loss as `train`).\n"
    "Writes OUT (the image, the content's aspect ratio kept; --image-size is the longer side), OUT's\n"
    "loss curve as OUT.loss.png and the per-step losses as OUT.csv. A step is one loss evaluation\n"
    "(forward + backward) for every optimizer, L-BFGS included, so equal --steps is equal compute.\n"
    "--compare lbfgs,adam,... runs each optimizer on the same problem (OUT_<name>.png/.csv) and writes\n"
    "OUT as a labelled grid and OUT.loss.png with every loss curve."
)
EPILOG = "optimizers:\n" + OPTIMIZERS.help_text() + (
    "\n\nexamples:\n"
    "  stylestream optimize tubingen.jpg starry_night.jpg -o out.png --optimizer lbfgs --steps 500\n"
    "  stylestream optimize tubingen.jpg starry_night.jpg -o cmp.png --compare lbfgs,adam,adagrad"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from stylestream.train.optimize import DEFAULT_FIRST_ORDER_LR, INITS

    p.add_argument("content", metavar="CONTENT", help="content image")
    p.add_argument("style", metavar="STYLE", help="style image")
    p.add_argument("-o", "--out", required=True, metavar="OUT.png", help="output image")
    p.add_argument("--optimizer", default="lbfgs", choices=OPTIMIZERS.names(), metavar="NAME",
                   help="optimizer of the registry (default: lbfgs)")  # fmt: skip
    p.add_argument("--compare", default=None, metavar="A,B,...",
                   help="run several optimizers on the same problem; writes a grid and one loss plot")  # fmt: skip
    p.add_argument("--lr", type=train_cli._float, default=None,
                   help=f"learning rate (default: 1 for lbfgs, {DEFAULT_FIRST_ORDER_LR:g} otherwise, in [0, 255] "
                        "pixel units)")  # fmt: skip
    p.add_argument("--steps", type=train_cli._int, default=500, help="loss evaluations (default: 500)")
    p.add_argument("--image-size", type=train_cli._int, default=512,
                   help="longer side of the output in pixels (default: 512)")  # fmt: skip
    p.add_argument("--style-size", type=train_cli._int, default=None,
                   help="longer side of the style image (default: --image-size)")  # fmt: skip
    p.add_argument("--init", default="content", choices=INITS, help="start image (default: content)")
    p.add_argument("--content-weight", type=train_cli._float, default=1e5, help="lambda_c (default: 1e5)")
    p.add_argument("--style-weight", type=train_cli._float, default=1e10, help="lambda_s (default: 1e10)")
    p.add_argument("--tv-weight", type=train_cli._float, default=0.0, help="total-variation weight (default: 0)")
    p.add_argument("--vgg-weights", default="imagenet", metavar="imagenet|random|PATH",
                   help="VGG-16 for the loss (as for `train`)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--save-every", type=train_cli._int, default=0, metavar="N",
                   help="also write OUT_<step>.png every N steps (default: 0, never)")  # fmt: skip
    p.add_argument("--seed", type=train_cli._int, default=0, help="seed for --init noise (default: 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stylestream.cli import CLIError
    from stylestream.registry import UnknownNameError
    from stylestream.train.images import ImageLoadError
    from stylestream.train.optimize import OptimizeConfig, compare_optimizers, optimize_image
    from stylestream.train.vgg import VGGWeightsError

    if args.steps < 1 or args.image_size < 16 or args.save_every < 0:
        raise CLIError("--steps must be >= 1, --image-size >= 16 and --save-every >= 0")
    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        raise CLIError(f"-o {args.out}: give an image file name such as out.png")
    cfg = OptimizeConfig(
        content=Path(args.content), style=Path(args.style), out=Path(args.out), optimizer=args.optimizer,
        lr=args.lr, steps=args.steps, image_size=args.image_size, style_size=args.style_size, init=args.init,
        content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        vgg_weights=args.vgg_weights, device=args.device, save_every=args.save_every, seed=args.seed,
        progress=args.progress,
    )  # fmt: skip
    try:
        if args.compare:
            names = [n.strip() for n in args.compare.split(",") if n.strip()]
            for n in names:
                OPTIMIZERS.entry(n)
            out = compare_optimizers(cfg, names)
            results = list(out["results"].values())
        else:
            results = [optimize_image(cfg)]
    except (ImageLoadError, VGGWeightsError, UnknownNameError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(f"VGG-16 weights: {results[0].vgg_weights}; device: {results[0].device}")
    for r in results:
        print(f"{r.optimizer:<10} lr {r.lr:<6g} {r.status}: loss {r.initial_loss:.4g} -> {r.final_loss:.4g} "
              f"in {len(r.history)} steps, {r.wall_s:.1f} s  ({r.out})")  # fmt: skip
    if args.compare:
        print(f"grid: {args.out}  loss plot: {Path(args.out).with_name(Path(args.out).stem + '.loss.png')}")
    return 0 if all(r.status == "ok" for r in results) else 3
