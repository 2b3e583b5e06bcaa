"""The formats table drives the exporter: a row registered here (its export function, requirements,
backend and suffix) is exported, verified, offered by the CLI and served, with no other code."""

from __future__ import annotations

import json
import shutil

import pytest

from stylestream.export.formats import FORMATS, Format, Requirement, served_suffixes
from stylestream.registry import Entry
from tests.conftest import run_cli as _cli

built = []


def build_copy(job) -> None:
    """The fake format's export function: the job's FP32 ONNX under another suffix."""
    built.append(job.name)
    shutil.copyfile(job.onnx_fp32, job.artifact)


@pytest.fixture
def fake_rows(monkeypatch):
    rows = [
        Format("onnx-copy", (".onnxcopy",), "-copy", "fp32", f"{__name__}:build_copy", "onnxruntime",
               help="test row: the FP32 ONNX, renamed"),
        Format("needs-extra", (".needs",), "-needs", "fp32", f"{__name__}:build_copy", "onnxruntime",
               requires=Requirement("fakeextra", ("stylestream_no_such_module",)), help="test row: a missing extra"),
    ]  # fmt: skip
    for fmt in rows:  # the Registry has no removal: the entries go back when monkeypatch undoes this
        monkeypatch.setitem(FORMATS._entries, fmt.name, Entry(fmt.name, fmt, fmt.help))
    built.clear()
    return rows


def test_a_registered_row_is_exported_verified_offered_and_served(capsys, fake_rows, fitted_model, media, tmp_path):
    out = tmp_path / "styles" / "mosaic.onnxcopy"
    code, stdout, err = _cli(capsys, "export", fitted_model[0], "--format", "onnx-copy", "-o", out,
                             "--verify-sizes", "48x40", "--verify-images", media / "content")  # fmt: skip
    assert code == 0, err
    assert built == ["mosaic"] and out.is_file() and "OK   onnx-copy" in stdout
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["format"] == "onnx-copy" and card["opset"] == 17
    assert card["verification"]["passed"] and card["verification"]["runtime"] == "onnxruntime (CPU)"

    assert served_suffixes()[".onnxcopy"].name == "onnx-copy"
    code, stdout, _ = _cli(capsys, "plugins", "--plugins", out.parent, "--no-user-plugins", "--json")
    style = next(s for s in json.loads(stdout)["styles"] if s["name"] == "mosaic")
    assert style["backend"] == "onnxruntime"


def test_a_rows_requirements_stop_it_before_any_work(capsys, fake_rows, fitted_model, tmp_path):
    code, _, err = _cli(capsys, "export", fitted_model[0], "--format", "needs-extra", "-o", tmp_path / "m.needs")
    assert code == 2 and "Traceback" not in err
    assert "needs-extra export is not possible here: missing the stylestream_no_such_module Python package" in err
    assert "pip install stylestream[fakeextra]" in err
    assert built == [] and not any(tmp_path.iterdir())


def test_the_source_row_is_served_but_not_an_export_target(capsys, fitted_model, tmp_path):
    from stylestream.export import ExportError, export

    assert FORMATS["pytorch"].backend == "torch" and served_suffixes()[".pt"].name == "pytorch"
    with pytest.raises(ExportError, match="pytorch is not an export format; choose one of: onnx, onnx-fp16"):
        export(fitted_model[0], "pytorch", tmp_path / "m.pt")
    code, _, err = _cli(capsys, "export", fitted_model[0], "--format", "pytorch", "-o", tmp_path / "m.pt")
    assert code == 2 and "invalid choice: 'pytorch'" in err
