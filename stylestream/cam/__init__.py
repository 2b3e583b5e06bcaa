"""`stylestream cam`: a local camera, file or stream in; stylized frames out to a virtual camera, a
preview window, a video file or memory.

    frames    what sources, sinks and the pipeline share: frame metadata, resizing
    sources   frames in (OpenCV cameras, PyAV files and stream URLs)
    sinks     frames out (virtual camera, video file, recording, progress line)
    preview   the preview window: overlay and key commands
    pipeline  capture thread -> latest-frame-wins slot -> engine -> sinks
    cli       the `stylestream cam` command

Import the pieces from their modules; this one stays light so `stylestream --help` loads neither
OpenCV nor PyAV."""

from __future__ import annotations


class CamError(RuntimeError):
    """A missing camera, input, virtual-camera backend or display; the message says what to do."""
