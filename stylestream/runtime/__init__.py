"""The one runtime: backends that run a model file on a device, used by serving (NeuralPlugin, Engine,
`serve`/`stylize`/`cam`), by export verification and by the format benchmark.

    backend = open_model("styles/mosaic.onnx", backend="auto", device="auto")
    out = backend.run(x)          # float32 RGB (N, 3, H, W) in [0, 255] -> same

One module per backend (torch, torchscript, onnxruntime, tensorrt), each registered in BACKENDS,
which drives --backend choices and help. Importing this package imports no ML library."""

from __future__ import annotations

# Importing the backend modules registers them; import order = the order --backend lists them in.
# isort: off
from stylestream.runtime import torch_backend, onnxruntime_backend, tensorrt_backend, torchscript_backend  # noqa: F401
from stylestream.runtime import triton_backend  # noqa: F401
from stylestream.runtime import openvino_backend, executorch_backend, litert_backend, ncnn_backend  # noqa: F401
from stylestream.runtime import coreml_backend  # noqa: F401
# isort: on
from stylestream.runtime.base import BACKENDS, Backend, BackendUnavailable, register
from stylestream.runtime.loader import auto_order, open_model, pick_backend

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "auto_order", "open_model", "pick_backend", "register"]
