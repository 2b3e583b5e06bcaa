"""A Triton Inference Server model repository: `<repo>/<name>/config.pbtxt` + `1/model.onnx`
(onnxruntime backend), `1/model.plan` (TensorRT), or `1/model.onnx` + `1/model.py` (python backend: the
same ONNX run by ONNX Runtime inside Triton, for Triton builds without the onnxruntime backend, such as
the one nvidia-pytriton ships); dynamic batching on.

config.pbtxt is protobuf text of Triton's `inference.ModelConfig`. The message types below are the
subset of Triton's model_config.proto that we write, with Triton's own field names and numbers, so
the file is produced (and parsed back in tests) by protobuf itself rather than by string templates.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from stylestream.export.formats import TENSORRT, TRITON_BACKENDS, ExportError
from stylestream.export.job import ExportJob
from stylestream.export.options import ExportOptions

# --triton-backend -> (platform, backend, the model file Triton loads); the python backend's model.py
# loads the model.onnx beside it (the file verification runs).
PLATFORMS = {"onnxruntime": ("onnxruntime_onnx", "", "model.onnx"),
             "tensorrt": ("tensorrt_plan", "", "model.plan"),
             "python": ("", "python", "model.py")}  # fmt: skip
assert tuple(PLATFORMS) == TRITON_BACKENDS, "the CLI's --triton-backend choices come from formats.py"
ONNX_FILE = "model.onnx"

# The python backend's model: self-contained (numpy + onnxruntime, which a Triton python backend
# environment has), because Triton's Python does not have stylestream. It honours config.pbtxt: a
# TYPE_UINT8 input or output (4x less traffic than FP32 frames) is converted here, rounded the way
# stylestream rounds; requests of one frame size from Triton's dynamic batcher run as one batch.
MODEL_PY = '''"""A stylestream style on Triton's python backend: model.onnx (beside this file) run by ONNX Runtime.
Written by `stylestream export --format triton --triton-backend python`."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name, self.output_name = config["input"][0]["name"], config["output"][0]["name"]
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        providers = ["CPUExecutionProvider"]
        if args["model_instance_kind"] == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.onnx_input = self.session.get_inputs()[0].name
        self.onnx_output = self.session.get_outputs()[0].name

    def execute(self, requests):
        frames = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        by_size = {}
        for i, x in enumerate(frames):
            by_size.setdefault(x.shape[1:], []).append(i)
        responses = [None] * len(requests)
        for members in by_size.values():
            try:
                x = np.concatenate([frames[i] for i in members]).astype(np.float32, copy=False)
                y = self.session.run([self.onnx_output], {self.onnx_input: x})[0]
                if self.output_dtype == np.uint8:
                    y = np.clip(y + 0.5, 0, 255).astype(np.uint8)
                start = 0
                for i in members:
                    n = len(frames[i])
                    out = pb_utils.Tensor(self.output_name, np.ascontiguousarray(y[start:start + n]))
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
                    start += n
            except Exception as exc:  # one failing size must not fail the other requests of the batch
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
        return responses
'''


@lru_cache(maxsize=1)
def model_config_class() -> Any:
    """The `inference.ModelConfig` message class (subset), built in a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="stylestream_triton_model_config.proto", package="inference",
                                            syntax="proto3")  # fmt: skip
    dt = fd.enum_type.add(name="DataType")
    for i, n in enumerate(["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                           "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32",
                           "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"]):  # fmt: skip
        dt.value.add(name=n, number=i)

    def msg(name: str, fields: list[tuple[str, int, int, int, str]]) -> descriptor_pb2.DescriptorProto:
        m = fd.message_type.add(name=name)
        for fname, num, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname
        return m

    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("ModelInput", [("name", 1, F.TYPE_STRING, OPT, ""), ("data_type", 2, F.TYPE_ENUM, OPT, ".inference.DataType"),
                       ("dims", 4, F.TYPE_INT64, REP, "")])  # fmt: skip
    msg("ModelOutput", [("name", 1, F.TYPE_STRING, OPT, ""), ("data_type", 2, F.TYPE_ENUM, OPT, ".inference.DataType"),
                        ("dims", 3, F.TYPE_INT64, REP, "")])  # fmt: skip
    msg("ModelDynamicBatching", [("preferred_batch_size", 1, F.TYPE_INT32, REP, ""),
                                 ("max_queue_delay_microseconds", 2, F.TYPE_UINT64, OPT, "")])  # fmt: skip
    group = msg("ModelInstanceGroup", [("name", 1, F.TYPE_STRING, OPT, ""), ("count", 2, F.TYPE_INT32, OPT, ""),
                                       ("kind", 4, F.TYPE_ENUM, OPT, ".inference.ModelInstanceGroup.Kind")])  # fmt: skip
    kind = group.enum_type.add(name="Kind")
    for i, n in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]):
        kind.value.add(name=n, number=i)
    msg("ModelConfig", [
        ("name", 1, F.TYPE_STRING, OPT, ""), ("platform", 2, F.TYPE_STRING, OPT, ""),
        ("backend", 17, F.TYPE_STRING, OPT, ""),
        ("max_batch_size", 4, F.TYPE_INT32, OPT, ""),
        ("input", 5, F.TYPE_MESSAGE, REP, ".inference.ModelInput"),
        ("output", 6, F.TYPE_MESSAGE, REP, ".inference.ModelOutput"),
        ("instance_group", 7, F.TYPE_MESSAGE, REP, ".inference.ModelInstanceGroup"),
        ("default_model_filename", 8, F.TYPE_STRING, OPT, ""),
        ("dynamic_batching", 11, F.TYPE_MESSAGE, OPT, ".inference.ModelDynamicBatching"),
    ])  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def parse_config(path: Path) -> Any:
    """Parse a config.pbtxt (strictly: unknown fields are errors) into a ModelConfig message."""
    from google.protobuf import text_format

    return text_format.Parse(Path(path).read_text(), model_config_class()())


def write_config(model_dir: Path, name: str, backend: str, max_batch: int, io: dict[str, str]) -> Path:
    from google.protobuf import text_format

    platform, triton_backend, filename = PLATFORMS[backend]
    cfg = model_config_class()(name=name, max_batch_size=max_batch, default_model_filename=filename)
    if platform:
        cfg.platform = platform
    else:
        cfg.backend = triton_backend
    # With max_batch_size > 0 the batch dimension is implicit: dims are per sample, H and W free.
    cfg.input.add(name=io["input"], data_type=11, dims=[3, -1, -1])  # 11 = TYPE_FP32
    cfg.output.add(name=io["output"], data_type=11, dims=[3, -1, -1])
    sizes = [b for b in (1, 2, 4, 8, 16, 32) if b <= max_batch]
    cfg.dynamic_batching.preferred_batch_size.extend(sizes[-2:] if len(sizes) > 1 else sizes)
    cfg.dynamic_batching.max_queue_delay_microseconds = 2000  # ~1/16 frame at 30 fps: batches form from
    # concurrent streams of the same size without adding visible latency
    # GPU for plans; AUTO for ONNX (GPU where Triton has one; model.py then asks ORT for CUDA)
    cfg.instance_group.add(count=1, kind=1 if backend == "tensorrt" else 0)
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(cfg))
    return path


def _io_names(onnx_path: Path) -> dict[str, str]:
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    return {"input": g.input[0].name, "output": g.output[0].name}


def build_triton(job: ExportJob) -> None:
    opts = job.options
    preflight(opts)
    onnx_path = job.onnx_for(opts.precision)
    model_dir = job.artifact  # <workdir>/<name>; the exporter moves it to OUT/<name>
    version = model_dir / "1"
    version.mkdir(parents=True)
    _, _, filename = PLATFORMS[opts.triton_backend]
    if opts.triton_backend == "tensorrt":
        from stylestream.export.tensorrt import build_engine

        # The engine's profile must cover the largest batch Triton will form.
        plan_opts = replace(opts, trt_max_batch=max(opts.trt_max_batch, opts.triton_max_batch))
        plan_job = ExportJob(job.model, job.model_path, plan_opts, job.workdir, version / filename, job.name, job.info)
        build_engine(plan_job)
    else:
        shutil.copyfile(onnx_path, version / ONNX_FILE)
        if opts.triton_backend == "python":
            (version / filename).write_text(MODEL_PY)
    write_config(model_dir, job.name, opts.triton_backend, opts.triton_max_batch, _io_names(onnx_path))
    job.info["triton"] = {"backend": opts.triton_backend, "precision": opts.precision,
                          "max_batch_size": opts.triton_max_batch, "model_file": f"1/{filename}"}  # fmt: skip
    if opts.triton_backend == "python":
        job.info["triton"]["onnx_file"] = f"1/{ONNX_FILE}"


def preflight(options: ExportOptions) -> None:
    """The triton row's check: its own options, and TensorRT's requirements for a model.plan."""
    if options.triton_backend not in PLATFORMS:
        raise ExportError(f"unknown Triton backend {options.triton_backend!r}; choose one of: {', '.join(PLATFORMS)}")
    if options.batch is not None:
        raise ExportError("triton uses dynamic batching: leave --batch dynamic")
    if options.triton_max_batch < 1:
        raise ExportError("--triton-max-batch must be >= 1 (dynamic batching needs a batch dimension)")
    if options.triton_backend == "tensorrt":
        TENSORRT.check("triton with a TensorRT model.plan")


def served_file(model_dir: Path, options: ExportOptions) -> tuple[str, Path]:
    """(runtime backend, file) that verification runs: the very file Triton will load (a plan on
    tensorrt; the ONNX on onnxruntime, and on python, whose model.py runs it with ONNX Runtime)."""
    backend = options.triton_backend
    if backend == "tensorrt":
        return backend, Path(model_dir) / "1" / PLATFORMS[backend][2]
    return "onnxruntime", Path(model_dir) / "1" / ONNX_FILE
