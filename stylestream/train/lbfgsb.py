"""SciPy's L-BFGS-B as a torch optimizer: what seed 002's per-image optimization used, on the pixel
vector with [0, 255] bounds (`stylestream optimize --optimizer lbfgsb`).

Each `step(closure)` runs one `scipy.optimize.minimize(method="L-BFGS-B")` on the flat float64 vector of
all parameters, for up to `max_iter` iterations and `max_eval` loss evaluations, within `bounds` (None:
unbounded). SciPy keeps its curvature pairs only within that call, so a step is a fresh L-BFGS-B run
from the current point: give per-image optimization one long step, not many short ones. The line
search is SciPy's (Moré-Thuente), there is no learning rate: `lr` is kept in the param groups for the
schedules' sake and never read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.optim import Optimizer


def scipy_problem() -> str | None:
    """None when SciPy can be imported, else the one-line reason `lbfgsb` cannot run here."""
    try:
        import scipy.optimize  # noqa: F401
    except ImportError as exc:
        return f"optimizer lbfgsb needs SciPy ({exc}); pip install scipy, or choose lbfgs"
    return None


class LBFGSB(Optimizer):
    def __init__(self, params: Iterable, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 history_size: int = 10, bounds: tuple[float, float] | None = None, ftol: float = 2.2e-9,
                 gtol: float = 1e-5):  # fmt: skip
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval or max_iter * 5 // 4,
                    "history_size": history_size, "bounds": bounds, "ftol": ftol, "gtol": gtol}  # fmt: skip
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGSB takes one parameter group (it optimizes one flat vector)")

    def _params(self) -> list[torch.Tensor]:
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    @torch.no_grad()
    def _set(self, x: np.ndarray) -> None:
        offset = 0
        for p in self._params():
            n = p.numel()
            p.copy_(torch.from_numpy(x[offset:offset + n]).view_as(p))
            offset += n

    def _flat_grad(self) -> np.ndarray:
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self._params()]
        return torch.cat(grads).detach().double().cpu().numpy()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SciPy L-BFGS-B run from the current parameters; returns the loss at the start. The
        parameters end at SciPy's result (the lowest loss it accepted)."""
        if closure is None:
            raise ValueError("LBFGSB needs a closure that re-evaluates the loss")
        from scipy.optimize import minimize  # SciPy loads only when this optimizer is used

        group = self.param_groups[0]
        first: list[Any] = []

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            self._set(x)
            with torch.enable_grad():
                loss = closure()
            if not first:
                first.append(loss)
            value = loss.detach() if isinstance(loss, torch.Tensor) else loss
            return float(value), self._flat_grad()

        with torch.no_grad():
            x0 = torch.cat([p.detach().reshape(-1) for p in self._params()]).double().cpu().numpy()
        bounds = None
        if group["bounds"] is not None:
            low, high = group["bounds"]
            bounds = [(low, high)] * x0.size
        result = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": group["max_iter"], "maxfun": group["max_eval"],
                                   "maxcor": group["history_size"], "ftol": group["ftol"], "gtol": group["gtol"]})  # fmt: skip
        self._set(result.x)
        return first[0] if first else None
