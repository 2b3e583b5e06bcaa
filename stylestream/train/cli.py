"""`stylestream train`: train a feed-forward style network on a folder of images."""

from __future__ import annotations

import argparse

from stylestream.cli_choices import (  # light: no torch
    ARCHITECTURES,
    FUSED_MODES,
    NORMS,
    OPTIMIZERS,
    SCHEDULES,
)
from stylestream.cli_types import number, whole_number

HELP = "train a style network (Johnson et al.) with a VGG-16 perceptual loss"
EXIT_DIVERGED = 3  # the loss became NaN/Inf (`train`; `sweep` when no run ended ok)
DESCRIPTION = (
    "Train a feed-forward style network on every image under --data (COCO train2017 works as is)\n"
    "for the style of --style. Writes RUN_DIR/model.pt, metrics.csv, card.json, checkpoint.pt,\n"
    "losses.png and samples.jpg (mode 0666 less the umask). A used RUN_DIR needs --resume or --overwrite.\n"
    "Exit codes: 0 ok, 2 bad options/inputs or an output that cannot be written (disk full, read-only;\n"
    'card.json then says status "failed" where it can), 3 the loss diverged (NaN/Inf).'
)
EPILOG = (
    "architectures:\n" + ARCHITECTURES.help_text()
    + "\n\noptimizers (lr default 1e-3 for all; torch's defaults otherwise):\n" + OPTIMIZERS.help_text()
    + "\n\nschedules (stepped every optimizer step):\n" + SCHEDULES.help_text()
    + "\n\nexample:\n  stylestream train --style starry_night.jpg --data coco/train2017 --out runs/starry"
)  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--style", required=True, metavar="IMAGE", help="style image")
    p.add_argument(
        "--data", required=True, metavar="DIR", help="folder of training images (searched recursively)"
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    p.add_argument(
        "--arch", default="johnson", choices=ARCHITECTURES.names(), help="network (default: johnson)"
    )
    p.add_argument(
        "--norm", default="instance", choices=NORMS, help="normalization layers (default: instance)"
    )
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS.names(), metavar="NAME",
                   help="optimizer (default: adam; list below)")  # fmt: skip
    p.add_argument("--lr", type=number, default=1e-3, help="learning rate (default: 1e-3)")
    p.add_argument(
        "--schedule", default="constant", choices=SCHEDULES.names(), help="lr schedule (default: constant)"
    )
    p.add_argument("--batch-size", type=whole_number, default=4, help="images per step (default: 4)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=whole_number, default=2, help="passes over the data (default: 2)")
    length.add_argument("--steps", type=whole_number, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--image-size", type=whole_number, default=256, help="training crop side in pixels (default: 256)")
    p.add_argument("--style-size", type=whole_number, default=None,
                   help="longer side of the style image (default: --image-size, as Johnson's code; 0: its "
                        "own size, as the optimizer study's code and `sweep`)")  # fmt: skip
    p.add_argument("--content-weight", type=number, default=1e5, help="lambda_c (default: 1e5)")
    p.add_argument("--style-weight", type=number, default=1e10, help="lambda_s (default: 1e10)")
    p.add_argument("--tv-weight", type=number, default=0.0, help="total-variation weight (default: 0)")
    p.add_argument("--temporal-weight", type=number, default=0.0, metavar="W",
                   help="weight of the temporal-stability term: each image paired with itself slightly "
                        "moved (random affine: <= 3 px, <= 2 deg, +-2%%) plus camera-like noise, the "
                        "stylized pair asked to move alike (mean squared difference, grey levels squared), "
                        "for a network steadier under camera motion on video (default: 0, off)")  # fmt: skip
    p.add_argument("--style-reduction", default="mean", choices=("mean", "sum"),
                   help="mean (reference code, matches the default weights) or sum (eq. 2.4 as written) "
                        "of the squared Gram differences")  # fmt: skip
    p.add_argument("--vgg-weights", default="imagenet", metavar="imagenet|random|PATH",
                   help="VGG-16 for the loss: imagenet (torchvision download or $STYLESTREAM_VGG_WEIGHTS), "
                        "random (seeded; offline smoke tests only) or a state_dict file")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (bf16, or fp16 + GradScaler on older GPUs); "
                        "default: on for CUDA and for CPUs with AMX")  # fmt: skip
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last memory format (default: on; faster on CPU and tensor cores)")  # fmt: skip
    p.add_argument("--fused", default="auto", choices=FUSED_MODES,
                   help="one VGG pass and one backward for all runs of a lockstep group (a sweep; train "
                        "is a group of one): the same results up to float rounding, 1.15x faster on an "
                        "H200; auto: on for CUDA, off on CPU (no faster there, and it holds every run's "
                        "activations at once); L-BFGS runs and runs with another AMP setting take their "
                        "own pass (default: auto)")  # fmt: skip
    p.add_argument("--seed", type=whole_number, default=42, help="seed for init and data order (default: 42)")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR/checkpoint.pt (a run stopped before its first checkpoint "
                        "starts over from step 0)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="start RUN_DIR afresh: remove the files an earlier run left there (model.pt, "
                        "checkpoint.pt, metrics.csv, card.json, pictures, tensorboard/)")  # fmt: skip
    p.add_argument(
        "--checkpoint-every", type=whole_number, default=500, help="steps between checkpoints (default: 500)"
    )
    p.add_argument(
        "--log-every", type=whole_number, default=50, help="steps between progress/TensorBoard logs (default: 50)"
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="write TensorBoard scalars and samples to RUN_DIR/tensorboard",
    )
    p.add_argument(
        "--workers", type=whole_number, default=None, help="data-loading processes (default: 0 on CPU, 4 on GPU)"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from stylestream.cli import CLIError
    from stylestream.devices import DeviceError
    from stylestream.models.io import WriteError
    from stylestream.train.config import ConfigError, TrainConfig
    from stylestream.train.data import DataError
    from stylestream.train.images import ImageLoadError
    from stylestream.train.loop import train
    from stylestream.train.vgg import VGGWeightsError

    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        result = train(cfg)
    except (ConfigError, DeviceError, DataError, ImageLoadError, VGGWeightsError) as exc:
        raise CLIError(str(exc)) from None
    except WriteError as exc:  # card.json records status "failed" where it could be written
        raise CLIError(exc.line("--out")) from None
    card = result.card
    print(f"device: {card['device']}  amp: {card['amp']}")
    losses = "  ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
    print(f"{result.status}: {result.step} steps in {result.wall_time_s:.1f} s "
          f"({result.images_per_s:.2f} images/s)  {losses}")  # fmt: skip
    if result.status == "diverged":
        print(f"the loss became NaN/Inf: see {result.run_dir}/card.json; try a lower --lr")
        return EXIT_DIVERGED
    print(f"model: {result.run_dir}/model.pt  (pictures: losses.png, samples.jpg)")
    return 0
