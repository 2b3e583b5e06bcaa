"""`stylestream sweep --ray` on a local Ray instance of 2 CPUs on 127.0.0.1, with Ray's token auth off for
the test cluster only (RAY_AUTH_MODE=disabled: no token file in ~/.ray): the same losses as the sweep in
one process, a task whose worker dies recorded as crashed while the sweep goes on, --resume across the
cluster, and a node with another stylestream refused. Nothing leaves the machine: usage stats off, the node
on loopback, and the head's cloud-metadata probes (Ray makes them whatever the usage-stats setting) sent to
a closed loopback port as their HTTP proxy. Ray missing: a failure under CI=true (the dev extra installs
it), a skip elsewhere with the reason; the one-line error without Ray is tested with Ray hidden."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stylestream
from stylestream.cli import main
from stylestream.models.io import WriteError
from stylestream.registry import Entry
from stylestream.train.optimizers import OPTIMIZERS
from stylestream.train.sweep_ray import ClusterError, TaskWriteError, check_shared, ray_environ, task_device
from tests.train.test_sweep import TINY, sweep

GRID = ("--optimizers", "adam,rmsprop", "--lrs", "0.001,0.01", "--batch-sizes", "2")
ROOT = str(Path(__file__).resolve().parents[2])  # where `tests` imports from
ARM = "STYLESTREAM_TEST_EXIT_ARM"  # the file whose existence arms the exit-test optimizer
LOSS_COLUMNS = ("step", "epoch", "images", "total", "content", "style", "tv", "lr")
# the variables stylestream sets before Ray loads, and those the tests set for their instances
RAY_VARS = ("RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS", "RAY_AUTH_MODE",
            "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY")  # fmt: skip


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        why = "Ray is not installed (pip install -e '.[dev]', or stylestream[ray])"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; under CI the Ray tests must run")
        pytest.skip(why)


@pytest.fixture
def ray_vars():
    """The Ray variables as they were, back after the test (stylestream sets some in os.environ), and unset
    during it. Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at its first import in a process, as
    stylestream's CLI sets it: whichever test imports Ray first, it does so here, with the variable at 0, so
    a local instance of the test process binds 127.0.0.1 (a fresh `stylestream sweep --ray local` process
    gets the same from stylestream)."""
    before = {k: os.environ.get(k) for k in RAY_VARS}
    if importlib.util.find_spec("ray") is not None and "ray" not in sys.modules:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        import ray  # noqa: F401
    for k in RAY_VARS:
        os.environ.pop(k, None)
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def ray_env(ray_vars):
    """Token auth off for the test cluster only; the variables stylestream sets itself unset, so the test
    sees it set them. Ray's head asks the cloud metadata endpoints (169.254.169.254 and, through DNS,
    metadata.google.internal) which cloud it is on, whatever the usage-stats setting: here those plain-HTTP
    requests go to a closed loopback port as their proxy and fail at once; loopback traffic (Ray's own
    gRPC) bypasses it."""
    require_ray()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    proxy = f"http://127.0.0.1:{closed_port()}"
    os.environ.update({"http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "127.0.0.1,localhost,::1",
                       "NO_PROXY": "127.0.0.1,localhost,::1"})  # fmt: skip
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: row[k] for k in LOSS_COLUMNS if k in row} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_a_sweep_through_ray_equals_the_same_sweep_in_one_process(tiny_data, style_path, tmp_path, ray_env, caplog,
                                                                   capsys):  # fmt: skip
    here, there = tmp_path / "here", tmp_path / "ray"
    assert sweep(tiny_data, style_path, here, *GRID) == 0  # one lockstep group of 4 in this process
    caplog.set_level(logging.INFO, logger="stylestream.train.sweep_ray")
    capsys.readouterr()
    # two tasks of 2 runs each, side by side on the 2 CPUs; the progress bar on
    tiny = [a for a in TINY if a != "--no-progress"]
    assert main(["sweep", "--style", str(style_path), "--data", str(tiny_data), "--out", str(there), *tiny, *GRID,
                 "--parallel", "2", "--ray", "local"]) == 0  # fmt: skip
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("sweep: 100%") and "4/4" in line for line in bar)  # over finished runs

    import ray

    assert not ray.is_initialized()  # the local instance stopped with the sweep
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"  # set by stylestream, as nobody had
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "Ray (local): 1 node(s) at 127.0.0.1," in said  # loopback only, not the machine's address

    a, b = (json.loads((d / "report.json").read_text()) for d in (here, there))
    assert b["meta"]["trained_on"].startswith("Ray (local)") and b["meta"]["parallel"] == 2
    assert "trained on Ray (local): 1 node(s) at 127.0.0.1" in (there / "report.md").read_text()
    assert "each a Ray task in one worker process" in b["fairness"]
    assert a["meta"]["trained_on"] == "this process" and a["meta"]["parallel"] == 4
    assert len(b["runs"]) == 4 and a["ranking"] == b["ranking"] and a["best"] == b["best"]
    same = ("name", "status", "steps", "total_steps", "images_seen", "loss", "content", "style", "tv",
            "eval_loss", "eval_content", "eval_style", "stylized")  # fmt: skip
    for ra, rb in zip(a["runs"], b["runs"]):
        assert ra["status"] == "ok" and {k: ra[k] for k in same} == {k: rb[k] for k in same}
        assert metrics(here / ra["name"]) == metrics(there / rb["name"])  # every step's losses, as written
        group = json.loads((there / rb["name"] / "card.json").read_text())["lockstep"]
        assert group["group_size"] == 2 and len(group["runs"]) == 2
    assert (there / "report.md").is_file() and (there / "grid.jpg").is_file()


class _ExitInStep2(torch.optim.Adam):
    """Test optimizer: a real Adam whose second step ends its process, as a worker killed by the system
    (out of memory, a lost node) would end, while `arm` exists."""

    arm: Path | None = None

    def step(self, closure=None):
        self.state.setdefault("calls", 0)
        self.state["calls"] += 1
        if self.arm is not None and self.arm.exists() and self.state["calls"] == 2:
            os._exit(17)
        return super().step(closure)


def register_exit_test() -> None:
    """In the test and in every Ray worker (worker_process_setup_hook): the exit-test optimizer."""
    _ExitInStep2.arm = Path(os.environ[ARM])
    OPTIMIZERS._entries["exit-test"] = Entry(
        "exit-test", lambda params, lr, **kw: _ExitInStep2(params, lr=lr), "test: ends its process in step 2"
    )


@pytest.fixture
def test_cluster(ray_env, tmp_path, monkeypatch):
    """A local instance this test starts itself (a program's own ray.init: the sweep uses that
    connection), its workers knowing the exit-test optimizer."""
    arm = tmp_path / "arm"
    arm.touch()
    monkeypatch.setenv(ARM, str(arm))
    monkeypatch.setitem(OPTIMIZERS._entries, "exit-test", None)  # restored afterwards
    register_exit_test()
    os.environ.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})  # before import
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"worker_process_setup_hook": register_exit_test, "env_vars": {ARM: str(arm),
                          # the hook runs before Ray puts the driver's folder on a worker's path
                          "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}})  # fmt: skip
    yield arm


@pytest.mark.slow
def test_a_dead_task_marks_its_runs_crashed_and_resume_finishes_them(tiny_data, style_path, tmp_path,
                                                                      test_cluster, capsys):  # fmt: skip
    out = tmp_path / "sweep"
    args = ("--optimizers", "adam,exit-test", "--lrs", "0.001", "--batch-sizes", "2", "--parallel", "1",
            "--ray", "auto")  # fmt: skip
    assert sweep(tiny_data, style_path, out, *args) == 0  # adam finished; the sweep went on
    data = json.loads((out / "report.json").read_text())
    runs = {r["name"]: r for r in data["runs"]}
    assert runs["adam/lr0.001-bs2"]["status"] == "ok" and data["ranking"] == ["adam"]
    dead = runs["exit-test/lr0.001-bs2"]
    assert dead["status"] == "crashed" and dead["error"].startswith("Ray task failed: ")
    assert "died" in dead["error"] or "exit" in dead["error"].lower()  # Ray's reason, in one line
    assert dead["error"] in (out / "report.md").read_text()
    import ray

    assert ray.is_initialized()  # the test's connection: the sweep leaves it up
    with pytest.raises(SystemExit) as exit_:  # more CPUs per task than the cluster has: refused before any task
        sweep(tiny_data, style_path, tmp_path / "big", *args, "--ray-cpus", "3")
    assert exit_.value.code == 2 and "--ray-cpus 3: the Ray cluster has 2 CPUs" in capsys.readouterr().err

    # --resume across the cluster: the finished run is kept, the crashed one trains again
    kept = (out / "adam/lr0.001-bs2/model.pt").stat().st_mtime_ns
    test_cluster.unlink()
    assert sweep(tiny_data, style_path, out, *args, "--resume") == 0
    data = json.loads((out / "report.json").read_text())
    assert {r["name"]: r["status"] for r in data["runs"]} == {"adam/lr0.001-bs2": "ok", "exit-test/lr0.001-bs2": "ok"}
    assert (out / "adam/lr0.001-bs2/model.pt").stat().st_mtime_ns == kept  # not retrained
    assert [int(r["step"]) for r in metrics(out / "exit-test/lr0.001-bs2")] == [1, 2, 3]

    # a node whose stylestream is not the sweep's: its tasks fail at their start with a one-line reason
    stylestream.__version__, ours = "0.0.0+other", stylestream.__version__
    try:
        capsys.readouterr()
        assert sweep(tiny_data, style_path, tmp_path / "v", *args) == 3  # every run crashed
        data = json.loads((tmp_path / "v" / "report.json").read_text())
        for r in data["runs"]:
            assert r["status"] == "crashed" and r["steps"] == 0
            assert f"has stylestream {ours}, the sweep's is 0.0.0+other: install the same version" in r["error"]
        with pytest.raises(SystemExit) as exit_:  # without --parallel a probe task sizes the groups: it fails first
            sweep(tiny_data, style_path, tmp_path / "w", *args[:6], "--ray", "auto")
        assert exit_.value.code == 2
        assert "sizing the lockstep groups on a Ray worker failed" in capsys.readouterr().err
    finally:
        stylestream.__version__ = ours


def test_usage_stats_off_and_a_local_instance_on_loopback_unless_the_user_said_otherwise():
    assert ray_environ("local", {}) == {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert ray_environ("auto", {}) == {"RAY_USAGE_STATS_ENABLED": "0"}  # a cluster binds where it was started
    assert ray_environ("10.0.0.5:6379", {"RAY_USAGE_STATS_ENABLED": "1"}) == {}  # the user's choice stands
    assert ray_environ("local", {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}) == {"RAY_USAGE_STATS_ENABLED": "0"}


def test_a_node_that_does_not_see_the_sweep_folder_refuses_the_task(tmp_path):
    payload = {"base": {"out": str(tmp_path / "sweep")}}
    with pytest.raises(ClusterError, match="does not see the sweep folder .* every node shares, at the same path"):
        check_shared(payload)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")  # what the driver writes before any task
    check_shared(payload)


def test_sweep_help_names_the_ray_option_without_loading_ray():
    code = ("import sys\nfrom stylestream.cli import main\ntry:\n    main(['sweep', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('ray loaded' if 'ray' in sys.modules else 'ray not loaded')")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    text = " ".join(out.split())
    assert "--ray auto|local|ADDRESS" in text and "(RAY_USAGE_STATS_ENABLED=0) unless you set it" in text
    assert "127.0.0.1 only" in text and "same stylestream version" in text and "--ray-cpus N" in text
    assert out.splitlines()[-1] == "ray not loaded"


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    return exit_.value.code, capsys.readouterr().err


def test_without_ray_the_flag_is_one_line_naming_the_extra(tiny_data, style_path, tmp_path, monkeypatch, ray_vars,
                                                            capsys):  # fmt: skip
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    code, err = run_cli(["sweep", "--style", str(style_path), "--data", str(tiny_data), "--out", str(tmp_path / "s"),
                         *TINY, "--ray", "local"], capsys)  # fmt: skip
    assert code == 2
    assert err.strip().splitlines() == ["stylestream sweep: error: --ray needs Ray: pip install 'stylestream[ray]'"]
    assert not (tmp_path / "s" / "sweep.json").exists()  # nothing trained, nothing loaded


def test_bad_ray_options_are_one_line_errors_before_anything_loads(tiny_data, style_path, tmp_path, ray_vars,
                                                                    capsys):  # fmt: skip
    base = ["sweep", "--style", str(style_path), "--data", str(tiny_data), "--out", str(tmp_path / "s"), *TINY]
    code, err = run_cli([*base, "--ray", "head-without-port"], capsys)
    assert code == 2 and "--ray: expected auto, local, HOST:PORT or ray://HOST:PORT" in err
    code, err = run_cli([*base, "--ray-cpus", "2"], capsys)
    assert code == 2 and "--ray-cpus is for Ray tasks: add --ray" in err
    if importlib.util.find_spec("ray") is not None:  # else the missing Ray is the error (test above)
        port = closed_port()
        code, err = run_cli([*base, "--ray", f"127.0.0.1:{port}"], capsys)  # Ray itself would retry for minutes
        assert code == 2 and f"nothing answers at 127.0.0.1:{port} (Connection refused)" in err
        assert len(err.strip().splitlines()) == 1


def test_a_write_error_in_a_task_reaches_the_driver_as_itself():
    sent = pickle.loads(pickle.dumps(TaskWriteError("/shared/sweep/adam", 28, "No space left on device")))
    assert sent.original().line("--out") == WriteError("/shared/sweep/adam", 28).line("--out")


def test_a_gpu_task_trains_on_the_gpu_ray_gives_it():
    assert [task_device(d) for d in ("cuda:1", "cuda", "auto", "cpu")] == ["cuda", "cuda", "auto", "cpu"]
