"""Which backend runs which model file, and opening one. The file kinds (suffix -> format -> backend)
come from the formats table (stylestream.export.formats); `pick_backend` implements `--backend auto`:
the fastest backend that can run one of a style's files on the device (on a GPU: TensorRT engine >
ONNX Runtime with a GPU provider > torch with bf16/fp16 autocast; on CPU: OpenVINO IR > ONNX Runtime >
torch, as measured in bench/engine.py and bench/RESULTS.md). TorchScript (fp32) comes after torch, and a
backend registered later after all of these."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stylestream.devices import resolve_name
from stylestream.export.formats import format_of, served_by, served_suffix_text, served_suffixes
from stylestream.runtime.base import BACKENDS, Backend, BackendUnavailable
from stylestream.runtime.onnxruntime_backend import OnnxRuntimeBackend


def auto_order(device: str) -> list[str]:
    """Backends in order of preference for `--backend auto` on a resolved device."""
    if device.startswith("cuda"):
        order = ["tensorrt"]
        if OnnxRuntimeBackend.unavailable_reason(device) is None and OnnxRuntimeBackend.gpu_providers():
            order.append("onnxruntime")
        order += ["torch", "torchscript", "onnxruntime"]
    elif device == "mps":
        order = ["torch", "onnxruntime", "torchscript"]
    else:
        # OpenVINO IR before ONNX: 1.3-3x ONNX Runtime on the project's CPUs (bench/RESULTS.md, edge formats)
        order = ["openvino", "onnxruntime", "torch", "torchscript"]
    return [*dict.fromkeys(order), *(n for n in BACKENDS.names() if n not in order)]


def _file_for(name: str, models: Mapping[str, Path]) -> Path | None:
    return next((models[f] for f in served_by(name) if f in models), None)


def pick_backend(models: Mapping[str, Path], device: str, backend: str = "auto") -> tuple[str, Path]:
    """Choose (backend name, model file) for a style whose model files are `models` (format -> path,
    the format keys of stylestream.export.formats.served_suffixes) on a resolved device."""
    keys = {f.name for f in served_suffixes().values()}
    if set(models) - keys:
        raise ValueError(f"unknown model format {min(set(models) - keys)!r}; the formats served are "
                         f"{', '.join(sorted(keys))}")  # fmt: skip
    if backend != "auto":
        cls = BACKENDS[backend]  # UnknownNameError lists the backends
        path = _file_for(backend, models) or (next(iter(models.values()), None) if cls.remote else None)
        if path is None:
            wants = " or ".join(s for s, f in served_suffixes().items() if f.backend == backend)
            raise ValueError(f"backend {backend!r} needs a {wants} model file, but this style has only "
                             f"{', '.join(p.name for p in models.values())}; use --backend auto")  # fmt: skip
        reason = cls.unavailable_reason(device)
        if reason:
            raise BackendUnavailable(f"backend {backend!r} cannot run on {device}: {reason}")
        return backend, path
    for name in auto_order(device):
        path = _file_for(name, models)
        if path is not None and BACKENDS[name].unavailable_reason(device) is None:
            return name, path
    reasons = [f"{e.name}: {e.obj.unavailable_reason(device)}" for e in BACKENDS if _file_for(e.name, models)]
    have = ", ".join(p.name for p in models.values())
    raise BackendUnavailable(f"no backend can run {have} on {device}" + (f" ({'; '.join(reasons)})" if reasons else ""))


def open_model(path: str | os.PathLike, backend: str = "auto", device: str = "auto", root: Path | None = None,
               **options: Any) -> Backend:  # fmt: skip
    """Load one model file the way serving does: its format from the formats table, the backend
    (`auto`: the fastest that runs it on `device`), `root` confining what the file names (default:
    its folder). `options` go to the backend (OnnxRuntimeBackend(providers=...), TorchBackend(compile=...)).
    ValueError for a file no backend serves (with the reason, e.g. a Triton repository), BackendUnavailable
    when the backend cannot run here (with what to install)."""
    path = Path(path)
    fmt = format_of(path)
    if fmt is None:
        raise ValueError(f"{path}: not a model file (expected {served_suffix_text()})")
    if fmt.backend is None:
        raise ValueError(f"{path}: {fmt.not_served}")
    device = resolve_name(device)
    name, file = pick_backend({fmt.name: path}, device, backend)
    return BACKENDS[name](file, device, root=root, **options)
