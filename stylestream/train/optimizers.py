"""Optimizer registry: every torch.optim optimizer the study compares, plus Lookahead variants.

Each keeps torch's standard defaults except the learning rate (1e-3 as in the study unless given) and
L-BFGS's line search (strong Wolfe: without one its second step can land anywhere). `lbfgsb` is SciPy's
L-BFGS-B (stylestream.train.lbfgsb). `lookahead` is Lookahead(Adam); `lookahead-<base>` wraps any base
(k = 5, alpha = 0.5)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from stylestream.registry import Registry
from stylestream.train.lbfgsb import LBFGSB
from stylestream.train.lookahead import Lookahead

DEFAULT_LR = 1e-3
OptimizerFactory = Callable[..., Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")

_BASES: dict[str, tuple[Callable[..., Optimizer], dict[str, Any], str]] = {
    "sgd": (torch.optim.SGD, {}, "plain stochastic gradient descent"),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}, "SGD with momentum 0.9"),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}, "SGD with Nesterov momentum 0.9"),
    "adagrad": (torch.optim.Adagrad, {}, "Adagrad"),
    "adadelta": (torch.optim.Adadelta, {}, "Adadelta (its usual lr is 1.0)"),
    "rprop": (torch.optim.Rprop, {}, "resilient backpropagation (meant for full batches)"),
    "rmsprop": (torch.optim.RMSprop, {}, "RMSprop"),
    "adam": (torch.optim.Adam, {}, "Adam (the study's and Johnson et al.'s choice)"),
    "adamax": (torch.optim.Adamax, {}, "Adamax (Adam with the infinity norm)"),
    "amsgrad": (torch.optim.Adam, {"amsgrad": True}, "Adam with the AMSGrad max of second moments"),
    "nadam": (torch.optim.NAdam, {}, "Adam with Nesterov momentum"),
    "radam": (torch.optim.RAdam, {}, "rectified Adam"),
    "adamw": (torch.optim.AdamW, {}, "Adam with decoupled weight decay (0.01)"),
    "lbfgs": (torch.optim.LBFGS, {"line_search_fn": "strong_wolfe"},
              "torch's L-BFGS, strong-Wolfe line search (closure; up to 20 iterations per step)"),
    "lbfgsb": (LBFGSB, {}, "SciPy's L-BFGS-B (closure; up to 20 iterations per step; no lr: it line-searches)"),
}
CLOSURE = ("lbfgs", "lbfgsb")  # step() takes a closure that re-evaluates the loss


def _plain(cls: Callable[..., Optimizer], fixed: dict[str, Any]) -> OptimizerFactory:
    def make(params: Iterable, lr: float = DEFAULT_LR, **kw: Any) -> Optimizer:
        return cls(params, lr=lr, **{**fixed, **kw})

    return make


def _lookahead(base: str) -> OptimizerFactory:
    def make(
        params: Iterable, lr: float = DEFAULT_LR, k: int = 5, alpha: float = 0.5, **kw: Any
    ) -> Optimizer:
        return Lookahead(OPTIMIZERS[base](params, lr=lr, **kw), k=k, alpha=alpha)

    return make


for _name, (_cls, _fixed, _help) in _BASES.items():
    OPTIMIZERS.add(_name, _plain(_cls, _fixed), _help, closure=_name in CLOSURE)
OPTIMIZERS.add("lookahead", _lookahead("adam"), "Lookahead(Adam), k=5, alpha=0.5 (Zhang et al. 2019)")
for _name in _BASES:
    OPTIMIZERS.add(f"lookahead-{_name}", _lookahead(_name), f"Lookahead({_name}), k=5, alpha=0.5",
                   closure=_name in CLOSURE)  # fmt: skip


def needs_closure(name: str) -> bool:
    """True when optimizer.step must be given a closure that re-evaluates the loss (L-BFGS)."""
    return bool(OPTIMIZERS.entry(name).meta.get("closure", False))


def make_optimizer(name: str, params: Iterable, lr: float = DEFAULT_LR, **kw: Any) -> Optimizer:
    """Build a registered optimizer; unknown names raise UnknownNameError listing the choices."""
    return OPTIMIZERS[name](params, lr=lr, **kw)
