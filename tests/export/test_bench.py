"""The format benchmark reports measured numbers per format and size (never gates on time)."""

from __future__ import annotations

import json

from stylestream.cli import main


def test_bench_export_table(capsys, fitted_model, media, tmp_path):
    prefix = tmp_path / "bench" / "export"
    code = main(["bench", "export", str(fitted_model[0]), "--formats", "onnx,onnx-int8,tensorrt",
                 "--sizes", "32x48,40x56", "--reps", "20", "--warmup", "1",
                 "--calibration", str(media / "content"), "-o", str(prefix)])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(prefix.with_suffix(".json").read_text())
    rows = {r["format"]: r for r in result["rows"]}
    assert result["machine"]["device"] == "cpu" and result["sizes"] == ["32x48", "40x56"]
    for name in ("torch eager", "onnx", "onnx-int8"):
        lat = rows[name]["latency"]
        assert set(lat) == {"32x48", "40x56"} and all(v["median_ms"] > 0 and v["reps"] == 20 for v in lat.values())
    assert rows["onnx"]["psnr_db"] >= 45 and rows["onnx-int8"]["psnr_db"] >= 28
    # timed through the runtime backends that serve each file
    assert rows["onnx"]["runtime"] == rows["onnx-int8"]["runtime"] == "onnxruntime (CPU)"
    assert rows["torch eager"]["runtime"] == "torch (cpu, fp32)"
    assert rows["onnx"]["size_mb"] > rows["onnx-int8"]["size_mb"] > 0
    assert "skipped" in rows["tensorrt"] or "latency" in rows["tensorrt"]
    md = prefix.with_suffix(".md").read_text()
    assert md in out and "| onnx-int8 |" in md and "32x48 ms" in md and "GFLOP per frame" in md
    assert result["gflops"]["40x56"] > result["gflops"]["32x48"] > 0
