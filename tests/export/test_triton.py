"""Triton repository layout and a config.pbtxt that protobuf parses, with names matching the model."""

from __future__ import annotations

import json

import onnx

from stylestream.export import export, export_all
from stylestream.export.triton import parse_config


def test_triton_repository_layout_and_config(fitted_model, opts, tmp_path):
    repo = tmp_path / "repo"
    res = export(fitted_model[0], "triton", repo, opts)
    model_dir = repo / "proxy-johnson"
    assert res.path == model_dir and (model_dir / "1" / "model.onnx").is_file()
    cfg = parse_config(model_dir / "config.pbtxt")  # strict protobuf text parse
    assert cfg.name == "proxy-johnson" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size >= 1 and cfg.HasField("dynamic_batching")
    assert list(cfg.dynamic_batching.preferred_batch_size) and cfg.dynamic_batching.max_queue_delay_microseconds > 0
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    assert [i.name for i in cfg.input] == [i.name for i in graph.input]
    assert [o.name for o in cfg.output] == [o.name for o in graph.output]
    assert list(cfg.input[0].dims) == [3, -1, -1] and cfg.input[0].data_type == 11  # TYPE_FP32
    assert json.loads((model_dir / "card.json").read_text())["verification"]["passed"]


def test_export_all_skips_what_cannot_run_and_names_why(fitted_model, opts, tmp_path):
    opts.calibration = None
    results = {r.format: r for r in export_all(fitted_model[0], tmp_path, opts,
                                                formats=["onnx", "onnx-int8", "tensorrt"])}
    assert results["onnx"].status == "ok" and (tmp_path / "proxy-johnson.onnx").is_file()
    assert results["onnx-int8"].status == "skipped" and "--calibration" in results["onnx-int8"].message
    assert results["tensorrt"].status == "skipped" or results["tensorrt"].status == "ok"
