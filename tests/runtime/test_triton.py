"""The triton backend without a server: URLs, the style signature a Triton model must have, the wire
types, how --backend triton and --triton-url reach the engine, and what a server that does not answer
looks like (at start: the command's error naming the URL; mid-stream: one stable message). The real
server is in test_triton_server.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stylestream.plugins.options import backend_options
from stylestream.runtime import BACKENDS, BackendUnavailable, pick_backend
from stylestream.runtime.triton_backend import (
    NotAStyle,
    TritonBackend,
    TritonUnreachable,
    parse_triton_url,
    style_signature,
    to_wire,
)
from tests.runtime.tritonserver import free_ports, require_triton_client
from tests.serve_process import ServeProcess


def _tensor(name: str, datatype: str = "FP32", shape=(-1, 3, -1, -1)) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape)}


def test_urls_name_protocol_port_and_tls_and_bad_ones_say_what_is_expected():
    u = parse_triton_url("grpc://triton")
    assert (u.protocol, u.address, u.ssl, str(u)) == ("grpc", "triton:8001", False, "grpc://triton:8001")
    u = parse_triton_url("https://10.1.2.3:9000/")
    assert (u.protocol, u.address, u.ssl, u.local) == ("http", "10.1.2.3:9000", True, False)
    assert parse_triton_url("http://[::1]:8000").address == "[::1]:8000"
    assert parse_triton_url("grpc://localhost:8001").local and parse_triton_url("grpc://127.0.0.2").local
    for bad in ("triton:8001", "ftp://triton", "grpc://", "grpc://h:notaport", "grpc://h/v2/models", "grpc://u:p@h"):
        with pytest.raises(ValueError, match=r"expected grpc://HOST:8001 or http://HOST:8000"):
            parse_triton_url(bad)


def test_a_style_is_one_nchw_rgb_input_and_output_of_free_size_fp32_or_uint8():
    sig = style_signature({"inputs": [_tensor("input")], "outputs": [_tensor("output")]}, {"max_batch_size": 8})
    assert (sig.input, sig.output, sig.input_dtype, sig.max_batch) == ("input", "output", np.float32, 8)
    # gRPC's JSON gives shapes as strings; a UINT8 model; no batching but a fixed batch of 1 in the dims
    sig = style_signature({"inputs": [_tensor("x", "UINT8", ("1", "3", "-1", "-1"))],
                           "outputs": [_tensor("y", "UINT8", ("1", "3", "-1", "-1"))]}, {})  # fmt: skip
    assert sig.input_dtype == sig.output_dtype == np.uint8 and sig.max_batch == 1
    no_limit = style_signature({"inputs": [_tensor("x")], "outputs": [_tensor("y")]}, {"max_batch_size": 0})
    assert no_limit.max_batch is None
    for meta, why in [
        ({"inputs": [_tensor("a"), _tensor("b")], "outputs": [_tensor("y")]}, "2 input"),
        ({"inputs": [_tensor("x", "INT64")], "outputs": [_tensor("y")]}, "INT64"),
        ({"inputs": [_tensor("x", shape=(-1, 3, 224, 224))], "outputs": [_tensor("y")]}, r"\[-1, 3, 224, 224\]"),
        ({"inputs": [_tensor("x")], "outputs": [_tensor("y", shape=(-1, 1000))]}, r"\[-1, 1000\]"),
    ]:  # fmt: skip
        with pytest.raises(NotAStyle, match=why):
            style_signature(meta, {"max_batch_size": 8})


def test_uint8_wire_rounds_like_neural_plugin_and_fp32_is_unchanged():
    x = np.array([0.0, 0.49, 0.5, 127.5, 254.6, 255.0, 300.0, -3.0], np.float32)
    assert to_wire(x, np.dtype(np.uint8)).tolist() == [0, 0, 1, 128, 255, 255, 255, 0]
    assert to_wire(x, np.dtype(np.float32)) is x or np.array_equal(to_wire(x, np.dtype(np.float32)), x)


def test_triton_is_a_backend_that_runs_any_style_file_by_name(tmp_path):
    assert "triton" in BACKENDS.names() and "--triton-url" in BACKENDS.entry("triton").help
    onnx = tmp_path / "mosaic.onnx"
    onnx.write_bytes(b"not read: the server has the model")
    assert pick_backend({"onnx": onnx}, "cpu", "auto")[0] != "triton"  # auto never sends frames away
    if TritonBackend.unavailable_reason("cpu") is not None:
        with pytest.raises(BackendUnavailable, match=r"pip install stylestream\[triton\]"):
            pick_backend({"onnx": onnx}, "cpu", "triton")
        return
    assert pick_backend({"onnx": onnx}, "cpu", "triton") == ("triton", onnx)
    (tmp_path / "mosaic.json").write_text('{"name": "mosaic-v2"}')
    backend = TritonBackend(onnx, "cpu", url="grpc://127.0.0.1:1")  # contacts nothing until frames come
    assert backend.model == "mosaic-v2"  # the card's name, as discovery names the style
    assert backend.describe() == "triton (grpc://127.0.0.1:1, model mosaic-v2, shared memory)"
    backend.close()


def test_backend_triton_needs_a_url_and_the_url_reaches_the_backend():
    with pytest.raises(ValueError, match=r"--backend triton needs --triton-url grpc://HOST:8001"):
        backend_options("triton", None)
    assert backend_options("auto", None) == {}
    assert backend_options("triton", "grpc://t:8001") == {"triton": {"url": "grpc://t:8001"}}


def test_a_server_that_does_not_answer_is_one_stable_message_naming_the_url(tmp_path):
    require_triton_client()
    (port,) = free_ports(1)  # nothing listens there: refused at once, on loopback
    for url in (f"grpc://127.0.0.1:{port}", f"http://127.0.0.1:{port}"):
        backend = TritonBackend(tmp_path / "mosaic.onnx", "cpu", url=url)
        messages = set()
        for _ in range(3):
            with pytest.raises(TritonUnreachable) as err:
                backend.run(np.zeros((1, 3, 16, 16), np.float32))
            messages.add(str(err.value))
        backend.close()
        want = f"Triton at {url} is not serving model 'mosaic' (unreachable, restarting, or the model is not loaded)"
        assert messages == {want}


def test_serve_with_an_unreachable_triton_fails_at_start_naming_the_url(tmp_path):
    require_triton_client()
    (port,) = free_ports(1)
    url = f"grpc://127.0.0.1:{port}"
    serve = ServeProcess(tmp_path, "--backend", "triton", "--triton-url", url, "--no-user-plugins")
    assert serve.proc.wait(timeout=120) == 2
    assert f"stylestream serve: error: Triton at {url} is unreachable" in serve.output()
    assert "Traceback" not in serve.output()


def test_cli_help_does_not_import_tritonclient():
    code = ("import sys\nfrom stylestream.cli import main\nfor c in ('serve', 'plugins', 'stylize', 'cam'):\n"
            "    try:\n        main([c, '--help'])\n    except SystemExit:\n        pass\n"
            "print('tritonclient' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.count("[--triton-url URL]") == 4  # every command that finds styles has it
    assert out.stdout.strip().splitlines()[-1] == "False"
