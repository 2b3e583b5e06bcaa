"""The `stylestream` command line as a whole: the parsers build without heavy libraries, every command's
--help works, shared options are the same everywhere, and a frame size is width x height everywhere."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from stylestream import cli_choices
from stylestream.cli import COMMANDS, build_parser, main
from stylestream.cli_types import size_wxh, sizes_wxh
from stylestream.plugins.options import add_engine_arguments, add_plugin_arguments

HEAVY = ("torch", "onnxruntime", "cv2", "aiortc", "av")


def test_help_imports_no_heavy_library():
    """`stylestream --help` builds every command's parser; none may load torch, ONNX Runtime, OpenCV or
    the WebRTC stack (seconds of start-up on a loaded machine)."""
    code = (
        "import json, sys\n"
        "from stylestream.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "usage: stylestream" in result.stdout
    assert json.loads(result.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_working_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: stylestream {command}")


def test_light_choice_tables_match_the_registries():
    """cli_choices mirrors registries that import torch; a mirror that drifted would offer wrong choices."""
    from stylestream.models import ARCHITECTURES
    from stylestream.models.layers import NORMS
    from stylestream.train.losses import LOSSES
    from stylestream.train.optimize import INITS
    from stylestream.train.optimizers import OPTIMIZERS
    from stylestream.train.schedules import SCHEDULES
    from stylestream.train.sweep import STUDY_OPTIMIZERS

    for light, real in ((cli_choices.ARCHITECTURES, ARCHITECTURES), (cli_choices.OPTIMIZERS, OPTIMIZERS),
                        (cli_choices.SCHEDULES, SCHEDULES), (cli_choices.LOSSES, LOSSES)):  # fmt: skip
        assert light.kind == real.kind
        assert [(e.name, e.help) for e in light] == [(e.name, e.help) for e in real]
    assert cli_choices.NORMS == NORMS and cli_choices.STUDY_OPTIMIZERS == STUDY_OPTIMIZERS
    assert cli_choices.INITS == INITS


def _words(text: str) -> str:
    return " ".join(text.split())


def _options_help(add) -> str:
    """The help lines `add` writes, whitespace-normalized (argparse wraps by the widest option)."""
    ref = argparse.ArgumentParser(prog="x", add_help=False)
    add(ref)
    return _words(ref.format_help().split("options:", 1)[1])


@pytest.mark.parametrize("command", ["serve", "cam", "stylize"])
def test_serve_cam_and_stylize_share_the_plugin_and_engine_options(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = _words(capsys.readouterr().out)
    for add in (add_plugin_arguments, add_engine_arguments):
        assert _options_help(add) in text, f"{command}: {add.__name__} options differ from the shared ones"


@pytest.mark.parametrize("command", [["serve"], ["cam", "--style", "edges"], ["stylize", "--style", "edges", "a",
                                                                               "-o", "b"]])  # fmt: skip
def test_too_small_max_side_is_refused_alike(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--max-side", "8"])
    assert exit_.value.code == 2
    assert "argument --max-side: must be at least 16 pixels, got 8" in capsys.readouterr().err


def test_serve_takes_no_user_plugins(monkeypatch, tmp_path):
    from stylestream.stream.cli import config_from_args

    monkeypatch.delenv("STYLESTREAM_TOKEN", raising=False)
    args = build_parser().parse_args(["serve", "--plugins", str(tmp_path), "--no-user-plugins", "--max-model-mb",
                                      "5", "--backend", "onnxruntime", "--device", "cpu", "--max-side", "320"])
    config = config_from_args(args)
    assert config.plugin_dirs == [tmp_path] and config.include_user_plugins is False
    assert (config.max_model_mb, config.backend, config.device, config.max_side) == (5.0, "onnxruntime", "cpu", 320)
    assert config_from_args(build_parser().parse_args(["serve"])).include_user_plugins is True


def test_size_is_width_by_height():
    assert size_wxh("640x480") == (640, 480) and size_wxh(" 1280 X 720 ") == (1280, 720)
    assert sizes_wxh("320x240,640x480") == [(320, 240), (640, 480)]
    for bad, why in [("640", "expected WIDTHxHEIGHT, e.g. 640x480; got '640'"), ("axb", "expected WIDTHxHEIGHT"),
                     ("640x480x3", "expected WIDTHxHEIGHT"), ("-640x480", "expected WIDTHxHEIGHT"),
                     ("0x480", "width and height must be at least 1")]:  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            size_wxh(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="sizes separated by commas"):
        sizes_wxh(",")


def test_every_size_option_reads_width_first():
    parser = build_parser()
    assert parser.parse_args(["cam", "--style", "x", "--size", "640x480"]).size == (640, 480)
    assert parser.parse_args(["export", "m.pt", "-f", "onnx", "-o", "o", "--static", "640x480"]).static == (640, 480)
    # run_benchmark takes (H, W); its tables label sizes W x H again
    assert parser.parse_args(["bench", "export", "m.pt", "--sizes", "320x240,64x48"]).sizes == [(240, 320), (48, 64)]


def test_export_static_is_width_by_height(tmp_path, capsys):
    """--static 64x48 is 64 wide and 48 high: the ONNX input is fixed at (N, 3, 48, 64)."""
    import onnx
    import torch

    from stylestream.models import build_model, save_model

    torch.manual_seed(0)
    save_model(build_model("lite").eval(), tmp_path / "m.pt")
    out = tmp_path / "m.onnx"
    assert main(["export", str(tmp_path / "m.pt"), "-f", "onnx", "-o", str(out), "--static", "64x48",
                 "--no-verify"]) == 0, capsys.readouterr()  # fmt: skip
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][2:] == [48, 64]
