"""`stylestream stylize`: stylize images, folders and videos with any style."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stylestream.plugins.options import (
    add_engine_arguments,
    add_param_argument,
    add_plugin_arguments,
    backend_options,
)

HELP = "stylize images, folders of images, or videos with a style"
DESCRIPTION = """Stylize files with a style (a name from `stylestream plugins`, or a model file).

  image  -> image of the same size (format from the output suffix)
  folder -> folder (images and videos inside, sub-folders kept)
  video  -> video with the same frame count, size and frame rate; the audio stream is copied

Images over the pixel limit (stylestream.models.io.MAX_IMAGE_PIXELS, 100 MP) are refused from their
header: skipped with a warning inside a folder, an error when named. Outputs get mode 0666 less the
umask. A full or read-only output disk stops with exit 2 and leaves no temp file; temp files a killed
run left in the output folder are removed."""
EPILOG = """examples:
  stylestream stylize --style cartoon photo.jpg -o cartoon.jpg
  stylestream stylize --style runs/mosaic/model.pt clip.mp4 -o mosaic.mp4 --max-side 480
  stylestream stylize --style mosaic --plugins exports/ shots/ -o styled/"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="images, videos or folders")
    parser.add_argument("--style", required=True, help="style name, or a model file (.pt/.onnx/.engine)")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output file (one input) or folder (several inputs or a folder)")  # fmt: skip
    add_plugin_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--strength", type=float, default=1.0, help="blend with the original, 0..1 (1.0)")
    add_param_argument(parser)
    parser.add_argument("--batch", type=int, default=4, help="video frames per inference batch (4)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _params(args: argparse.Namespace) -> dict[str, float]:
    return {"strength": args.strength, **dict(args.param)}


def _jobs(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs; a folder maps to a folder, several inputs go into `output`/."""
    from stylestream.cli import CLIError
    from stylestream.media import is_image, is_video

    for p in inputs:
        if not p.exists():
            raise CLIError(f"{p}: input not found")
    if len(inputs) == 1 and inputs[0].is_file():
        dst = output / inputs[0].name if output.is_dir() else output
        if not dst.suffix:
            raise CLIError(f"{output}: give the output file a suffix (e.g. .jpg, .mp4) or make it a folder")
        return [(inputs[0], dst)]
    if output.exists() and not output.is_dir():
        raise CLIError(f"{output}: several inputs or a folder need an output folder, and this is a file")
    jobs = []
    for p in inputs:
        if p.is_file():
            jobs.append((p, output / p.name))
            continue
        files = sorted(f for f in p.rglob("*") if f.is_file() and (is_image(f) or is_video(f))
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))  # fmt: skip
        if not files:
            log.warning("%s: no images or videos inside", p)
        jobs += [(f, output / (p.name if len(inputs) > 1 else "") / f.relative_to(p)) for f in files]
    names = [d for _, d in jobs]
    dupes = {str(d) for d in names if names.count(d) > 1}
    if dupes:
        raise CLIError(f"several inputs would write the same output file(s): {sorted(dupes)}")
    return jobs


def run(args: argparse.Namespace) -> int:
    from stylestream.cli import CLIError
    from stylestream.media import MediaError, is_image, read_image, same_file, write_image
    from stylestream.models.io import ImageTooLargeError, WriteError, remove_stale_temps
    from stylestream.plugins import Engine, PluginSet, discover_plugins, plugin_from_model
    from stylestream.plugins.discovery import is_model_path
    from stylestream.plugins.video import stylize_video
    from stylestream.registry import UnknownNameError

    params = _params(args)
    jobs = _jobs(args.inputs, args.output)
    for src, dst in jobs:
        if same_file(src, dst):
            raise CLIError(f"{dst}: output would overwrite its own input")
        if dst.exists() and not args.overwrite:
            raise CLIError(f"{dst}: already exists (use --overwrite to replace it)")
    for folder in {dst.parent for _, dst in jobs}:
        remove_stale_temps(folder)  # what a killed run left: its temp files are never finished

    style_path = Path(args.style)
    try:
        if is_model_path(style_path):
            plugins = PluginSet()
            plugins.add(plugin_from_model(style_path, max_model_mb=args.max_model_mb), str(style_path))
            style = plugins.names()[0]
        else:
            plugins = discover_plugins(args.plugins, include_user_dir=not args.no_user_plugins,
                                       max_model_mb=args.max_model_mb, triton_url=args.triton_url)
            style = args.style
            plugins.get(style)
        engine = Engine(plugins, backend=args.backend, device=args.device, max_side=args.max_side,
                        backend_options=backend_options(args.backend, args.triton_url))
        engine.plugin(style).resolve_params(params)  # unknown/invalid --param fails before any work
        engine.load(style)
    except (UnknownNameError, ValueError, RuntimeError) as exc:
        raise CLIError(str(exc)) from None
    print(f"style {style!r} runs on {engine.describe(style)}"
          + (f", at most {args.max_side} px on the longer side" if args.max_side else ""))  # fmt: skip

    def stylize(frames, p):
        return engine.process(style, frames, p)

    named = {p for p in args.inputs if p.is_file()}  # files found inside a folder may be skipped instead
    failed = []
    try:
        for src, dst in jobs:
            try:
                if is_image(src):
                    rgb, alpha = read_image(src)
                    write_image(stylize(rgb[None], params)[0], dst, alpha)
                    print(f"{src} -> {dst}")
                else:
                    r = stylize_video(src, dst, stylize, params, batch=args.batch, progress=not args.no_progress)
                    audio = "audio copied" if r.audio_copied else "no audio"
                    print(f"{src} -> {dst}: {r.frames} frames {r.width}x{r.height} @ {r.fps:g} fps, {audio}, "
                          f"{r.frames / r.seconds:.1f} frames/s")  # fmt: skip
            except ImageTooLargeError as exc:
                if src in named:
                    failed.append(str(exc))
                else:  # one oversized file must not stop the rest of the folder
                    log.warning("skipped %s", exc)
            except MediaError as exc:
                failed.append(str(exc))
                if len(jobs) > 1:
                    log.error("%s", exc)
            except WriteError as exc:  # full or read-only output disk: every other output would fail too
                raise CLIError(exc.line("--output")) from None
    finally:
        engine.close()
    if failed and len(jobs) == 1:
        raise CLIError(failed[0])
    if failed:
        n = len(jobs) - len(failed)
        raise CLIError(f"{len(failed)} of {len(jobs)} input(s) failed ({n} written):\n  " + "\n  ".join(failed))
    return 0
