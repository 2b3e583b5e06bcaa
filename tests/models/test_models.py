import pytest
import torch

from stylestream import load_model
from stylestream.models import ARCHITECTURES, ModelLoadError, build_model, save_model


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_output_shape_equals_input_shape_and_range(arch, norm):
    model = build_model(arch, norm=norm).eval()
    for h, w in [(16, 16), (67, 93), (33, 17), (64, 48)]:
        x = torch.rand(2, 3, h, w) * 255
        with torch.no_grad():
            y = model(x)
        assert y.shape == x.shape
        assert y.min() >= 0 and y.max() <= 255


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_save_load_round_trip(tmp_path, arch):
    model = build_model(arch, norm="instance").eval()
    save_model(model, tmp_path / "m.pt", card={"style": "x"})
    loaded = load_model(tmp_path / "m.pt")
    assert not loaded.training
    assert loaded.stylestream_card == {"style": "x"}
    x = torch.rand(1, 3, 35, 41) * 255
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


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
