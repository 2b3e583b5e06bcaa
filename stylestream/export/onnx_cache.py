"""`.pt` -> ONNX, converted once and cached, so `--backend auto` on CPU can serve styles shipped only
as a model.pt with ONNX Runtime (1.1-2.7x faster than torch eager in bench/engine.py)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from stylestream.devices import cache_dir

log = logging.getLogger(__name__)

MAX_ABS_ERROR = 1.0  # of 255: the copy must match PyTorch this closely on a check frame


def cached_onnx(pt_path: Path) -> Path | None:
    """An ONNX copy of a `.pt` style, keyed on the file's content, checked against PyTorch on one frame
    before use. None (and a warning) when conversion or the check fails: the caller stays on torch."""
    import torch

    from stylestream.export.onnx_export import export_onnx
    from stylestream.export.options import ExportOptions
    from stylestream.models import inference_model, load_model
    from stylestream.models.io import atomic_write

    digest = hashlib.sha256(Path(pt_path).read_bytes()).hexdigest()[:20]
    out = cache_dir("onnx", f"{Path(pt_path).stem}-{digest}.onnx")
    if out.is_file():
        return out
    try:
        model = inference_model(load_model(pt_path))  # clamped to [0, 255]: a Clip in the ONNX
        atomic_write(out, lambda tmp: export_onnx(model, Path(tmp), ExportOptions()))
        import onnxruntime as ort

        x = torch.rand(1, 3, 61, 83, generator=torch.Generator().manual_seed(0)) * 255
        with torch.no_grad():
            ref = model(x).numpy()
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        err = float(np.abs(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0] - ref).max())
        if err > MAX_ABS_ERROR:
            raise ValueError(f"ONNX differs from PyTorch by {err:.3g} (of 255)")
    except Exception as exc:  # noqa: BLE001 -- any failure means: stay on torch
        out.unlink(missing_ok=True)
        log.warning("%s: could not convert to ONNX for the faster CPU path (%s); using torch", pt_path, exc)
        return None
    log.info("%s: converted to ONNX for ONNX Runtime on CPU (cached at %s)", pt_path, out)
    return out
