"""`stylestream plugins`: list every style with its kind, backend and where it came from."""

from __future__ import annotations

import argparse
import json

from stylestream.plugins.options import add_plugin_arguments

HELP = "list the available styles (built-in filters, entry points, plugin folders)"
DESCRIPTION = """List every style: built-in filters, styles from installed packages (entry point group
`stylestream.plugins`) and neural styles found in plugin folders (NAME.pt / NAME.onnx / NAME.engine,
optionally with a NAME.json model card or a plugin.toml). Broken plugins are listed with the reason."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plugin_arguments(parser)
    parser.add_argument("--device", default="auto", help="device used to say which backend would run (auto)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths]),
                      *(fmt.format(*r) for r in rows)]).rstrip()  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from stylestream.cli import CLIError
    from stylestream.plugins import discover_plugins
    from stylestream.plugins.neural import NeuralPlugin

    try:
        plugins = discover_plugins(args.plugins, include_user_dir=not args.no_user_plugins,
                                   max_model_mb=args.max_model_mb, triton_url=args.triton_url)  # fmt: skip
        for p in plugins:
            if isinstance(p, NeuralPlugin):
                p.requested_device = args.device
                p.device  # noqa: B018 -- validates --device once, with a clear message
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    infos = plugins.infos()
    if args.json:
        print(json.dumps({"styles": [i.to_json() for i in infos], "errors": plugins.errors}, indent=2))
        return 0
    rows = [[i.name, i.kind, i.backend, i.title, i.source] for i in infos]
    print(_table(rows, ["NAME", "KIND", "BACKEND", "TITLE", "SOURCE"]))
    if plugins.errors:
        print(f"\nskipped ({len(plugins.errors)}):")
        for e in plugins.errors:
            print(f"  {e}")
    return 0
