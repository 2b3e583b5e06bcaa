"""Default learning rates for optimizing the pixels of an image in [0, 255] (`stylestream optimize`),
per optimizer family. Light (no torch), so the command's --help can list them.

The adaptive methods take steps of about lr pixel levels whatever the gradient's scale, so one value
serves any VGG weights and loss weights. Plain SGD's step is lr times the raw gradient, whose scale
depends on both; its default is therefore picked from the first gradient: the lr that moves the
steepest pixel FIRST_STEP_LEVELS levels. The values were chosen on tubingen x starry_night, 96 px,
60 steps with a random-weight VGG-16 (the best of a few per family; see the README), not on ImageNet
weights."""

from __future__ import annotations

PIXEL_LR: dict[str, float | None] = {
    "lbfgs": 1.0,  # scales the line search's first trial step (which torch divides by |g|_1 on step 1)
    "lbfgsb": None,  # SciPy's L-BFGS-B has no learning rate
    "adam": 5.0, "adamax": 5.0, "amsgrad": 5.0, "nadam": 5.0, "radam": 5.0, "adamw": 5.0,
    "rmsprop": 0.5,  # its first steps are about 10x its lr (alpha 0.99)
    "adagrad": 10.0,
    "adadelta": 1000.0,  # its first steps are about sqrt(eps) = 1e-3 times its lr
    "rprop": 1.0,  # the initial step in levels; Rprop grows it up to 50
    "sgd": None, "momentum": None, "nesterov": None,  # from the first gradient: FIRST_STEP_LEVELS
}  # fmt: skip
FIRST_STEP_LEVELS: dict[str, float] = {"sgd": 20.0, "momentum": 5.0, "nesterov": 5.0}


def base_optimizer(name: str) -> str:
    """The optimizer a Lookahead variant wraps (`lookahead` is Lookahead(Adam)); the name itself otherwise."""
    return "adam" if name == "lookahead" else name.removeprefix("lookahead-")


def takes_lr(name: str) -> bool:
    return base_optimizer(name) != "lbfgsb"


def pixel_lr(name: str) -> float | None:
    """The fixed default for `name`, or None (no lr, or one picked from the first gradient)."""
    return PIXEL_LR[base_optimizer(name)]


def first_step_levels(name: str) -> float | None:
    """For SGD-like optimizers: how far (in levels) the default lr moves the steepest pixel on step 1."""
    return FIRST_STEP_LEVELS.get(base_optimizer(name))


def defaults_text() -> str:
    """One line for --help: every family's default."""
    fixed = {}
    for name, lr in PIXEL_LR.items():
        if lr is not None:
            fixed.setdefault(lr, []).append(name)
    parts = [f"{'/'.join(names)} {lr:g}" for lr, names in fixed.items()]
    by_levels: dict[float, list[str]] = {}
    for name, levels in FIRST_STEP_LEVELS.items():
        by_levels.setdefault(levels, []).append(name)
    parts += [f"{'/'.join(names)}: the steepest pixel moves {levels:g} levels on step 1" for levels, names in by_levels.items()]
    return "; ".join(parts) + "; lbfgsb has none"
