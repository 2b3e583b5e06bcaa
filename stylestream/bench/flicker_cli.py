"""`stylestream bench flicker`: the warping error of a style on video clips (see stylestream.bench.flicker)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stylestream.plugins.options import (
    add_engine_arguments,
    add_param_argument,
    add_plugin_arguments,
    backend_options,
)

HELP = "flicker of a style on video: warping error along the input's optical flow, per clip"
DESCRIPTION = """For consecutive frames: optical flow on the input (OpenCV DIS), the previous stylized frame
warped to the current one, and the mean absolute difference over pixels where forward and backward
flow agree (the warping error), next to the same figure for the input itself, and the ratio
mean|Δ stylized| / mean|Δ input|. Lower is steadier. Writes PREFIX.md, PREFIX.json and PREFIX.jpg
(three consecutive stylized frames of the first clip, to look at flicker and trails).

example:
  stylestream bench flicker --style mosaic --plugins exports/ ../shared/media/video/webcam_*.mkv \\
      --param stabilize=0.5 -o out/flicker-stab"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="clips to measure on")
    p.add_argument("--style", required=True, help="style name (or a model file)")
    add_plugin_arguments(p)
    add_engine_arguments(p)
    add_param_argument(p)
    p.add_argument("--max-frames", type=int, default=0, metavar="N", help="first N frames of each clip (0: all)")
    p.add_argument("-o", "--output", type=Path, default=Path("out/bench/flicker"),
                   help="output prefix: writes PREFIX.md, PREFIX.json and PREFIX.jpg")


def run(args: argparse.Namespace) -> int:
    from stylestream import devices
    from stylestream.bench import output_path
    from stylestream.bench.flicker import run_flicker, write_outputs
    from stylestream.cli import CLIError
    from stylestream.plugins import Engine, PluginSet, discover_plugins, plugin_from_model
    from stylestream.registry import UnknownNameError
    from stylestream.runtime import BackendUnavailable

    missing = [str(v) for v in args.videos if not v.is_file()]
    if missing:
        raise CLIError(f"video not found: {missing[0]}")
    params = dict(args.param)
    try:
        if Path(args.style).is_file():
            plugins = PluginSet()
            plugins.add(plugin_from_model(Path(args.style), max_model_mb=args.max_model_mb), args.style)
            style = plugins.names()[0]
        else:
            plugins = discover_plugins(args.plugins, include_user_dir=not args.no_user_plugins,
                                       max_model_mb=args.max_model_mb, triton_url=args.triton_url)  # fmt: skip
            style = args.style
        engine = Engine(plugins, backend=args.backend, device=args.device, max_side=args.max_side,
                        backend_options=backend_options(args.backend, args.triton_url))
        engine.plugin(style).resolve_params(params)
    except (UnknownNameError, ValueError, BackendUnavailable) as exc:
        raise CLIError(str(exc)) from None
    try:
        rows = run_flicker(list(args.videos), style, engine, params, args.max_frames)
        header = {"style": style, "params": params, "backend": engine.backend_name(style),
                  "device": f"{engine.device} ({devices.cpu_model()}, {devices.compute_threads()} threads)"}  # fmt: skip
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    finally:
        engine.close()
    md, js = write_outputs(rows, args.output, header)
    print(md.read_text(), end="")
    print(f"wrote {md}, {js} and {output_path(args.output, '.jpg')}")
    return 0
