"""`stylestream bench gpu`: every GPU feature run and measured (see stylestream.bench.gpu). Also runs as
`python -m stylestream.bench.gpu_cli`, which imports no other command (bench/gpu_run.sh uses it)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "the GPU path end to end: environment, training, lockstep, export, latency, engine, serve, DDP"
DESCRIPTION = HELP + """.

One command (about 8 minutes on one H100/H200) that runs each step independently, within its share of
--budget-s: a step that fails is reported with its traceback and the rest go on; what cannot run here
(TensorRT, ONNX Runtime's CUDA providers, aiortc, a second GPU) is reported as not available, with why.
Writes PREFIX.md (a section for bench/RESULTS.md) and PREFIX.json after every step. Numbers describe
this machine; goals are reported next to them, never enforced.

steps: env, train, lockstep, export, latency, engine, serve, ddp

examples:
  stylestream bench gpu -o out/bench/gpu                    # everything, on the GPU
  stylestream bench gpu --steps latency,engine --budget-s 120
  stylestream bench gpu --device cpu --quick -o /tmp/gpu    # tiny sizes, seconds: checks the script"""


def _steps(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one step name")
    return names


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="where to run (default: auto = CUDA when present)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions: checks the script, seconds")
    p.add_argument("--steps", type=_steps, metavar="A,B,...", help="run only these steps, in this order")
    p.add_argument("--budget-s", type=_seconds, default=None, metavar="S",
                   help="time for the whole run, shared out among the steps (default 480; 120 with --quick)")
    p.add_argument("--media", type=Path, default=None,
                   help="folder with content/*.jpg and styles/starry_night.jpg "
                        "(default: the repository's tests/data/media)")
    p.add_argument("-o", "--output", type=Path, default=Path("out/bench/gpu"),
                   help="output prefix: writes PREFIX.md and PREFIX.json (default out/bench/gpu)")


def _command() -> str:
    """The command line as typed (`stylestream bench gpu ...` or `python -m stylestream.bench.gpu_cli ...`)."""
    if Path(sys.argv[0]).stem == "gpu_cli":
        return " ".join(["python -m stylestream.bench.gpu_cli", *sys.argv[1:]])
    return " ".join(["stylestream", *sys.argv[1:]])


def run(args: argparse.Namespace) -> int:
    import logging

    from stylestream.bench import gpu
    from stylestream.cli import CLIError
    from stylestream.devices import DeviceError
    from stylestream.registry import UnknownNameError

    budget = args.budget_s or (120.0 if args.quick else 480.0)
    opts = gpu.Options(device=args.device, quick=args.quick, steps=args.steps, budget_s=budget, output=args.output,
                       media=args.media or gpu.MEDIA, command=_command())  # fmt: skip
    try:
        for name in opts.steps or []:
            gpu.steps().entry(name)  # an unknown step fails before anything runs, listing the steps
    except UnknownNameError as exc:
        raise CLIError(str(exc)) from None
    logging.getLogger("stylestream").setLevel(min(logging.getLogger("stylestream").getEffectiveLevel(), logging.INFO))

    def progress(name: str, r: dict) -> None:
        why = r.get("reason") or r.get("error") or ""
        print(f"[{r['status']:7}] {name} ({r['seconds']} s){': ' + why.splitlines()[0] if why else ''}", flush=True)

    try:
        report = gpu.run_bench(opts, on_result=progress)
    except DeviceError as exc:
        raise CLIError(str(exc)) from None
    md, js = gpu.write_outputs(report, opts.output)
    print(md.read_text(), end="")
    print(f"wrote {md} and {js}", flush=True)
    if gpu.ABANDONED:  # a step still running past its limit: do not wait for it at exit
        sys.stdout.flush()
        os._exit(0)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stylestream bench gpu", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(p)
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except Exception as exc:
        from stylestream.cli import CLIError

        if isinstance(exc, CLIError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
