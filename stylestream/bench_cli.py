"""`stylestream bench WHAT`: the benchmarks that ship with the package. Each lives in its own module
with `HELP`, `add_arguments(parser)` and `run(args)`; this table is the only list of them (scripts for
development measurements stay in the repository's bench/ folder)."""

from __future__ import annotations

import argparse
import importlib

HELP = "benchmarks: export formats, flicker of a style on video, the GPU path"
DESCRIPTION = """Benchmarks that report what they measured, on which device (Markdown + JSON, and pictures
where there is something to look at). They never pass or fail on a time."""

# name -> module; imported only to build its parser (modules keep heavy imports inside run()).
BENCHMARKS: dict[str, str] = {
    "export": "stylestream.bench.export_cli",
    "flicker": "stylestream.bench.flicker_cli",
    "gpu": "stylestream.bench.gpu_cli",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, modname in BENCHMARKS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:  # a real missing dependency inside the module
                raise
            continue
        sp = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                            formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        mod.add_arguments(sp)
        sp.set_defaults(_bench=mod.run)


def run(args: argparse.Namespace) -> int:
    return int(args._bench(args) or 0)
