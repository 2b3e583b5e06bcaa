"""Export fixtures: a johnson net fitted a few steps on real photos (so INT8 is meaningful), and
export options sized for 2 shared CPU cores (tiny frames, few of them)."""

from __future__ import annotations

import pytest

from stylestream.export import ExportOptions


@pytest.fixture(scope="session")
def fitted_model(media, tmp_path_factory):
    """(path, model): johnson fitted 30 Adam steps at 48 px toward a fixed colour-map target."""
    from stylestream.export.proxy import fit_proxy_model
    from stylestream.models import save_model

    model = fit_proxy_model(media / "content", steps=30, size=48, batch=2)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(model, path, card=model.stylestream_card)
    return path, model


@pytest.fixture
def opts(media):
    return ExportOptions(verify_sizes=[(48, 64), (37, 53)], verify_frames=2, calibration=media / "content",
                         calibration_frames=6, calibration_size=(48, 64), verify_images=media / "content")
