from pathlib import Path

import pytest
import torch

from stylestream import load_model
from stylestream.models import ARCHITECTURES, ModelLoadError, build_model, inference_model, save_model
from stylestream.models.io import FORMAT_VERSION, read_model_file
from stylestream.models.layers import scaled_tanh
from stylestream.train.images import load_image

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_output_shape_equals_input_shape_and_leaves_in_range(arch, norm):
    model = build_model(arch, norm=norm).eval()
    for h, w in [(16, 16), (67, 93), (33, 17), (64, 48)]:
        x = torch.rand(2, 3, h, w) * 255
        with torch.no_grad():
            y = inference_model(model)(x)
        assert y.shape == x.shape
        assert y.min() >= 0 and y.max() <= 255


def test_johnson_is_the_studys_net_black_at_init_and_johnson_tanh_is_mid_grey(media):
    """The study's TransformerNet ends in a plain 9x9 conv: at initialization it puts out about 0 (black,
    where the study's "rather dark images" come from); the tanh head puts out mid-grey."""
    x = load_image(media / "content" / "tubingen.jpg", 96)
    torch.manual_seed(42)
    linear = build_model("johnson").eval()
    tanh = build_model("johnson-tanh").eval()
    tanh.load_state_dict(linear.state_dict())  # the same weights: only the head differs
    with torch.no_grad():
        raw = linear(x)
        assert raw.abs().mean() < 5 and inference_model(linear)(x).mean() < 5  # black
        assert torch.allclose(tanh(x), scaled_tanh(raw), atol=1e-4)
        assert 100 < tanh(x).mean() < 155  # mid-grey
    assert linear.decoder[-1][-1].out_channels == 3 and linear.head == "linear"


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_save_load_round_trip(tmp_path, arch):
    model = build_model(arch, norm="instance").eval()
    save_model(model, tmp_path / "m.pt", card={"style": "x"})
    blob = read_model_file(tmp_path / "m.pt")
    assert (blob["arch"], blob["version"]) == (arch, FORMAT_VERSION)
    loaded = load_model(tmp_path / "m.pt")
    assert not loaded.training and loaded.stylestream_config["arch"] == arch
    assert loaded.stylestream_card == {"style": "x"}
    x = torch.rand(1, 3, 35, 41) * 255
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_a_v1_johnson_file_loads_as_johnson_tanh_and_gives_the_same_output():
    """johnson_v1.pt was written by stylestream at commit 39a9471, when `johnson` had the tanh head;
    johnson_v1_io.pt holds an input and that version's output for it."""
    model = load_model(DATA / "johnson_v1.pt")
    assert model.stylestream_config["arch"] == "johnson-tanh"
    io = torch.load(DATA / "johnson_v1_io.pt", weights_only=True)
    with torch.no_grad():
        y = model(io["input"])
    torch.testing.assert_close(y, io["output"], rtol=0, atol=1e-3)
    assert io["output"].std() > 20  # a real picture, not a flat one that any head would give


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(ModelLoadError, match="missing.pt: model file not found"):
        load_model(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelLoadError, match="corrupt.pt: not a readable stylestream model"):
        load_model(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save(build_model("johnson").state_dict(), foreign)
    with pytest.raises(ModelLoadError, match="foreign.pt: not a stylestream model file.*bare state_dict"):
        load_model(foreign)
    newer = tmp_path / "newer.pt"
    save_model(build_model("lite"), newer)
    blob = torch.load(newer, weights_only=True)
    torch.save({**blob, "version": FORMAT_VERSION + 1}, newer)
    with pytest.raises(ModelLoadError, match=f"newer.pt: model format v{FORMAT_VERSION + 1} is newer"):
        load_model(newer)
