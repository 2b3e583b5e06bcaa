"""The names and one-line help of the training registries, for the command-line parsers.

The registries themselves (stylestream.models.ARCHITECTURES, stylestream.train.optimizers.OPTIMIZERS,
...) live in modules that import torch, which costs seconds; `stylestream --help` and every command's
parser are built from these tables instead. The registries stay the source of truth:
tests/test_cli.py fails when a table here differs from its registry."""

from __future__ import annotations

from stylestream.registry import Registry


def _table(kind: str, rows: list[tuple[str, str]]) -> Registry[None]:
    table: Registry[None] = Registry(kind)
    for name, help in rows:
        table.add(name, None, help)
    return table


ARCHITECTURES = _table("architecture", [  # stylestream.models.ARCHITECTURES
    ("johnson", "Johnson et al. 2016 as the study ran it: 32/64/128, 5 residual blocks, linear 9x9 head"),
    ("johnson-tanh", "johnson with a scaled-tanh head (model files saved before v2)"),
    ("lite", "CPU/edge preset: pixel-unshuffle stem, depthwise-separable body at 1/4 res (~30+ fps 320x240)"),
])  # fmt: skip

NORMS = ("instance", "batch")  # stylestream.models.layers.NORMS

_OPTIMIZER_BASES = [  # the plain optimizers of stylestream.train.optimizers
    ("sgd", "plain stochastic gradient descent"),
    ("momentum", "SGD with momentum 0.9"),
    ("nesterov", "SGD with Nesterov momentum 0.9"),
    ("adagrad", "Adagrad"),
    ("adadelta", "Adadelta (its usual lr is 1.0)"),
    ("rprop", "resilient backpropagation (meant for full batches)"),
    ("rmsprop", "RMSprop"),
    ("adam", "Adam (the study's and Johnson et al.'s choice)"),
    ("adamax", "Adamax (Adam with the infinity norm)"),
    ("amsgrad", "Adam with the AMSGrad max of second moments"),
    ("nadam", "Adam with Nesterov momentum"),
    ("radam", "rectified Adam"),
    ("adamw", "Adam with decoupled weight decay (0.01)"),
    ("lbfgs", "torch's L-BFGS, strong-Wolfe line search (closure; up to 20 iterations per step)"),
    ("lbfgsb", "SciPy's L-BFGS-B (closure; up to 20 iterations per step; no lr: it line-searches)"),
]
OPTIMIZERS = _table("optimizer", [  # stylestream.train.optimizers.OPTIMIZERS
    *_OPTIMIZER_BASES,
    ("lookahead", "Lookahead(Adam), k=5, alpha=0.5 (Zhang et al. 2019)"),
    *[(f"lookahead-{name}", f"Lookahead({name}), k=5, alpha=0.5") for name, _ in _OPTIMIZER_BASES],
])  # fmt: skip

SCHEDULES = _table("schedule", [  # stylestream.train.schedules.SCHEDULES
    ("constant", "fixed learning rate"),
    ("step", "x gamma (0.1) every step_size steps (default: a third of the run)"),
    ("exponential", "x gamma per step; default gamma reaches final_factor (0.01) at the end"),
    ("inverse-time", "lr0 / (1 + k t); default k makes the final lr lr0/10"),
    ("cosine", "cosine annealing from lr0 to eta_min (0) over the run"),
])  # fmt: skip

# stylestream.train.sweep.STUDY_OPTIMIZERS: the optimizers of Geng et al.'s study
STUDY_OPTIMIZERS = ("adam", "adamax", "amsgrad", "nadam", "rmsprop", "adagrad", "adadelta", "rprop")

LOSSES = _table("loss", [  # stylestream.train.losses.LOSSES
    ("johnson", "VGG-16, content relu2_2, style relu1_2..relu4_3 (Johnson et al. 2016; the loss `train` uses)"),
    ("gatys", "VGG-19, content conv4_2, style conv1_1..conv5_1 (Gatys et al. 2016)"),
])  # fmt: skip

INITS = ("content", "noise")  # stylestream.train.optimize.INITS

# stylestream.train.config.TrainConfig.fused: one VGG pass for a lockstep group's models (auto: on CUDA)
FUSED_MODES = ("auto", "on", "off")
