"""A real Triton Inference Server for the tests and bench/serve_load.py: the tritonserver 2.51 binary that
the PyPI package nvidia-pytriton 0.7.0 ships (python backend only), on loopback, on free ports.

Its python backend runs a model.py in an embedded Python that must have numpy < 2 (Triton 2.51's stub
reads numpy 2 arrays as zeros: every output comes back empty) and onnxruntime. So the server gets an
environment of its own: a venv over this interpreter's packages (onnxruntime) with numpy 1.26 and
nvidia-pytriton (without its dependencies: only the binary is used), made once with

    python -m tests.runtime.tritonserver --setup      # ~210 MB: nvidia-pytriton 145 MB, numpy 1.26 60 MB

at $STYLESTREAM_TRITON_ENV (default ~/.cache/stylestream-triton-env). The project's own environment keeps
numpy 2 and needs only tritonclient (the `triton` extra).

Starting the server: the python backend's stub is copied from pytriton/tritonserver/python_backend_stubs/
X.Y/ into a private backend folder (site-packages stays untouched); the env's bin/ goes first on PATH (the
embedded Python finds its packages from the `python3` there) and LD_LIBRARY_PATH names the env's libpython
(else the stub loads the system's) and pytriton's bundled libraries (the stub's RPATH is relative to where
the package put it)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "STYLESTREAM_TRITON_ENV"
DEFAULT_ENV = Path.home() / ".cache" / "stylestream-triton-env"
PYTRITON = "nvidia-pytriton==0.7.0"
SETUP = "python -m tests.runtime.tritonserver --setup"

_PROBE = """
import json, sys, sysconfig, importlib.util
import numpy
spec = importlib.util.find_spec("pytriton")
print(json.dumps({"numpy": numpy.__version__, "libdir": sysconfig.get_config_var("LIBDIR"),
                  "pytriton": list(spec.submodule_search_locations)[0] if spec else None,
                  "version": f"{sys.version_info[0]}.{sys.version_info[1]}"}))
"""


def env_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ENV).expanduser()


@dataclass(frozen=True)
class TritonEnv:
    python: Path
    pytriton: Path  # .../site-packages/pytriton
    libdir: Path  # where the env's libpython3.X.so lives
    version: str  # "3.11"

    @property
    def server(self) -> Path:
        return self.pytriton / "tritonserver" / "bin" / "tritonserver"

    @property
    def stub(self) -> Path:
        return self.pytriton / "tritonserver" / "python_backend_stubs" / self.version / "triton_python_backend_stub"

    @property
    def libs(self) -> Path:
        return self.pytriton.parent / "nvidia_pytriton.libs"


def find_env() -> TritonEnv | str:
    """The server environment, or why there is none (with the command that makes it)."""
    python = env_root() / "bin" / "python"
    if not python.exists():
        return f"no Triton server environment at {env_root()} (${ENV_VAR}); make it with `{SETUP}`"
    probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False)
    if probe.returncode != 0:
        return f"{python} cannot import numpy: {probe.stderr.strip()[-300:]}; remake it with `{SETUP}`"
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    if not info["pytriton"]:
        return f"{python} has no nvidia-pytriton; remake the environment with `{SETUP}`"
    if int(info["numpy"].split(".")[0]) >= 2:
        return f"{python} has numpy {info['numpy']}; Triton 2.51's python backend needs numpy < 2 (`{SETUP}`)"
    env = TritonEnv(python, Path(info["pytriton"]), Path(info["libdir"]), info["version"])
    for path in (env.server, env.stub):
        if not path.is_file():
            return f"{path} is missing from nvidia-pytriton; remake the environment with `{SETUP}`"
    return env


def _missing(reason: str) -> None:
    """Skip with the reason, except under CI=true, where a missing Triton is a failure; STYLESTREAM_TEST_TRITON=0
    skips anyway (a machine without room for the server environment)."""
    import pytest

    if os.environ.get("STYLESTREAM_TEST_TRITON") == "0":
        pytest.skip(f"{reason} (STYLESTREAM_TEST_TRITON=0)")
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI the Triton tests must run (STYLESTREAM_TEST_TRITON=0 skips them)")
    pytest.skip(reason)


def require_triton_client() -> None:
    import importlib.util

    if importlib.util.find_spec("tritonclient") is None:
        _missing("tritonclient is not installed (pip install -e .[dev], or stylestream[triton])")


def require_triton_server() -> TritonEnv:
    require_triton_client()
    found = find_env()
    if isinstance(found, str):
        _missing(found)
    assert isinstance(found, TritonEnv)
    return found


def setup_env(root: Path) -> None:
    """Make the server environment (downloads from PyPI: run by hand or by CI's set-up, never by a test)."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "numpy<2"], check=True)
    subprocess.run([*pip, "--no-deps", PYTRITON], check=True)


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TritonServer:
    """tritonserver serving `repository`, bound to 127.0.0.1. `stop()` and `start()` again keep the ports,
    so clients see the same server go away and come back."""

    def __init__(self, env: TritonEnv, repository: Path, workdir: Path) -> None:
        self.env = env
        self.repository = Path(repository)
        self.workdir = Path(workdir)
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.backends = self.workdir / "backends"
        python = self.backends / "python"
        if not python.exists():
            shutil.copytree(env.pytriton / "tritonserver" / "backends" / "python", python)
            shutil.copy2(env.stub, python / "triton_python_backend_stub")
        self.log = self.workdir / f"tritonserver-{self.grpc_port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return [str(self.env.server), f"--model-repository={self.repository}",
                f"--backend-directory={self.backends}", "--exit-on-error=false", "--exit-timeout-secs=5",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
                "--allow-gpu-metrics=false", "--allow-sagemaker=false", "--allow-vertex-ai=false"]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.env.python.parent}{os.pathsep}{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(str(p) for p in (self.env.libdir, self.env.libs))
        for var in ("PYTHONPATH", "PYTHONHOME"):  # the stub's Python is the env's own
            env.pop(var, None)
        return env

    def start(self, ready: list[str] | tuple[str, ...] = (), timeout: float = 90) -> None:
        """Start and wait until the server answers and each model in `ready` is loaded."""
        with open(self.log, "a") as out:  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         env=self.environment(), start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        paths = ["/v2/health/live", *(f"/v2/models/{m}/ready" for m in ready)]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            if all(self._get(p) == 200 for p in paths):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"tritonserver was not ready after {timeout} s:\n{self.output()[-3000:]}")

    def _get(self, path: str) -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=2)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> TritonServer:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true", help=f"make the server environment at {env_root()}")
    args = ap.parse_args()
    if args.setup:
        setup_env(env_root())
    found = find_env()
    print(found if isinstance(found, str) else f"Triton server environment: {found.python} ({found.server})")
    return 1 if isinstance(found, str) else 0


if __name__ == "__main__":
    sys.exit(main())
