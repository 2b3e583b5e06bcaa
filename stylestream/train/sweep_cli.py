"""`stylestream sweep`: compare optimizers (x learning rates x batch sizes) as in Geng et al. 2020."""

from __future__ import annotations

import argparse

from stylestream.cli_choices import OPTIMIZERS  # light: no torch
from stylestream.cli_types import list_of, whole_number
from stylestream.train import cli as train_cli

HELP = "compare optimizers (x learning rates x batch sizes): train one model each, write a report"
DESCRIPTION = (
    "The optimizer study (Geng et al. 2020) as one command: one train run per (optimizer, lr, batch size)\n"
    "under SWEEP_DIR/<optimizer>/lr<lr>-bs<bs>/, every run from the same initial weights on the same\n"
    "images in the same order. Runs sharing a batch size train in lockstep in one process (one data\n"
    "loader and one content-target VGG pass per batch for all of them). Writes SWEEP_DIR/report.md,\n"
    "report.json, grid.jpg and losses.png (every optimizer at the default setting, the study's Figs 3.1\n"
    "and 3.2), grid_best.jpg and losses_best.png (each at its best setting, Fig 3.3) and\n"
    "heatmaps/<optimizer>.png (for a grid of lrs/batch sizes). The best setting per optimizer is chosen\n"
    "by the loss on held-out images (--eval-data, default a seeded split of --data never trained on).\n"
    "Every `train` option applies to every run; the study's choices are the defaults here: float32\n"
    "(--amp opts in to bf16/fp16 autocast) and the style image at its own size (--style-size 0)."
)
EPILOG = (
    "optimizers:\n" + OPTIMIZERS.help_text()
    + "\n\nthe study's sweep (8 optimizers x 4 lrs x 4 batch sizes, 2 epochs of COCO):\n"
    "  stylestream sweep --style starry_night.jpg --data coco/train2017 --out sweeps/study \\\n"
    "      --lrs 0.1,0.01,0.001,0.0001 --batch-sizes 1,2,4,8\n"
    "the same on a Ray cluster (--out, --data and --style on storage every node shares):\n"
    "  stylestream sweep ... --ray auto      # or --ray HEAD:6379; --ray local: Ray on this machine only\n"
    "exit codes: 0 at least one run finished, 2 bad options/inputs, 3 every run diverged or crashed"
)  # fmt: skip


def _ray_address(text: str) -> str:
    text = text.strip()
    host, sep, port = text.removeprefix("ray://").rpartition(":")
    if text not in ("auto", "local") and not (sep and host and port.isdigit()):
        raise argparse.ArgumentTypeError(f"expected auto, local, HOST:PORT or ray://HOST:PORT, got {text!r}")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    from stylestream.cli_choices import STUDY_OPTIMIZERS

    train_cli.add_arguments(p)  # every `train` option, defined once
    # the per-run options become lists; "resolve" replaces train's single-valued ones
    g = p.add_argument_group(
        "sweep options (replace train's --out, --optimizer, --lr, --batch-size, --resume, --overwrite, --amp, "
        "--style-size)",
        conflict_handler="resolve",
    )
    g.add_argument("--out", required=True, metavar="SWEEP_DIR", help="sweep folder to write")
    g.add_argument("--optimizers", "--optimizer", dest="optimizers", type=list_of(str, "optimizer names"),
                   default=list(STUDY_OPTIMIZERS), metavar="A,B,...",
                   help=f"optimizers to compare (default: the study's {','.join(STUDY_OPTIMIZERS)})")  # fmt: skip
    g.add_argument("--lrs", "--lr", dest="lrs", type=list_of(float, "learning rates"), default=[1e-3],
                   metavar="LR,...", help="learning rates η (default: 1e-3; the study: 0.1,0.01,0.001,0.0001)")  # fmt: skip
    g.add_argument("--batch-sizes", "--batch-size", dest="batch_sizes", type=list_of(int, "batch sizes"),
                   default=[4], metavar="BS,...", help="batch sizes (default: 4; the study: 1,2,4,8)")  # fmt: skip
    g.add_argument("--resume", action="store_true",
                   help="continue SWEEP_DIR: keep finished runs, resume unfinished or crashed ones")  # fmt: skip
    g.add_argument("--overwrite", action="store_true",
                   help="start SWEEP_DIR afresh: every run trains again from step 0, replacing its files")  # fmt: skip
    g.add_argument("--eval-data", metavar="DIR", default=None,
                   help="held-out images for the eval loss (default: a seeded split of --data)")  # fmt: skip
    g.add_argument("--eval-images", type=whole_number, default=64,
                   help="how many held-out images to evaluate on (default: 64; a split takes at most 1/5)")  # fmt: skip
    g.add_argument("--content", metavar="IMAGE", default=None,
                   help="image every run stylizes for grid.jpg (default: the first eval image)")  # fmt: skip
    g.add_argument("--parallel", type=whole_number, default=0, metavar="K",
                   help="runs trained together in one lockstep group (default 0: as many as fit in memory)")  # fmt: skip
    g.add_argument("--ray", metavar="auto|local|ADDRESS", default=None, type=_ray_address,
                   help="train each lockstep group as a Ray task (pip install 'stylestream[ray]'). auto: the "
                        "cluster `ray start` runs on this machine (or RAY_ADDRESS); ADDRESS: a cluster's head, "
                        "HOST:6379 or ray://HOST:10001 (its token as Ray documents: RAY_AUTH_TOKEN); local: a "
                        "Ray instance of its own on this machine, on 127.0.0.1 only. Every node needs the same "
                        "stylestream version and --out, --data, --style (and a --vgg-weights file) at the same "
                        "paths (shared storage). Ray's usage stats stay off (RAY_USAGE_STATS_ENABLED=0) unless you "
                        "set it. Same runs, resume and report as without --ray; see docs/scaling.md")  # fmt: skip
    g.add_argument("--ray-cpus", type=whole_number, default=1, metavar="N",
                   help="CPUs each Ray task reserves and trains with (default 1; with GPUs each task also "
                        "gets one GPU)")  # fmt: skip
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed precision (bf16, or fp16 + GradScaler on older GPUs); default: off, float32 as "
                        "in the study")  # fmt: skip
    g.add_argument("--style-size", type=whole_number, default=0,
                   help="longer side of the style image (default 0: its own size, as the study's code; "
                        "`train` uses --image-size, as Johnson's)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from stylestream.cli import CLIError
    from stylestream.devices import DeviceError
    from stylestream.models.io import WriteError
    from stylestream.registry import UnknownNameError
    from stylestream.train.config import ConfigError, TrainConfig
    from stylestream.train.data import DataError
    from stylestream.train.images import ImageLoadError
    from stylestream.train.sweep import SweepConfig, run_sweep
    from stylestream.train.sweep_ray import ClusterError
    from stylestream.train.sweep_report import ranking
    from stylestream.train.vgg import VGGWeightsError

    fields = TrainConfig.__dataclass_fields__
    per_run = ("resume", "overwrite")  # the sweep decides these for each run
    base = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and k not in per_run})
    sc = SweepConfig(base=base, optimizers=args.optimizers, lrs=args.lrs, batch_sizes=args.batch_sizes,
                     eval_data=args.eval_data, eval_images=args.eval_images, content=args.content,
                     parallel=args.parallel, resume=args.resume, overwrite=args.overwrite, ray=args.ray,
                     ray_cpus=args.ray_cpus)  # fmt: skip
    try:
        result = run_sweep(sc)
    except (ConfigError, DeviceError, DataError, ImageLoadError, VGGWeightsError, UnknownNameError,
            ClusterError) as exc:  # fmt: skip
        raise CLIError(str(exc)) from None
    except WriteError as exc:
        raise CLIError(exc.line("--out")) from None
    print(f"device: {result.meta['device']}; precision: {result.meta['precision']}")
    print(f"{len(result.runs)} runs in {result.wall_s:.1f} s; best setting per optimizer (by eval loss):")
    for i, r in enumerate(ranking(result.runs), 1):
        ev = f"{r.eval_loss:.4g}" if r.eval_loss is not None else "-"
        loss = f"{r.loss:.4g}" if r.loss is not None else "-"
        print(f"  {i:>2}. {r.optimizer:<12} lr {r.lr:<8g} bs {r.batch_size:<3} loss {loss:<10} eval {ev:<10} {r.status}")
    print(f"report: {result.files['md']}")
    return 0 if any(r.status == "ok" for r in result.runs) else train_cli.EXIT_DIVERGED
