"""The perceptual loss against direct computations of the formulas, and the VGG-16 loader."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stylestream.train.losses import PerceptualLoss, gram_matrix, total_variation
from stylestream.train.vgg import ENV_VAR, LAYERS, VGGWeightsError, load_vgg


def test_gram_matrix_matches_definition():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    n, c, h, w = f.shape
    expected = torch.zeros(n, c, c, dtype=torch.float64)
    for b in range(n):
        for i in range(c):
            for j in range(c):
                expected[b, i, j] = (f[b, i] * f[b, j]).sum() / (c * h * w)
    torch.testing.assert_close(gram_matrix(f), expected.float())


def _direct_vgg(vgg, x):
    """Run the raw Sequential by hand: ImageNet normalization, then record each named ReLU."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = (x / 255.0 - mean) / std
    out = {}
    for i, layer in enumerate(vgg.features):
        h = layer(h)
        for name, idx in LAYERS.items():
            if idx == i:
                out[name] = h.clone()
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_terms_match_the_formulas(vgg, reduction):
    g = torch.Generator().manual_seed(1)
    style = torch.rand(1, 3, 40, 36, generator=g) * 255
    x = torch.rand(2, 3, 32, 32, generator=g) * 255
    y = torch.rand(2, 3, 32, 32, generator=g) * 255
    lc, ls, ltv = 1e5, 1e10, 1e-3
    loss = PerceptualLoss(vgg, style, lc, ls, ltv, style_reduction=reduction)
    terms = loss(y, loss.content_targets(x))

    fs, fx, fy = _direct_vgg(vgg, style), _direct_vgg(vgg, x), _direct_vgg(vgg, y)
    c, h, w = fy["relu2_2"].shape[1:]
    content = sum(((fy["relu2_2"][b] - fx["relu2_2"][b]) ** 2).sum() / (c * h * w) for b in range(2)) / 2
    style_sum = 0.0
    for name in ("relu1_2", "relu2_2", "relu3_3", "relu4_3"):
        c = fy[name].shape[1]
        gs = gram_matrix(fs[name])[0]
        for b in range(2):
            d = ((gram_matrix(fy[name][b : b + 1])[0] - gs) ** 2).sum()
            style_sum = style_sum + (d / c**2 if reduction == "mean" else d) / 2
    tv = (((y[..., 1:, :] - y[..., :-1, :]) ** 2).sum() + ((y[..., 1:] - y[..., :-1]) ** 2).sum()) / 2

    torch.testing.assert_close(terms["content"], lc * content, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["style"], ls * style_sum, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["tv"], ltv * tv, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["total"], terms["content"] + terms["style"] + terms["tv"])
    assert terms["style"] > 0 and terms["content"] > 0


def test_sum_convention_is_mean_times_channels_squared(vgg):
    style = torch.rand(1, 3, 32, 32) * 255
    y = torch.rand(1, 3, 32, 32) * 255
    mean_loss = PerceptualLoss(vgg, style, content_weight=0, style_weight=1, style_reduction="mean")
    sum_loss = PerceptualLoss(vgg, style, content_weight=0, style_weight=1, style_reduction="sum")
    feats = vgg(y)
    per_layer = [F.mse_loss(gram_matrix(feats[k]), gram_matrix(vgg(style)[k])) for k in feats]
    channels = [feats[k].shape[1] for k in feats]
    targets = mean_loss.content_targets(y)
    torch.testing.assert_close(mean_loss(y, targets)["style"], sum(per_layer))
    torch.testing.assert_close(
        sum_loss(y, targets)["style"], sum(p * c * c for p, c in zip(per_layer, channels))
    )


def test_content_targets_stop_at_relu2_2_and_match_a_full_pass(vgg):
    x = torch.rand(2, 3, 32, 32) * 255
    loss = PerceptualLoss(vgg, torch.rand(1, 3, 32, 32) * 255)
    targets = loss.content_targets(x)
    assert list(targets) == ["relu2_2"] and not targets["relu2_2"].requires_grad
    torch.testing.assert_close(targets["relu2_2"], _direct_vgg(vgg, x)["relu2_2"])


def test_loss_is_differentiable_and_vgg_frozen(vgg):
    loss = PerceptualLoss(vgg, torch.rand(1, 3, 32, 32) * 255)
    vgg.train()  # must stay in eval mode regardless
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())
    y = (torch.rand(1, 3, 32, 32) * 255).requires_grad_()
    loss(y, loss.content_targets(torch.rand(1, 3, 32, 32) * 255))["total"].backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_bf16_autocast_stays_close_to_float32(vgg):
    g = torch.Generator().manual_seed(2)
    loss = PerceptualLoss(vgg, torch.rand(1, 3, 48, 48, generator=g) * 255)
    x, y = torch.rand(2, 3, 48, 48, generator=g) * 255, torch.rand(2, 3, 48, 48, generator=g) * 255
    ref = loss(y, loss.content_targets(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = loss(y, loss.content_targets(x))
    for k in ("content", "style", "total"):
        assert amp[k].dtype == torch.float32
        torch.testing.assert_close(amp[k], ref[k], rtol=0.03, atol=0)


def test_random_vgg_is_seeded():
    a, b, c = load_vgg("random", seed=3), load_vgg("random", seed=3), load_vgg("random", seed=4)
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    assert "random" in a.weights_desc and "NOT ImageNet" in a.weights_desc


@pytest.mark.parametrize("layout", ["vgg16", "features"])
def test_vgg_weights_from_a_state_dict_file(tmp_path, vgg, layout):
    if layout == "vgg16":  # a torchvision vgg16 state_dict, classifier included
        state = {f"features.{k}": v for k, v in vgg.features.state_dict().items()}
        state["classifier.0.weight"] = torch.zeros(2, 2)
    else:
        state = vgg.features.state_dict()
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    loaded = load_vgg(str(path))
    x = torch.rand(1, 3, 32, 32) * 255
    torch.testing.assert_close(loaded(x)["relu4_3"], vgg(x)["relu4_3"])
    assert str(path) in loaded.weights_desc and "sha256" in loaded.weights_desc


def test_missing_vgg_weights_file_gives_a_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "nope.pth"
    with pytest.raises(
        VGGWeightsError, match=r"VGG-16 weights file .*nope.pth .*not found.*--vgg-weights PATH"
    ):
        load_vgg(str(missing))
    monkeypatch.setenv(ENV_VAR, str(missing))  # honoured by weights="imagenet"
    with pytest.raises(VGGWeightsError, match=rf"nope.pth \(from \${ENV_VAR}\) not found.*{ENV_VAR}=PATH"):
        load_vgg("imagenet")


def test_bad_vgg_weights_files_are_refused(tmp_path, vgg):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file" * 10)
    with pytest.raises(VGGWeightsError, match="garbage.pth .*not a readable torch file"):
        load_vgg(str(garbage))
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    with pytest.raises(VGGWeightsError, match="resnet.pth .*does not match torchvision's vgg16"):
        load_vgg(str(wrong))
    nan = tmp_path / "nan.pth"
    state = vgg.features.state_dict()
    state["0.weight"] = state["0.weight"].clone().fill_(float("nan"))
    torch.save(state, nan)
    with pytest.raises(VGGWeightsError, match=r"nan.pth .*NaN/Inf values in 0.weight"):
        load_vgg(str(nan))


def test_total_variation_of_a_constant_image_is_zero():
    assert total_variation(torch.full((2, 3, 9, 7), 100.0)) == 0


def test_vgg19_layers_are_the_relus_after_gatys_convs():
    """Gatys et al.'s conv1_1..conv5_1 and conv4_2, read after their ReLU: index i of .features is
    ReLU(conv), the conv being i - 1, and the conv counts per block follow VGG-19 (2, 2, 4, 4, 4)."""
    from torch import nn

    vgg19 = load_vgg("random", seed=0, net="vgg19")
    assert vgg19.title == "VGG-19" and len(vgg19.features) == 30  # up to relu5_1
    convs = [i for i, m in enumerate(vgg19.features) if isinstance(m, nn.Conv2d)]
    names = {}
    block, k = 1, 0
    for i, m in enumerate(vgg19.features):
        if isinstance(m, nn.MaxPool2d):
            block, k = block + 1, 0
        elif isinstance(m, nn.Conv2d):
            k += 1
            names[f"relu{block}_{k}"] = i + 1
    assert convs[:2] == [0, 2] and names["relu4_1"] == 20
    for layer, index in vgg19.layers.items():
        assert names[layer] == index and isinstance(vgg19.features[index], nn.ReLU), layer


def test_gatys_loss_reads_vgg19_at_its_layers(vgg):
    from stylestream.train.losses import LOSSES

    vgg19 = load_vgg("random", seed=0, net="vgg19")
    g = torch.Generator().manual_seed(3)
    style, x, y = (torch.rand(1, 3, 40, 40, generator=g) * 255 for _ in range(3))
    loss = PerceptualLoss(vgg19, style, content_weight=1.0, style_weight=1.0, layers=LOSSES["gatys"])
    assert list(loss.content_targets(x)) == ["relu4_2"]
    terms = loss(y, loss.content_targets(x))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h, hs, hx = ((t / 255.0 - mean) / std for t in (y, style, x))
    feats = {}
    for i, layer in enumerate(vgg19.features):
        h, hs, hx = layer(h), layer(hs), layer(hx)
        feats[i] = (h.clone(), hs.clone(), hx.clone())
    style_ref = sum(F.mse_loss(gram_matrix(feats[i][0]), gram_matrix(feats[i][1])) for i in (1, 6, 11, 20, 29))
    content_ref = F.mse_loss(feats[22][0], feats[22][2])
    torch.testing.assert_close(terms["style"], style_ref, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["content"], content_ref, rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="this loss reads VGG-19, got VGG-16"):
        PerceptualLoss(vgg, style, layers=LOSSES["gatys"])


def test_vgg19_weights_follow_the_same_offline_rules(tmp_path, vgg, monkeypatch):
    vgg19 = load_vgg("random", seed=1, net="vgg19")
    path = tmp_path / "vgg19.pth"
    state = {f"features.{k}": v for k, v in vgg19.features.state_dict().items()}
    state["features.30.weight"] = torch.zeros(1)  # deeper layers of a full vgg19 file are ignored
    torch.save(state, path)
    loaded = load_vgg(str(path), net="vgg19")
    x = torch.rand(1, 3, 32, 32) * 255
    torch.testing.assert_close(loaded(x)["relu5_1"], vgg19(x)["relu5_1"])
    monkeypatch.setenv("STYLESTREAM_VGG19_WEIGHTS", str(path))
    assert "sha256" in load_vgg("imagenet", net="vgg19").weights_desc
    vgg16_file = tmp_path / "vgg16.pth"
    torch.save(vgg.features.state_dict(), vgg16_file)
    with pytest.raises(VGGWeightsError, match="VGG-19 weights file .*vgg16.pth .*does not match torchvision's vgg19"):
        load_vgg(str(vgg16_file), net="vgg19")
    monkeypatch.setenv("STYLESTREAM_VGG19_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(VGGWeightsError, match=r"VGG-19 .*nope.pth \(from \$STYLESTREAM_VGG19_WEIGHTS\) not found"):
        load_vgg("imagenet", net="vgg19")
