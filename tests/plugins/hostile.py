"""Hostile plugin files, built for real: ONNX graphs that are not styles, ONNX models whose external
data points elsewhere, and sparse multi-GB model files (which cost no disk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh


def _io(name: str, elem: int = TensorProto.FLOAT, channels: int | str = 3) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, elem, ["n", channels, "h", "w"])


def save_graph(path: Path, nodes: list, inputs: list, outputs: list, inits: list | None = None) -> Path:
    graph = oh.make_graph(nodes, "hostile", inputs, outputs, inits or [])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime of any recent version reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def resize_onnx(path: Path, factor: float = 200.0) -> Path:
    """A Resize x`factor` with constant scales: at 640x480, x200 would be a 147 GB output."""
    scales = nh.from_array(np.array([1, 1, factor, factor], np.float32), "scales")
    return save_graph(path, [oh.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
                      [_io("x")], [_io("y")], [scales])  # fmt: skip


def gray_onnx(path: Path) -> Path:
    """A 1-channel output (mean over the channels)."""
    return save_graph(path, [oh.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)],
                      [_io("x")], [_io("y", channels=1)])  # fmt: skip


def int_input_onnx(path: Path) -> Path:
    """An int64 input."""
    return save_graph(path, [oh.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                      [_io("x", TensorProto.INT64)], [_io("y")])  # fmt: skip


def data_dependent_resize_onnx(path: Path, factor: float) -> Path:
    """Resize by `factor` computed from the pixels (1 + (factor - 1) * (max(x) >= 0)), so static shape
    inference cannot know the output shape and only a run tells; factor 1 is a harmless identity."""
    nodes = [
        oh.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        oh.make_node("GreaterOrEqual", ["m", "zero"], ["ge"]),
        oh.make_node("Cast", ["ge"], ["gef"], to=TensorProto.FLOAT),
        oh.make_node("Mul", ["gef", "k"], ["s1"]),
        oh.make_node("Add", ["s1", "one"], ["s"]),
        oh.make_node("Expand", ["s", "two"], ["s2"]),
        oh.make_node("Concat", ["ones2", "s2"], ["scales"], axis=0),
        oh.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest"),
    ]
    inits = [nh.from_array(np.array(0, np.float32), "zero"), nh.from_array(np.array(factor - 1, np.float32), "k"),
             nh.from_array(np.array(1, np.float32), "one"), nh.from_array(np.array([2], np.int64), "two"),
             nh.from_array(np.array([1, 1], np.float32), "ones2")]  # fmt: skip
    return save_graph(path, nodes, [_io("x")], [_io("y")], inits)


EXTERNAL_WEIGHT = np.array([1.0, 0.5, 2.0], np.float32).reshape(1, 3, 1, 1)


def external_data_onnx(path: Path, location: str) -> Path:
    """A style (y = x * w, w of shape (1, 3, 1, 1)) whose weight is external data at `location`
    (relative to the model file); the caller puts EXTERNAL_WEIGHT's bytes wherever it means to."""
    tensor = nh.from_array(EXTERNAL_WEIGHT, "w")
    onnx.external_data_helper.set_external_data(tensor, location=location, offset=0, length=EXTERNAL_WEIGHT.nbytes)
    tensor.ClearField("raw_data")
    graph = oh.make_graph([oh.make_node("Mul", ["x", "w"], ["y"])], "ext", [_io("x")], [_io("y")], [tensor])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def sparse_onnx(path: Path, weight_bytes: int) -> Path:
    """A well-formed ONNX file with one float32 initializer of `weight_bytes` stored inline, written
    sparse: a small header, then truncate() to full length, so a 3 GiB model costs no disk. Its graph
    is a valid style (Identity; the weight is unused), so only its size can fault it."""
    x, y = _io("x"), _io("y")
    small = oh.make_graph([oh.make_node("Identity", ["x"], ["y"])], "big", [x], [y])
    head = oh.make_model(small, opset_imports=[oh.make_opsetid("", 17)])
    head.ir_version = 8
    graph_head = head.graph.SerializeToString()
    head.ClearField("graph")
    meta = onnx.TensorProto(name="weights", dims=[weight_bytes // 4], data_type=TensorProto.FLOAT)
    tensor_head = meta.SerializeToString() + _varint(9 << 3 | 2) + _varint(weight_bytes)  # raw_data = field 9
    initializer = _varint(5 << 3 | 2) + _varint(len(tensor_head) + weight_bytes) + tensor_head
    graph_len = len(graph_head) + len(initializer) + weight_bytes
    with path.open("wb") as f:
        f.write(head.SerializeToString() + _varint(7 << 3 | 2) + _varint(graph_len) + graph_head + initializer)
        f.truncate(f.tell() + weight_bytes)
    return path
