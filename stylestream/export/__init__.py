"""Export trained style networks: ONNX (FP32/FP16/INT8), TensorRT, TorchScript and Triton
repositories, each verified against PyTorch (through the runtime backend that serves it) and
described by a model card. One table of formats (`FORMATS`, formats.py) drives the CLI, the export,
its requirements, verification floors, the benchmark and which files serving accepts."""

from __future__ import annotations

from stylestream.export.formats import FLOORS, FORMATS, ExportError, Format, VerificationError
from stylestream.export.options import ExportOptions

__all__ = ["FLOORS", "FORMATS", "ExportError", "ExportOptions", "Format", "VerificationError", "export",
           "export_all"]  # fmt: skip


def export(*args, **kwargs):
    """See `stylestream.export.exporter.export` (imported lazily: it pulls in torch)."""
    from stylestream.export.exporter import export as _export

    return _export(*args, **kwargs)


def export_all(*args, **kwargs):
    """See `stylestream.export.exporter.export_all`."""
    from stylestream.export.exporter import export_all as _export_all

    return _export_all(*args, **kwargs)
