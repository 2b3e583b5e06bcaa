"""`stylestream serve` as a user runs it, in a subprocess: the one way tests start it and wait for it.
Ready means the server printed its URL, which it does only once the port is bound; a server that exits
or takes too long fails the test with its output, never a later "connection refused"."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    def __init__(self, tmp_path: Path, *args: str, env: dict | None = None, verbose: bool = False) -> None:
        self.port = free_port()
        self.log = tmp_path / f"serve-{self.port}.log"
        cmd = [sys.executable, "-m", "stylestream", *(["-v"] if verbose else []), "serve", "--port", str(self.port),
               "--ice-interface", "lo", *args]  # fmt: skip
        with open(self.log, "w") as out:  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.base = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            if re.search(r"https?://\S+:\d+/", text) and "open" in text:
                return text
            if self.proc.poll() is not None:
                pytest.fail(f"stylestream serve exited with {self.proc.returncode} before it was ready:\n{text}")
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"stylestream serve was not ready after {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
