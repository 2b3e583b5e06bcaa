import numpy as np
import pytest

from stylestream.plugins import BUILTINS, discover_plugins

PAINTERLY = {"watercolor", "pencil-color", "oil-paint"}


def test_builtins_include_required_and_painterly_styles():
    names = set(BUILTINS.names())
    assert {"original", "cartoon", "sketch", "edges"} <= names
    assert names & PAINTERLY


@pytest.mark.parametrize("name", BUILTINS.names())
def test_filter_keeps_shape_and_changes_image(name, photo):
    plugin = BUILTINS[name]()
    batch = np.concatenate([photo, photo[:, ::-1]])  # two different frames
    out = plugin.process(batch)
    assert out.shape == batch.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - batch).mean()
    if name == "original":
        assert diff == 0
    else:
        assert diff > 3, f"{name} barely changed the image (mean abs diff {diff:.2f})"
    # frame i of the output comes from frame i of the input (no cross-talk inside a batch)
    single = plugin.process(batch[1:])
    assert np.array_equal(single[0], out[1])
    # odd and tiny sizes keep their exact shape
    odd = np.ascontiguousarray(batch[:, :37, :51])
    assert plugin.process(odd).shape == odd.shape


def test_strength_blends_with_original(photo):
    plugin = BUILTINS["sketch"]()
    full = plugin.process(photo).astype(int)
    assert np.array_equal(plugin.process(photo, {"strength": 0}), photo)
    half = plugin.process(photo, {"strength": 0.5}).astype(int)
    assert np.abs(half - (full + photo) / 2).max() <= 1


def test_params_are_declared_and_validated(photo):
    plugin = discover_plugins(include_user_dir=False).get("edges")
    assert [p.name for p in plugin.params] == ["strength", "stabilize", "threshold"]  # the first two: every style
    lo = plugin.process(photo, {"threshold": 10})
    hi = plugin.process(photo, {"threshold": 250})
    assert (lo > 0).sum() > (hi > 0).sum()  # a lower threshold finds more edges
    with pytest.raises(ValueError, match="has no parameter.*'bogus'"):
        plugin.process(photo, {"bogus": 1})
    with pytest.raises(ValueError, match="must be a number"):
        plugin.process(photo, {"threshold": "high"})
