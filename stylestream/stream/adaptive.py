"""Hold the frame rate by adapting the processing size, as WebRTC encoders adapt resolution.

A style's cost grows with the pixels it processes (≈ the square of the longer side), so when frames take
longer than the frame budget the controller shrinks the size the style runs at, and grows it again when
there is room (the load fell, another session ended). The output is scaled back to the input size, so
the viewer always gets the camera's resolution. Hysteresis (a dead band, and different speeds down and
up) keeps it from oscillating; a style switch resets the measurements so it reacts within a second."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

MIN_SIDE = 128  # below this, styles lose their texture; frames get no smaller
STEP = 16  # sizes are multiples of 16: every architecture pads to 4, codecs like even sides


@dataclass
class ScaleState:
    side: int | None  # the processing size's longer side; None: the input size (not adapted)
    adapting: bool  # the size is below the input's because of the frame budget


class ScaleController:
    """`target_fps` 0 disables adaptation (every frame at the input size, capped by `max_side`)."""

    def __init__(self, target_fps: float = 24.0, max_side: int | None = None, min_side: int = MIN_SIDE,
                 headroom: float = 0.85) -> None:  # fmt: skip
        self.target_fps = target_fps
        self.max_side = max_side
        self.min_side = min_side
        self.budget = headroom / target_fps if target_fps > 0 else math.inf
        self.side: int | None = None
        self._cost: float | None = None  # EMA of seconds per frame, normalised to the current side
        self._input_side = 0
        self._last_change = 0.0

    # The size to process the next frame of an input at.
    def size_for(self, width: int, height: int) -> tuple[int, int]:
        longer = max(width, height)
        self._input_side = longer
        cap = min(longer, self.max_side or longer)
        side = cap if self.side is None else min(self.side, cap)
        if side >= longer:
            return width, height
        s = side / longer
        return max(2, round(width * s / 2) * 2), max(2, round(height * s / 2) * 2)

    def observe(self, seconds: float, processed_side: int, now: float | None = None) -> None:
        """One frame took `seconds` at `processed_side`; maybe change the size for the next ones."""
        if self.target_fps <= 0 or processed_side <= 0:
            return
        now = time.monotonic() if now is None else now
        # Work ∝ side², so a measurement at one size predicts another: keep it per unit of side².
        unit = seconds / processed_side**2
        self._cost = unit if self._cost is None else 0.7 * self._cost + 0.3 * unit
        cap = min(self._input_side or processed_side, self.max_side or self._input_side or processed_side)
        current = self.side if self.side is not None else cap
        predicted = self._cost * current**2
        fits = int(math.sqrt(self.budget / self._cost)) // STEP * STEP  # the largest side within budget
        if predicted > self.budget * 1.1 and now - self._last_change >= 0.25:  # too slow: down at once
            self._set(max(self.min_side, min(current - STEP, fits)), cap, now)
        elif predicted < self.budget * 0.7 and current < cap and now - self._last_change >= 1.0:
            # Room: up, at most to 90 % of what fits (cost per pixel is higher at small sizes, so the
            # estimate errs on the slow side), at least one step.
            self._set(max(current + STEP, int(fits * 0.9) // STEP * STEP), cap, now)

    def _set(self, side: int, cap: int, now: float) -> None:
        side = max(self.min_side, min(cap, side))
        self.side = None if side >= cap else side
        self._last_change = now

    def reset(self) -> None:
        """A new style: its cost is unknown. Keep the size, forget the measurements."""
        self._cost = None
        self._last_change = 0.0

    def state(self) -> ScaleState:
        return ScaleState(self.side, self.side is not None and self.side < (self._input_side or 0))
