"""Lookahead (Zhang, Lucas, Hinton & Ba 2019) as a wrapper around any torch optimizer.

The base ("fast") optimizer takes k steps; then the slow weights move a fraction alpha towards the
fast weights, phi <- phi + alpha (theta - phi), and the fast weights restart from them, theta <- phi."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer


class Lookahead(Optimizer):
    def __init__(self, base: Optimizer, k: int = 5, alpha: float = 0.5):
        if k < 1:
            raise ValueError(f"Lookahead k must be >= 1, got {k}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead alpha must be in (0, 1], got {alpha}")
        self.base = base
        self.k = int(k)
        self.alpha = float(alpha)
        self.fast_steps = 0
        # share the base optimizer's group dicts, so lr schedulers acting on us drive the base optimizer
        super().__init__(base.param_groups, {})
        self.param_groups = base.param_groups
        self.defaults = base.defaults

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def _init_slow(self) -> None:
        for p in self._params():
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        self._init_slow()  # slow weights start at the weights before the first fast step
        if closure is not None:
            with torch.enable_grad():
                loss = self.base.step(closure)
        else:
            loss = self.base.step()
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            for p in self._params():
                slow = self.state[p]["slow"]
                slow.add_(p.detach() - slow, alpha=self.alpha)
                p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        params = self._params()
        return {
            "base": self.base.state_dict(),
            "k": self.k,
            "alpha": self.alpha,
            "fast_steps": self.fast_steps,
            "slow": [self.state[p]["slow"].clone() if "slow" in self.state[p] else None for p in params],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups  # load_state_dict replaced the group dicts
        self.k, self.alpha = int(state_dict["k"]), float(state_dict["alpha"])
        self.fast_steps = int(state_dict["fast_steps"])
        params = self._params()
        if len(state_dict["slow"]) != len(params):
            raise ValueError(
                f"Lookahead state holds {len(state_dict['slow'])} parameters, optimizer has {len(params)}"
            )
        for p, slow in zip(params, state_dict["slow"]):
            self.state[p].pop("slow", None)
            if slow is not None:
                self.state[p]["slow"] = slow.to(device=p.device, dtype=p.dtype).clone()

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, base={self.base!r})"
