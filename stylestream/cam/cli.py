"""`stylestream cam`: stylize a local camera (or a file/stream) into a virtual camera, a preview
window or a video file."""

from __future__ import annotations

import argparse
import sys

from stylestream.cli import CLIError
from stylestream.cli_types import size_wxh
from stylestream.plugins.options import (
    add_engine_arguments,
    add_param_argument,
    add_plugin_arguments,
    backend_options,
)

HELP = "stylize a camera into a virtual camera (OBS, Zoom, Meet), a preview window or a file"
DESCRIPTION = (
    "Read a webcam (OpenCV) or any file/stream PyAV can read, stylize it live with latest-frame-wins "
    "(a slow style drops frames instead of adding delay), and write it to a virtual camera "
    "(pyvirtualcam: v4l2loopback on Linux, OBS Virtual Camera on Windows/macOS), a preview window "
    "and/or a video file."
)
EPILOG = """\
preview keys: n / p next / previous style, 1-9 pick a style, q or Esc quit

examples:
  stylestream cam --style cartoon --virtual-camera --preview
  stylestream cam --style mosaic --plugins ./plugins --input /dev/video2 --size 1280x720 --virtual-camera
  stylestream cam --style edges --input clip.mp4 --every-frame --output edges.mp4

See docs/obs.md for OBS (virtual camera, WHIP, Browser Source)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--style", required=True, metavar="NAME", help="style to start with (see `stylestream plugins`)")
    p.add_argument("--input", default="0", metavar="SRC",
                   help="camera index (0), device (/dev/video2), video file or stream URL (default: 0)")
    out = p.add_argument_group("outputs (at least one)")
    out.add_argument("--virtual-camera", action="store_true", help="send to a virtual camera (pyvirtualcam)")
    out.add_argument("--vcam-device", metavar="DEV",
                     help="virtual camera device, e.g. /dev/video10 (default: the first free one)")
    out.add_argument("--vcam-backend", metavar="NAME",
                     help="pyvirtualcam backend: v4l2loopback, obs or unitycapture (default: any that works)")
    out.add_argument("--preview", action="store_true", help="show a window with an fps/latency overlay")
    out.add_argument("--output", metavar="FILE", help="also write the stylized video to FILE (.mp4/.mkv)")
    p.add_argument("--size", type=size_wxh, metavar="WxH",
                   help="frame size, even sides >= 16, e.g. 1280x720 (asked of the camera; other inputs are "
                        "resized)")  # fmt: skip
    p.add_argument("--fps", type=float, metavar="N", help="frame rate asked of the camera")
    add_plugin_arguments(p)
    add_engine_arguments(p)
    add_param_argument(p)
    p.add_argument("--every-frame", action="store_true",
                   help="stylize every frame of a file as fast as possible instead of playing it in real time")
    p.add_argument("--loop", action="store_true", help="play a file input over and over")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N stylized frames")


def _check_size(size: tuple[int, int] | None) -> None:
    # 4:2:0 video (the file encoder, virtual cameras) needs even sides; styles need >= 16 px.
    if size and (min(size) < 16 or size[0] % 2 or size[1] % 2):
        raise CLIError(f"--size {size[0]}x{size[1]}: width and height must be even and at least 16")


def run(args: argparse.Namespace) -> int:
    from stylestream import devices
    from stylestream.cam import CamError
    from stylestream.cam.pipeline import CamPipeline
    from stylestream.cam.preview import PreviewSink, display_problem
    from stylestream.cam.sinks import ProgressSink, Sink, VideoFileSink, VirtualCameraSink
    from stylestream.cam.sources import open_source
    from stylestream.plugins import Engine, discover_plugins
    from stylestream.registry import UnknownNameError

    if not (args.virtual_camera or args.preview or args.output):
        raise CLIError("nothing to send the video to: add --virtual-camera, --preview and/or --output FILE")
    if args.preview and (problem := display_problem()):
        raise CLIError(problem)  # before opening the camera and loading models
    _check_size(args.size)
    params = dict(args.param)

    for d in args.plugins:
        if not d.is_dir():
            raise CLIError(f"--plugins {d}: no such folder")
    try:
        plugins = discover_plugins(args.plugins, include_user_dir=not args.no_user_plugins,
                                   max_model_mb=args.max_model_mb, triton_url=args.triton_url)  # fmt: skip
    except ValueError as exc:  # e.g. a --triton-url server that does not answer
        raise CLIError(str(exc)) from None
    for err in plugins.errors:
        print(f"warning: skipped plugin: {err}", file=sys.stderr)
    try:
        plugin = plugins.get(args.style)
        plugin.resolve_params(params)
    except UnknownNameError as exc:
        raise CLIError(str(exc)) from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None

    sinks: list[Sink] = []
    if args.virtual_camera:
        sinks.append(VirtualCameraSink(args.vcam_device, args.vcam_backend))
    if args.preview:
        sinks.append(PreviewSink())
    if args.output:
        sinks.append(VideoFileSink(args.output))
    sinks.append(ProgressSink())

    try:
        devices.reserve_cores(1)  # capture decoding and the output encoder need a core
        engine = Engine(plugins, backend=args.backend, device=args.device, max_side=args.max_side,
                        backend_options=backend_options(args.backend, args.triton_url))
    except ValueError as exc:  # unknown backend or device (the message lists the choices)
        raise CLIError(str(exc)) from None
    try:
        try:
            backend = engine.describe(args.style)  # loads a neural style's model now, before the camera
        except (ValueError, RuntimeError, OSError) as exc:  # e.g. a backend this machine lacks
            raise CLIError(f"style {args.style!r} cannot run here: {exc}") from None
        source = open_source(args.input, args.size, args.fps, realtime=not args.every_frame, loop=args.loop)
        print(f"input: {source.description} {source.width}x{source.height} @ {source.fps:g} fps; "
              f"style {args.style} on {backend}")  # fmt: skip
        pipeline = CamPipeline(source, engine, args.style, sinks, styles=plugins.names(), params=params or None,
                               every_frame=args.every_frame, max_frames=args.max_frames)  # fmt: skip
        stats = pipeline.run()
    except CamError as exc:
        raise CLIError(str(exc)) from None
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    finally:
        engine.close()
    print(stats.summary())
    if args.output:
        print(f"wrote {args.output}")
    return 0
