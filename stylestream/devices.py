"""Where work runs: the one device resolver, device and CPU names, the cache folder, and the thread
policy for torch and ONNX Runtime.

Thread policy: torch eager on a loaded 2-core CPU collapses 10-50x when its OpenMP threads outnumber
the cores (they spin-wait on each other), and video codecs need cores too. So compute libraries get the
cores this process may use minus those reserved for codecs, at least one."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps (default: auto = CUDA, else MPS, else CPU)"


class DeviceError(ValueError):
    """A device that does not exist or is not usable here; the message says what to use instead."""


def resolve(name: str = "auto") -> torch.device:
    """'auto' -> cuda when a CUDA GPU is usable, else mps, else cpu. Explicit names are checked."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {name!r}; use {DEVICE_HELP.split(' (')[0]}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {name!r}; use {DEVICE_HELP.split(' (')[0]}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: no CUDA GPU is usable on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not has_mps:
        raise DeviceError(f"device {name!r}: Apple MPS is not available on this machine; use --device cpu")
    return dev


def resolve_name(name: str = "auto") -> str:
    """`resolve` as the string runtimes take ('cpu', 'cuda', 'cuda:1', 'mps')."""
    return str(resolve(name))


def cpu_model() -> str:
    """The CPU's model name (benchmark and run-card device lines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(dev: torch.device | str) -> str:
    """'cuda:0 (NVIDIA H100 80GB HBM3)', 'cpu (Intel Xeon ..., 2 threads)'."""
    import torch

    dev = torch.device(dev)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    if dev.type == "cpu":
        return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
    return str(dev)


def available_cores() -> int:
    """Cores this process may use (cgroup/affinity aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


_reserved = 0  # cores set aside for codecs by the running command (serve, cam)


def reserve_cores(n: int) -> None:
    """Live video (serve, cam) decodes and encodes on the CPU: keep `n` cores free of compute threads
    for the rest of this process, and apply that to torch now."""
    global _reserved
    _reserved = max(0, n)
    apply_thread_policy()


def compute_threads(reserve: int | None = None) -> int:
    """Threads for torch / ONNX Runtime: $STYLESTREAM_THREADS if set, else the usable cores minus
    `reserve` (default: what `reserve_cores` set), at least 1."""
    reserve = _reserved if reserve is None else reserve
    env = os.environ.get("STYLESTREAM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise DeviceError(f"STYLESTREAM_THREADS={env!r} must be a whole number of threads") from None
    return max(1, available_cores() - reserve)


def apply_thread_policy(reserve: int | None = None) -> int:
    """Set torch's intra-op threads by `compute_threads(reserve)`; returns the count."""
    import torch

    n = compute_threads(reserve)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def cache_dir(*parts: str) -> Path:
    """$STYLESTREAM_CACHE, else $XDG_CACHE_HOME/stylestream (~/.cache/stylestream), joined with `parts`."""
    base = os.environ.get("STYLESTREAM_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stylestream"
    return root.joinpath(*parts)
