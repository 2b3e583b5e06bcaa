"""`stylestream bench gpu`: the script stays correct on CPU (--quick, tiny sizes), every step reports
figures or why it did not run, and one step's failure never stops the others. Timings are never checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import torch

from stylestream.bench import gpu
from stylestream.bench.baseline import measure
from stylestream.registry import Registry

REPO = Path(__file__).resolve().parents[2]


def _statuses(rows):
    return [r["status"] for r in rows]


def test_quick_cpu_run_reports_every_step(tmp_path):
    prefix = tmp_path / "gpu"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "stylestream", "bench", "gpu", "--device", "cpu", "--quick",
                           "--budget-s", "400",  # generous: no part may be skipped for time on a loaded CI machine
                           "-o", str(prefix)], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=170)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(prefix.with_suffix(".json").read_text())
    steps = report["steps"]
    assert list(steps) == gpu.steps().names()  # every step, in order
    assert report["device"] == "cpu" and report["quick"] is True
    for name, r in steps.items():
        assert r["status"] in ("ok", "skipped"), (name, r.get("error"), r.get("traceback"))
        assert r["figures"] if r["status"] == "ok" else r["reason"], name
    assert {n for n, r in steps.items() if r["status"] == "ok"} >= {"env", "train", "lockstep", "export", "latency",
                                                                      "engine", "serve"}  # fmt: skip
    assert "ddp" in steps and steps["ddp"]["reason"]
    serve = steps["serve"]["figures"]["rows"][0]  # aiortc and av are dependencies: one loopback peer
    assert serve["status"] == "ok" and serve["fps_per_stream_mean"] > 0 and serve["latency_p50_ms"] > 0
    # every part of a step has figures or says why not; none failed
    for name in ("export", "latency", "engine", "serve"):
        for row in steps[name]["figures"]["rows"]:
            assert row["status"] == "ok" or row["status"].startswith(("not available here: ", "skipped: ")), row
    export_rows = {(r["format"], r["precision"]): r for r in steps["export"]["figures"]["rows"]}
    assert export_rows[("onnx", "fp32")]["passed"] is True
    assert export_rows[("tensorrt", "fp16")]["status"].startswith("not available here: ")
    latency = steps["latency"]["figures"]["rows"]
    assert any(r["runtime"] == "torch eager" and r.get("ms_per_frame", 0) > 0 for r in latency)
    engine = {(r["frame_path"], r["callers"]): r for r in steps["engine"]["figures"]["rows"]}
    assert set(engine) == {("numpy", 1), ("numpy", 4), ("tensor", 1), ("tensor", 4)}
    assert steps["engine"]["figures"]["paths_agree"]["max_abs_diff"] <= 1  # the two frame paths, same frames
    assert engine[("tensor", 4)]["stages_ms"]["upload"] >= 0 and engine[("numpy", 4)]["stages_ms"]["model"] > 0
    train = steps["train"]["figures"]["rows"]
    assert {r["variant"] for r in train} == {"pytorch/examples (fp32)", "stylestream (fp32, channels_last)",
                                              "stylestream (bfloat16, channels_last)"}  # fmt: skip
    lock = steps["lockstep"]["figures"]
    # fused and unfused lockstep, 8 optimizers each, every run ok
    assert [g["variant"] for g in lock["groups"]] == ["fused", "unfused"]
    assert len(lock["runs"]) == 16 and all(r["status"] == "ok" for r in lock["runs"])
    assert all(g["projected_study_hours"] > 0 for g in lock["groups"])
    md = prefix.with_suffix(".md").read_text()
    assert md.startswith("## GPU benchmark: cpu")
    for name in steps:
        assert f"(`{name}`)" in md
    assert md in done.stdout  # printed as well as written


def _registry(*steps: gpu.Step) -> Registry[gpu.Step]:
    reg: Registry[gpu.Step] = Registry("bench step")
    for s in steps:
        reg.add(s.name, s, s.title)
    return reg


def _boom(ctx: gpu.Context) -> None:
    ctx.figures["measured_before_failing"] = 1.5
    raise RuntimeError("boom: the device fell over")


def _not_here(ctx: gpu.Context) -> None:
    raise gpu.Skip("needs a thing this machine lacks")


def _parts(ctx: gpu.Context) -> None:
    rows: list = []
    ctx.figures["rows"] = rows
    with ctx.part(rows, {"what": "fine"}) as row:
        row["value"] = 3
    with ctx.part(rows, {"what": "broken"}):
        raise ValueError("a part failed")
    with ctx.part(rows, {"what": "missing"}):
        import a_module_that_is_not_installed  # noqa: F401
    with ctx.part(rows, {"what": "late"}):
        ctx.check_time(1e9)


def test_a_failing_step_is_reported_with_its_traceback_and_the_rest_go_on(tmp_path):
    reg = _registry(gpu.steps()["env"], gpu.Step("boom", "Fails", _boom, 1), gpu.Step("absent", "Skips", _not_here, 1),
                    gpu.Step("parts", "Parts", _parts, 1))  # fmt: skip
    seen = []
    report = gpu.run_bench(gpu.Options(device="cpu", quick=True, output=tmp_path / "out" / "gpu", budget_s=20),
                           registry=reg, on_result=lambda name, r: seen.append(name))  # fmt: skip
    steps = report["steps"]
    assert seen == ["env", "boom", "absent", "parts"]
    assert steps["env"]["status"] == "ok" and steps["env"]["figures"]["torch"] == torch.__version__
    boom = steps["boom"]
    assert boom["status"] == "failed" and "RuntimeError: boom" in boom["error"]
    assert "_boom" in boom["traceback"] and "boom: the device fell over" in boom["traceback"]
    assert boom["figures"] == {"measured_before_failing": 1.5}  # what it measured before failing is kept
    assert steps["absent"] == {**steps["absent"], "status": "skipped", "reason": "needs a thing this machine lacks"}
    rows = {r["what"]: r for r in steps["parts"]["figures"]["rows"]}
    assert steps["parts"]["status"] == "ok" and rows["fine"] == {"what": "fine", "value": 3, "status": "ok"}
    assert rows["broken"]["status"] == "failed" and "a part failed" in rows["broken"]["traceback"]
    assert rows["missing"]["status"] == "not available here: the a_module_that_is_not_installed Python package " \
                                        "is not installed"  # fmt: skip
    assert rows["late"]["status"].startswith("skipped: out of this step's time budget")
    # the outputs were written, the traceback included
    written = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert written["steps"]["boom"]["traceback"] == boom["traceback"]
    md = (tmp_path / "out" / "gpu.md").read_text()
    assert "| boom | failed: RuntimeError: boom: the device fell over |" in md and "<summary>traceback</summary>" in md


def test_a_step_past_its_hard_limit_is_abandoned(tmp_path):
    release = threading.Event()

    def stuck(ctx: gpu.Context) -> None:
        ctx.figures["started"] = True
        release.wait(30)

    shared = gpu.Shared("cpu", True, tmp_path, gpu.MEDIA)
    try:
        r = gpu.run_step(gpu.Step("stuck", "Hangs", stuck, 0.1), gpu.Context(shared, 0.1), grace_s=0.2)
    finally:
        release.set()
    assert r["status"] == "failed" and "abandoned" in r["error"] and r["figures"] == {"started": True}
    gpu.ABANDONED.clear()


def test_unknown_step_is_refused_before_anything_runs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stylestream", "bench", "gpu", "--steps", "env,nope",
                           "-o", str(tmp_path / "x")], check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode != 0
    assert "unknown bench step 'nope'; choose one of: env, train, lockstep" in done.stderr
    assert not (tmp_path / "x.json").exists()


class _Fake:
    def __init__(self, name: str, seconds: list[float]) -> None:
        self.name, self.calls = name, 0

    def step(self, x):
        self.calls += 1
        return 0.0


def test_measure_gives_every_variant_a_timed_step_even_past_the_deadline():
    a, b = _Fake("a", []), _Fake("b", [])
    t = measure([a, b], torch.zeros(4, 3, 8, 8), steps=5, warmup=1, rounds=3, deadline=0.0)
    assert {k: len(v) for k, v in t.seconds.items()} == {"a": 1, "b": 1}
    assert set(t.images_per_s()) == {"a", "b"} and all(v > 0 for v in t.images_per_s().values())
    t = measure([a, b], torch.zeros(4, 3, 8, 8), steps=2, warmup=0, rounds=2)
    assert {k: len(v) for k, v in t.seconds.items()} == {"a": 4, "b": 4}


def test_the_device_script_writes_the_results_under_out(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "GPU_TESTS": "0", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cmd = ["bash", str(REPO / "bench" / "gpu_run.sh"), "--device", "cpu", "--quick", "--steps", "env,ddp"]
    done = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((out / "gpu.json").read_text())
    assert list(report["steps"]) == ["env", "ddp"] and report["steps"]["env"]["status"] == "ok"
    assert "## GPU benchmark: cpu" in (out / "gpu.log").read_text()
