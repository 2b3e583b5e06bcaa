"""Triton repository layout and a config.pbtxt that protobuf parses, with names matching the model."""

from __future__ import annotations

import json

import onnx
import pytest

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


def test_python_backend_repository_runs_the_same_onnx_from_a_model_py(capsys, fitted_model, media, tmp_path):
    """`--triton-backend python`: the same ONNX (verified like the onnxruntime flavour) beside a model.py
    that runs it with ONNX Runtime, for Triton builds without the onnxruntime backend. That Triton runs
    it, frame for frame like local ONNX Runtime, is tests/runtime/test_triton_server.py."""
    from stylestream.cli import main
    from stylestream.export.triton import MODEL_PY

    repo = tmp_path / "repo"
    code = main(["export", str(fitted_model[0]), "--format", "triton", "--triton-backend", "python", "--name", "mosaic",
                 "-o", str(repo), "--verify-images", str(media / "content"), "--verify-sizes", "64x48"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    model_dir = repo / "mosaic"
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx", "model.py"]
    assert (model_dir / "1" / "model.py").read_text() == MODEL_PY
    compile(MODEL_PY, "model.py", "exec")  # valid Python (it imports Triton's module, so it runs only there)
    cfg = parse_config(model_dir / "config.pbtxt")
    assert (cfg.backend, cfg.platform, cfg.default_model_filename) == ("python", "", "model.py")
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    assert (cfg.input[0].name, cfg.output[0].name) == (graph.input[0].name, graph.output[0].name)
    assert list(cfg.input[0].dims) == [3, -1, -1] and cfg.max_batch_size >= 1 and cfg.HasField("dynamic_batching")
    card = json.loads((model_dir / "card.json").read_text())
    assert card["triton"]["backend"] == "python" and card["triton"]["onnx_file"] == "1/model.onnx"
    assert card["verification"]["passed"] and card["verification"]["runtime"].startswith("onnxruntime")


def test_every_flavour_of_config_is_valid_for_tritons_own_model_config(tmp_path):
    """Our protobuf subset writes what Triton's own ModelConfig message (shipped in tritonclient) parses
    strictly: field names, numbers and enums agree."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient (pip install -e .[dev]) carries Triton's proto")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from stylestream.export.triton import PLATFORMS, write_config

    for backend in PLATFORMS:
        model_dir = tmp_path / backend
        model_dir.mkdir()
        text = write_config(model_dir, "mosaic", backend, 8, {"input": "input", "output": "output"}).read_text()
        official = text_format.Parse(text, model_config_pb2.ModelConfig())
        assert official.name == "mosaic" and official.max_batch_size == 8
        assert (official.platform or official.backend) == {"onnxruntime": "onnxruntime_onnx",
                                                           "tensorrt": "tensorrt_plan", "python": "python"}[backend]
        assert official.input[0].data_type == model_config_pb2.TYPE_FP32
        assert list(official.output[0].dims) == [3, -1, -1]
        assert list(official.dynamic_batching.preferred_batch_size) == [4, 8]
