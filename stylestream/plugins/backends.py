"""Inference backends (a registry): each runs one model file on one device.

A backend maps float32 RGB (N, 3, H, W) in [0, 255] to the same shape and range. `pick_backend`
implements `--backend auto`: the fastest backend that can run one of the style's model files on
the device (TensorRT engine > ONNX Runtime with a GPU provider > torch on GPU; on CPU ONNX Runtime
> torch, which measured faster in bench/engine.py)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.devices import cache_dir, compute_threads
from stylestream.registry import Registry

log = logging.getLogger(__name__)

# model-file suffix -> format key
FORMATS = {".pt": "pt", ".onnx": "onnx", ".engine": "engine"}


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (library or device missing); the message says what to install."""


class Backend:
    """Base class: load in __init__, run batches in `run`. Implementations must be thread-safe.
    `root`: the plugin folder that files the model names (ONNX external data) must stay inside;
    None: the model's own folder."""

    name: str = ""
    formats: tuple[str, ...] = ()

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        self.path = Path(path)
        self.device = device
        self.root = Path(root) if root is not None else self.path.parent

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        """None when this backend can run on `device`, else why not (and what to install)."""
        return None

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.device})"

    def close(self) -> None:
        pass


BACKENDS: Registry[type[Backend]] = Registry("backend")


def _register(cls: type[Backend], help: str) -> type[Backend]:
    BACKENDS.add(cls.name, cls, help, formats=", ".join(cls.formats))
    return cls


# --------------------------------------------------------------------------------------------- torch


class TorchBackend(Backend):
    name = "torch"
    formats = ("pt",)

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        import torch

        from stylestream.models import load_model

        self._torch = torch
        self.model = load_model(path).to(device)
        self.dtype = None
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # frame sizes repeat, so autotuning pays off
            self.model = self.model.to(memory_format=torch.channels_last)
            # bf16 keeps fp32's range, so InstanceNorm's variance of [0, 255] inputs cannot overflow
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if os.environ.get("STYLESTREAM_TORCH_COMPILE") == "1":
            self.model = torch.compile(self.model, dynamic=True)

    def run_tensor(self, x: Any) -> Any:
        """Device-resident path: float (N, 3, H, W) tensor in [0, 255] on this device -> same."""
        torch = self._torch
        with torch.inference_mode():
            if self.dtype is not None:
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type="cuda", dtype=self.dtype):
                    return self.model(x).float()
            return self.model(x)

    def run(self, x: np.ndarray) -> np.ndarray:
        t = self._torch.from_numpy(x).to(self.device, non_blocking=True)
        return self.run_tensor(t).cpu().numpy()

    def describe(self) -> str:
        prec = {None: "fp32"}.get(self.dtype, str(self.dtype).replace("torch.", ""))
        return f"torch ({self.device}, {prec})"


_register(TorchBackend, "PyTorch on CPU/CUDA/MPS (bf16/fp16 autocast + channels_last on CUDA)")


# --------------------------------------------------------------------------------------- onnxruntime


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


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    formats = ("onnx",)

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
        return None

    @staticmethod
    def gpu_providers() -> list[str]:
        import onnxruntime as ort

        have = ort.get_available_providers()
        return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        import onnxruntime as ort

        check_onnx_model(self.path, self.root)  # before ONNX Runtime reads a byte of what it names
        self._ort = ort
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # ORT's warnings about unused initializers are noise here
        providers: list[Any] = []
        if device.startswith("cuda"):
            dev_id = int(device.split(":")[1]) if ":" in device else 0
            for p in self.gpu_providers():
                if p == "TensorrtExecutionProvider":
                    providers.append((p, self._trt_options(dev_id)))
                else:
                    providers.append((p, {"device_id": dev_id}))
            if not providers:
                log.warning("%s: onnxruntime has no CUDA/TensorRT provider; running on CPU "
                            "(pip install onnxruntime-gpu)", path)  # fmt: skip
        if not providers:
            # one session per style; intra-op threads use every core, no inter-op parallelism (a convnet
            # is a chain of ops)
            opts.intra_op_num_threads = compute_threads()
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers.append("CPUExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 -- ORT raises several kinds for a bad file
            raise ValueError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]})") from None  # fmt: skip
        self.providers = self.session.get_providers()
        requested = [p[0] if isinstance(p, tuple) else p for p in providers]
        if self.providers[0] != requested[0]:  # a silent fallback must be seen
            log.warning("%s: asked for %s, onnxruntime gave %s", path, requested, self.providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.on_gpu = self.providers[0] != "CPUExecutionProvider"

    def _trt_options(self, dev_id: int) -> dict[str, Any]:
        import onnxruntime as ort

        # engine caches are valid only for one GPU + TensorRT + ORT version: key the folder on them
        key = hashlib.sha1(f"{self.path.resolve()}|{ort.__version__}|{dev_id}".encode()).hexdigest()[:16]
        cache = cache_dir("trt-ep", key)
        cache.mkdir(parents=True, exist_ok=True)
        return {
            "device_id": dev_id,
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.on_gpu:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        # IO binding: the output stays on the GPU until one explicit copy (no hidden host round trips)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        binding.bind_output(self.output_name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def describe(self) -> str:
        return f"onnxruntime ({', '.join(p.replace('ExecutionProvider', '') for p in self.providers)})"


_register(OnnxRuntimeBackend, "ONNX Runtime; providers TensorRT EP -> CUDA EP -> CPU EP where available")


# ----------------------------------------------------------------------------------------- tensorrt


class TensorRTBackend(Backend):
    name = "tensorrt"
    formats = ("engine",)

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "tensorrt is not installed (pip install 'stylestream[trt]')"
        import torch

        if not torch.cuda.is_available() or not device.startswith("cuda"):
            return "TensorRT engines run only on a CUDA GPU"
        return None

    def __init__(self, path: Path, device: str, root: Path | None = None) -> None:
        super().__init__(path, device, root)
        import tensorrt as trt
        import torch

        self._torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ValueError(f"{path}: TensorRT could not deserialize this engine (built for another GPU or "
                             "TensorRT version? rebuild it with `stylestream export`)")  # fmt: skip
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) != mode)
        self.in_dtype = self._torch_dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.out_dtype = self._torch_dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.context = self.engine.create_execution_context()
        import threading

        self._lock = threading.Lock()  # one execution context: runs must not interleave

    def _torch_dtype(self, np_dtype: Any) -> Any:
        return {np.float32: self._torch.float32, np.float16: self._torch.float16}[np.dtype(np_dtype).type]

    def run_tensor(self, x: Any) -> Any:
        torch = self._torch
        x = x.to(self.device, self.in_dtype).contiguous()
        with self._lock:
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.out_dtype,
                              device=x.device)  # fmt: skip
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            stream = torch.cuda.current_stream(x.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"{self.path}: TensorRT execution failed for input shape {tuple(x.shape)} "
                                   "(outside the engine's optimization profile?)")  # fmt: skip
            stream.synchronize()
        return out.float()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_tensor(self._torch.from_numpy(x)).cpu().numpy()

    def describe(self) -> str:
        return f"tensorrt ({self.device})"


_register(TensorRTBackend, "a serialized TensorRT engine (NAME.engine) on a CUDA GPU")


# ------------------------------------------------------------------------------- .pt -> ONNX on CPU


def cached_onnx(pt_path: Path) -> Path | None:
    """An ONNX copy of a `.pt` style, converted once and cached (keyed on the file's content), so that
    `--backend auto` on CPU can use ONNX Runtime (1.1-2.7x faster than torch eager in bench/engine.py)
    for styles shipped only as `.pt`. The copy is checked against PyTorch on one frame before use;
    None (and a warning) when conversion or the check fails, and the caller stays on torch."""
    import torch

    from stylestream.export.onnx_export import export_onnx
    from stylestream.export.options import ExportOptions
    from stylestream.models import load_model
    from stylestream.models.io import atomic_write

    digest = hashlib.sha256(Path(pt_path).read_bytes()).hexdigest()[:20]
    out = cache_dir("onnx", f"{Path(pt_path).stem}-{digest}.onnx")
    if out.is_file():
        return out
    try:
        model = load_model(pt_path)
        atomic_write(out, lambda tmp: export_onnx(model, Path(tmp), ExportOptions()))
        import onnxruntime as ort

        x = torch.rand(1, 3, 61, 83, generator=torch.Generator().manual_seed(0)) * 255
        with torch.no_grad():
            ref = model(x).numpy()
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        err = float(np.abs(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0] - ref).max())
        if err > 1.0:
            raise ValueError(f"ONNX differs from PyTorch by {err:.3g} (of 255)")
    except Exception as exc:  # noqa: BLE001 -- any failure means: stay on torch
        out.unlink(missing_ok=True)
        log.warning("%s: could not convert to ONNX for the faster CPU path (%s); using torch", pt_path, exc)
        return None
    log.info("%s: converted to ONNX for ONNX Runtime on CPU (cached at %s)", pt_path, out)
    return out


# ------------------------------------------------------------------------------------------ choice


def auto_order(device: str) -> list[str]:
    """Backends in order of preference for `--backend auto` on a resolved device."""
    if device.startswith("cuda"):
        order = ["tensorrt"]
        if OnnxRuntimeBackend.unavailable_reason(device) is None and OnnxRuntimeBackend.gpu_providers():
            order.append("onnxruntime")
        return [*order, "torch", "onnxruntime"]
    if device == "mps":
        return ["torch", "onnxruntime"]
    return ["onnxruntime", "torch"]


def pick_backend(models: dict[str, Path], device: str, backend: str = "auto") -> tuple[str, Path]:
    """Choose (backend name, model file) for a style with model files `models` (format -> path)."""
    if backend != "auto":
        cls = BACKENDS[backend]  # UnknownNameError lists the backends
        fmt = next((f for f in cls.formats if f in models), None)
        if fmt is None:
            raise ValueError(
                f"backend {backend!r} needs a {' or '.join('.' + f for f in cls.formats)} model file, but this "
                f"style has only {', '.join(str(p.name) for p in models.values())}; use --backend auto"
            )
        reason = cls.unavailable_reason(device)
        if reason:
            raise BackendUnavailable(f"backend {backend!r} cannot run on {device}: {reason}")
        return backend, models[fmt]
    for name in auto_order(device):
        cls = BACKENDS[name]
        fmt = next((f for f in cls.formats if f in models), None)
        if fmt is not None and cls.unavailable_reason(device) is None:
            return name, models[fmt]
    reasons = [f"{e.name}: {e.obj.unavailable_reason(device)}" for e in BACKENDS
               if any(f in models for f in e.obj.formats)]  # fmt: skip
    have = ", ".join(p.name for p in models.values())
    raise BackendUnavailable(f"no backend can run {have} on {device}" + (f" ({'; '.join(reasons)})" if reasons else ""))
