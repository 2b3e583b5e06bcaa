"""The plugin interface: a style is anything with a name that turns a batch of uint8 RGB frames
(N, H, W, 3) into a batch of the same shape. Classic filters subclass `StylePlugin`; neural styles
are `NeuralPlugin`s that wrap a model file and an inference backend.

The frame contract (uint8 RGB checks, parameter defaults and clamping, the processing size, the
`strength` blend) is enforced once, by the engine (stylestream.plugins.engine.stylize): a style's
`apply` only stylizes, and receives only its own parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Param:
    """A parameter the user may tune live; the page draws a slider for it."""

    name: str
    label: str
    default: float
    min: float
    max: float
    step: float = 0.01
    help: str = ""

    def clamp(self, value: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {self.name!r} must be a number, got {value!r}") from None
        if not np.isfinite(v):
            raise ValueError(f"parameter {self.name!r} must be finite, got {value!r}")
        return min(self.max, max(self.min, v))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


STRENGTH = Param("strength", "Strength", 1.0, 0.0, 1.0, 0.05, "blend of stylized (1) and original (0)")
# Applied across frames by whoever plays a video (server, stylize, cam) with stylestream.temporal, not by
# the style itself: a style sees one batch, stabilizing needs the previous frame.
STABILIZE = Param("stabilize", "Stabilize", 0.0, 0.0, 1.0, 0.05,
                  "video: carry the previous stylized frame along the motion (less flicker; 0 = off)")
TEMPORAL_PARAMS = frozenset({"stabilize"})
# Declared by styles that can run below the frame size (neural nets); the engine resizes for them.
SCALE = Param("scale", "Processing scale", 1.0, 0.25, 1.0, 0.05,
              "run the network at this fraction of the frame size (faster, softer)")  # fmt: skip
# Parameters the engine applies around `apply` (never passed to it).
ENGINE_PARAMS = frozenset({"strength", "scale"}) | TEMPORAL_PARAMS


@dataclass
class PluginInfo:
    """What a listing shows: where a plugin came from and how it runs."""

    name: str
    title: str
    description: str
    kind: str  # "neural" | "filter"
    backend: str  # "opencv", "torch", "onnxruntime", "tensorrt", ...
    source: str  # "builtin", "entry point <dist>", or the file/folder path
    thumbnail: Path | None = None
    params: list[Param] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["thumbnail"] = str(self.thumbnail) if self.thumbnail else None
        d["params"] = [p.to_json() for p in self.params]
        return d


class StylePlugin:
    """Base class. Subclasses set the class attributes and implement `apply`.

    `apply(frames, params)` gets a validated uint8 batch at the processing size and the style's own
    parameters (resolved: defaults filled, values clamped) and only stylizes. `process` is the whole
    frame contract for callers without an engine; it runs the engine's code, not a copy of it."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "filter"
    backend: ClassVar[str] = "opencv"
    thumbnail: Path | None = None
    root: Path | None = None  # the plugin folder its files must stay inside; None: shipped as code
    extra_params: ClassVar[tuple[Param, ...]] = ()
    scalable: ClassVar[bool] = True  # False: the engine's max_side never shrinks this style's input
    min_side: ClassVar[int] = 1  # the engine enlarges smaller frames to this for `apply` (and back)

    @property
    def params(self) -> list[Param]:
        return [STRENGTH, STABILIZE, *self.extra_params]

    def resolve_params(self, params: Mapping[str, Any] | None) -> dict[str, float]:
        declared = {p.name: p for p in self.params}
        unknown = set(params or {}) - set(declared)
        if unknown:
            raise ValueError(
                f"style {self.name!r} has no parameter(s) {sorted(unknown)}; it has {sorted(declared)}"
            )
        out = {p.name: p.default for p in self.params}
        for k, v in (params or {}).items():
            out[k] = declared[k].clamp(v)
        return out

    def process(self, frames: np.ndarray, params: Mapping[str, Any] | None = None) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> uint8 RGB (N, H, W, 3): the engine's frame contract around `apply`."""
        from stylestream.plugins.engine import stylize  # the engine imports this module

        return stylize(self, frames, params)

    def apply(self, frames: np.ndarray, params: dict[str, float]) -> np.ndarray:
        """Stylize a checked uint8 RGB batch; `params` holds only this style's own (extra) parameters."""
        raise NotImplementedError

    source: str = "builtin"  # set by PluginSet.add to where the plugin was found

    def info(self, source: str | None = None) -> PluginInfo:
        source = source or self.source
        return PluginInfo(self.name, self.title or self.name, self.description, self.kind, self.backend,
                          source, self.thumbnail, self.params)  # fmt: skip

    def close(self) -> None:
        """Release backend resources (sessions, GPU memory)."""
