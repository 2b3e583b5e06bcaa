"""The `stylestream` console script. Each subcommand lives with its subpackage in a module that
exposes `HELP`, `add_arguments(parser)` and `run(args) -> int`; this table is the only list of them.

`--help` builds every command's parser, so a command module and its `add_arguments` import nothing
heavy (torch, ONNX Runtime, OpenCV, PyAV, aiortc): choices come from light tables
(stylestream.cli_choices, the registries of light modules) and heavy imports happen inside `run`.
tests/test_cli.py checks it."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from stylestream import __version__

# name -> module; the order is the pipeline order shown in --help.
COMMANDS: dict[str, str] = {
    "train": "stylestream.train.cli",
    "sweep": "stylestream.train.sweep_cli",
    "optimize": "stylestream.train.optimize_cli",
    "export": "stylestream.export.cli",
    "plugins": "stylestream.plugins.cli",
    "stylize": "stylestream.plugins.stylize_cli",
    "serve": "stylestream.stream.cli",
    "cam": "stylestream.cam.cli",
    "bench": "stylestream.bench_cli",
}


class CLIError(Exception):
    """A user error: printed as 'stylestream: error: ...' with exit code 2, no traceback."""


def _available() -> dict[str, object]:
    mods = {}
    for name, modname in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:  # a real missing dependency inside the module
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylestream",
        description="Real-time neural style transfer on live video.",
    )
    parser.add_argument("--version", action="version", version=f"stylestream {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, mod in _available().items():
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            epilog=getattr(mod, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + 1, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except CLIError as exc:
        parser.exit(2, f"stylestream {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
