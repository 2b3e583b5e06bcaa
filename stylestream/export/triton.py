"""A Triton Inference Server model repository: `<repo>/<name>/config.pbtxt` + `1/model.onnx`
(onnxruntime backend) or `1/model.plan` (TensorRT), dynamic batching on.

config.pbtxt is protobuf text of Triton's `inference.ModelConfig`. The message types below are the
subset of Triton's model_config.proto that we write, with Triton's own field names and numbers, so
the file is produced (and parsed back in tests) by protobuf itself rather than by string templates.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from stylestream.export.formats import ExportError
from stylestream.export.options import ExportJob

PLATFORMS = {"onnxruntime": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
TRITON_BACKENDS = tuple(PLATFORMS)


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


def model_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "style"


def write_config(model_dir: Path, name: str, backend: str, max_batch: int, io: dict[str, str]) -> Path:
    from google.protobuf import text_format

    platform, filename = PLATFORMS[backend]
    cfg = model_config_class()(name=name, platform=platform, max_batch_size=max_batch,
                               default_model_filename=filename)  # fmt: skip
    # With max_batch_size > 0 the batch dimension is implicit: dims are per sample, H and W free.
    cfg.input.add(name=io["input"], data_type=11, dims=[3, -1, -1])  # 11 = TYPE_FP32
    cfg.output.add(name=io["output"], data_type=11, dims=[3, -1, -1])
    sizes = [b for b in (1, 2, 4, 8, 16, 32) if b <= max_batch]
    cfg.dynamic_batching.preferred_batch_size.extend(sizes[-2:] if len(sizes) > 1 else sizes)
    cfg.dynamic_batching.max_queue_delay_microseconds = 2000  # ~1/16 frame at 30 fps: batches form from
    # concurrent streams of the same size without adding visible latency
    cfg.instance_group.add(count=1, kind=1 if backend == "tensorrt" else 0)  # GPU for plans, AUTO for ORT
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(cfg))
    return path


def _io_names(onnx_path: Path) -> dict[str, str]:
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    return {"input": g.input[0].name, "output": g.output[0].name}


def build_triton(job: ExportJob) -> None:
    opts = job.options
    if opts.triton_backend not in PLATFORMS:
        raise ExportError(f"unknown Triton backend {opts.triton_backend!r}; choose one of: {', '.join(PLATFORMS)}")
    if opts.batch is not None:
        raise ExportError("triton uses dynamic batching: leave --batch dynamic")
    if opts.triton_max_batch < 1:
        raise ExportError("--triton-max-batch must be >= 1 (dynamic batching needs a batch dimension)")
    onnx_path = job.onnx_for(opts.precision)
    model_dir = job.artifact  # <workdir>/<name>; the exporter moves it to OUT/<name>
    version = model_dir / "1"
    version.mkdir(parents=True)
    _, filename = PLATFORMS[opts.triton_backend]
    if opts.triton_backend == "tensorrt":
        from stylestream.export.tensorrt import build_engine

        # The engine's profile must cover the largest batch Triton will form.
        plan_opts = replace(opts, trt_max_batch=max(opts.trt_max_batch, opts.triton_max_batch))
        plan_job = ExportJob(job.model, job.model_path, plan_opts, job.workdir, version / filename, job.name, job.info)
        build_engine(plan_job)
    else:
        shutil.copyfile(onnx_path, version / filename)
    write_config(model_dir, job.name, opts.triton_backend, opts.triton_max_batch, _io_names(onnx_path))
    job.info["triton"] = {"backend": opts.triton_backend, "precision": opts.precision,
                          "max_batch_size": opts.triton_max_batch, "model_file": f"1/{filename}"}  # fmt: skip


def triton_runner(path: Path, device: str = "cpu", **kw: Any) -> Any:
    """Run the model file inside a Triton model folder (the bytes Triton itself will load)."""
    path = Path(path)
    if (path / "1" / "model.plan").is_file():
        from stylestream.export.tensorrt import TrtRunner

        return TrtRunner(path / "1" / "model.plan")
    from stylestream.export.runners import OrtRunner

    return OrtRunner(path / "1" / "model.onnx", device)
