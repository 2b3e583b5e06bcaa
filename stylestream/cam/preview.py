"""The preview window: an OpenCV window with an fps/latency overlay whose keys switch styles and quit."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np

from stylestream.cam import CamError
from stylestream.cam.frames import FrameMeta
from stylestream.cam.sinks import NEXT, PREV, QUIT, Sink

log = logging.getLogger(__name__)


def key_command(key: int) -> str | None:
    """Preview keys: q/Esc quit, n/p next/previous style, 1-9 pick a style (as 'select:N', from 0)."""
    if key < 0:
        return None
    ch = chr(key & 0xFF).lower()
    if ch == "q" or key & 0xFF == 27:
        return QUIT
    if ch == "n":
        return NEXT
    if ch == "p":
        return PREV
    if ch in "123456789":
        return f"select:{int(ch) - 1}"
    return None


def draw_overlay(bgr: np.ndarray, meta: FrameMeta) -> np.ndarray:
    """Style, fps and latency in the top-left corner (drawn in place; also returned)."""
    import cv2

    text = f"{meta.style}  {meta.fps:.1f} fps  {meta.latency * 1000:.0f} ms"
    scale = max(0.4, bgr.shape[1] / 1280)
    org = (8, int(8 + 22 * scale))
    cv2.putText(bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return bgr


def display_problem(env: Mapping[str, str] | None = None, system: str | None = None) -> str | None:
    """Why a window cannot be shown here, or None."""
    env = os.environ if env is None else env
    system = system or platform.system()
    if system == "Linux" and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("--preview needs a display, but neither DISPLAY nor WAYLAND_DISPLAY is set (over ssh or in "
                "a container?): run it in a desktop session or with `ssh -X`, or drop --preview and "
                "watch the --virtual-camera or an --output file instead")  # fmt: skip
    return None


class PreviewSink(Sink):
    """An OpenCV window with an fps/latency overlay; keys switch styles (n/p, 1-9) and quit (q, Esc).

    `gui` is the module with namedWindow/imshow/waitKey (OpenCV by default)."""

    def __init__(self, title: str = "stylestream", gui: Any = None):
        self.title = title
        self._gui = gui

    def start(self, width: int, height: int, fps: float) -> None:
        if self._gui is None:
            problem = display_problem()
            if problem:
                raise CamError(problem)
            import cv2

            self._gui = cv2
        try:
            self._gui.namedWindow(self.title, 0)  # 0 = cv2.WINDOW_NORMAL: resizable
        except Exception as exc:  # noqa: BLE001 - cv2.error from a build without highgui
            if "not implemented" in str(exc).lower():
                raise CamError("--preview needs OpenCV with GUI support, but this is opencv-python-headless: "
                               "pip uninstall -y opencv-python-headless && pip install opencv-python") from None
            raise CamError(f"--preview could not open a window: {exc}") from None

    def send(self, frame: np.ndarray, meta: FrameMeta) -> str | None:
        bgr = np.ascontiguousarray(frame[..., ::-1])
        self._gui.imshow(self.title, draw_overlay(bgr, meta))
        cmd = key_command(self._gui.waitKey(1))
        if cmd is None and self._gui.getWindowProperty(self.title, 4) < 1:  # 4 = WND_PROP_VISIBLE
            return QUIT  # the user closed the window
        return cmd

    def close(self) -> None:
        if self._gui is not None:
            try:
                self._gui.destroyWindow(self.title)
            except Exception as exc:  # noqa: BLE001 - the user closed it already
                log.debug("destroyWindow: %s", exc)
