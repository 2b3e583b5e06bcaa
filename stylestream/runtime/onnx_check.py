"""Safety checks run before ONNX Runtime loads a model from a plugin folder: its external data must
stay inside the plugin folder, and it must be a style (one float32 (N, 3, H, W) input -> one float32
output of the same shape) whose tensors stay near the frame's size. Decided by static shape inference
where possible, else by one probe run in a memory-capped child process."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STYLE_SIGNATURE = "one float32 input (N, 3, H, W) -> one float32 output of the same shape"
CHECK_SHAPE = (1, 3, 64, 48)  # stands in for dynamic dims during static shape inference
PROBE_SHAPE = (1, 3, 16, 16)  # so small that even a x200 upscale stays ~120 MB in the probe
MAX_VALUES_PER_PIXEL = 512  # widest tensor a style net may hold per input pixel (they use <= 128)
PROBE_TIMEOUT_S = 120


def check_onnx_model(path: Path, root: Path | None = None) -> None:
    """Refuse, before ONNX Runtime loads it, an ONNX model whose external data lies outside `root`
    (default: its folder) or that is not a style: one float32 (N, 3, H, W) input -> one float32 output of
    the same shape, with no tensor much larger than the frame (a Resize x200 would allocate tens of GB
    at 640x480). Decided statically by shape inference at CHECK_SHAPE; what inference leaves unknown
    is settled by a probe run at PROBE_SHAPE in a memory-capped child process. ValueError says why."""
    import onnx

    # discovery's header check walks the same tensors; imported here because plugins imports the runtime
    from stylestream.plugins.modelfiles import external_data_files, graph_tensors

    root = Path(root) if root is not None else path.parent
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 -- protobuf errors vary
        raise ValueError(f"{path}: not a loadable ONNX model ({type(exc).__name__})") from None
    if not model.HasField("graph"):  # protobuf reads most garbage as a message of unknown fields
        raise ValueError(f"{path}: not a loadable ONNX model (no graph)")
    try:
        data = external_data_files(graph_tensors(model.graph), path, root)
        dims = _input_dims(model)
        if not _check_inferred_shapes(model, _fill(dims, CHECK_SHAPE)):
            del model  # the probe loads its own copy
            _probe(path, _fill(dims, PROBE_SHAPE), sum(f.stat().st_size for f in {path, *data}))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _not_a_style(why: str) -> ValueError:
    return ValueError(f"not a style model: {why}; expected {STYLE_SIGNATURE}")


def _dims(value_info: Any) -> list[int | None] | None:
    """A tensor's shape (None for an unknown dim), or None when its rank is unknown too."""
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]


def _fmt(dims: Any) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _fill(dims: list[int | None], default: tuple[int, ...]) -> tuple[int, ...]:
    """A concrete shape: the model's fixed dims (a --static or --batch export), `default` for the rest."""
    return tuple(d or c for d, c in zip(dims, default))


def _input_dims(model: Any) -> list[int | None]:
    """Checks the declared signature; returns the input's dims (None where dynamic)."""
    import onnx

    weights = {t.name for t in model.graph.initializer}  # old exporters list weights as inputs too
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise _not_a_style(f"the graph has {len(inputs)} input(s) and {len(model.graph.output)} output(s)")
    for kind, vi in (("input", inputs[0]), ("output", model.graph.output[0])):
        elem = vi.type.tensor_type.elem_type
        if not vi.type.HasField("tensor_type") or elem != onnx.TensorProto.FLOAT:
            dtype = onnx.TensorProto.DataType.Name(elem).lower() if vi.type.HasField("tensor_type") else None
            raise _not_a_style(f"{kind} {vi.name!r} is {dtype or 'not a tensor'}")
    dims = _dims(inputs[0])
    if dims is None or len(dims) != 4 or dims[1] not in (None, 3):
        raise _not_a_style(f"input {inputs[0].name!r} has shape {_fmt(dims) if dims else 'unknown'}")
    return dims


def _check_inferred_shapes(model: Any, shape: tuple[int, ...]) -> bool:
    """Shape inference (strict, with constant propagation) at a concrete input shape. Raises when the
    output cannot equal the input or a tensor is far larger than the frame; True when every shape came
    out known (nothing left for the probe)."""
    import onnx
    from onnx.external_data_helper import set_external_data

    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inp = next(i for i in graph.input if i.name not in weights)
    for d, v in zip(inp.type.tensor_type.shape.dim, shape):
        d.Clear()
        d.dim_value = v
    graph.output[0].type.tensor_type.ClearField("shape")  # declared symbolic dims would mask the result
    del graph.value_info[:]
    for t in graph.initializer:  # inference needs weights' dims, not bytes: spares a 1 GB model two copies
        if t.HasField("raw_data") and len(t.raw_data) > 4096:
            set_external_data(t, "not-loaded")
            t.ClearField("raw_data")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001 -- InferenceError, or a C++ error for a malformed graph
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise _not_a_style(f"shape inference fails at {_fmt(shape)} ({why})") from None
    out = _dims(inferred.graph.output[0])
    frame = shape[0] * shape[2] * shape[3]
    if out is not None and (len(out) != 4 or any(o is not None and o != s for o, s in zip(out, shape))):
        raise _not_a_style(f"the output is {_fmt(out)} for a {_fmt(shape)} input")
    known = [d for d in map(_dims, inferred.graph.value_info) if d is not None and None not in d]
    biggest = max((int(np.prod(d, dtype=np.int64)) for d in known), default=0)
    if biggest > MAX_VALUES_PER_PIXEL * frame:
        gb = biggest / frame * 640 * 480 * 4 / 1e9
        raise _not_a_style(f"a tensor holds {biggest // frame} values per input pixel "
                           f"({gb:.0f} GB at 640x480; at most {MAX_VALUES_PER_PIXEL} allowed)")  # fmt: skip
    produced = {o for n in graph.node for o in n.output if o}
    return out is not None and None not in out and len(known) >= len(produced - {graph.output[0].name})


_PROBE_SCRIPT = r"""
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # never import from the caller's working folder
import json, os, re
import numpy as np
import onnxruntime as ort
path, shape, budget = sys.argv[1], tuple(json.loads(sys.argv[2])), int(sys.argv[3])
try:  # cap the address space: a graph that blows up fails to allocate here, not in the caller
    import resource
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = vm + budget if hard == resource.RLIM_INFINITY else min(vm + budget, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
except (ImportError, OSError, ValueError):
    pass  # no /proc or no RLIMIT_AS (macOS, Windows): the timeout still bounds the probe
opts = ort.SessionOptions()
opts.intra_op_num_threads = opts.inter_op_num_threads = 1
opts.log_severity_level = 4  # the reason goes back as JSON, not as ORT's log lines
try:
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    print(json.dumps({"shape": list(y.shape), "dtype": str(y.dtype)}))
except MemoryError:
    print(json.dumps({"error": "out of memory"}))
except Exception as exc:
    m = re.search(r"allocate memory for requested buffer of size (\d+)", str(exc))
    why = f"it asked for {int(m[1]) / 1e9:.1f} GB" if m else str(exc).strip().splitlines()[0][-200:]
    print(json.dumps({"error": why}))
"""


def _probe(path: Path, shape: tuple[int, ...], model_bytes: int) -> None:
    """Run the model once at `shape` (PROBE_SHAPE where dims are dynamic) in a child process (capped
    address space, timeout); its output must have the input's shape. A child, so a graph that explodes
    takes down only the probe."""
    import json
    import subprocess
    import sys

    budget = 1024 * 2**20 + 3 * model_bytes  # the weights (loaded, maybe repacked) + room for a 16x16 frame
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _PROBE_SCRIPT, str(path), json.dumps(shape), str(budget)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              env=env)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise _not_a_style(f"a check run at {_fmt(shape)} did not finish in {PROBE_TIMEOUT_S} s") from None
    except OSError as exc:
        raise ValueError(f"cannot start the check run ({exc})") from None
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):  # killed (a signal, the memory cap) or crashed before answering
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:200]
        raise _not_a_style(f"a check run at {_fmt(shape)} failed ({last})") from None
    if "error" in out:
        raise _not_a_style(f"a check run at {_fmt(shape)} failed ({out['error']})")
    if tuple(out["shape"]) != shape or out["dtype"] != "float32":
        raise _not_a_style(f"a check run at {_fmt(shape)} returned {out['dtype']} {_fmt(out['shape'])}")
    log.debug("%s: probe run at %s passed", path, _fmt(shape))
