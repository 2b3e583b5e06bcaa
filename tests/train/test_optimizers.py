"""Every registered optimizer trains; Lookahead follows the published algorithm step by step;
schedules follow their formulas."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from stylestream.models import build_model
from stylestream.registry import UnknownNameError
from stylestream.train.lookahead import Lookahead
from stylestream.train.losses import PerceptualLoss
from stylestream.train.optimizers import OPTIMIZERS, make_optimizer, needs_closure
from stylestream.train.schedules import SCHEDULES, make_schedule
from stylestream.train.step import train_step

STUDY_OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rprop", "rmsprop", "adam",
                    "adamax", "amsgrad", "nadam", "radam", "adamw", "lbfgs", "lbfgsb", "lookahead"]  # fmt: skip


def test_registry_holds_the_study_optimizers_and_lookahead_variants():
    names = OPTIMIZERS.names()
    assert set(STUDY_OPTIMIZERS) <= set(names)
    assert {f"lookahead-{b}" for b in STUDY_OPTIMIZERS if b != "lookahead"} <= set(names)
    assert needs_closure("lbfgs") and needs_closure("lookahead-lbfgs") and not needs_closure("adam")
    assert needs_closure("lbfgsb") and needs_closure("lookahead-lbfgsb")
    with pytest.raises(UnknownNameError, match="unknown optimizer 'adamm'; choose one of: sgd, momentum"):
        make_optimizer("adamm", [torch.zeros(1, requires_grad=True)])


def test_defaults_are_torchs_except_the_learning_rate():
    p = [torch.zeros(2, requires_grad=True)]
    for name in ("sgd", "adam", "adadelta", "rmsprop", "lbfgs"):
        assert make_optimizer(name, p).defaults["lr"] == 1e-3
    assert make_optimizer("momentum", p).defaults["momentum"] == 0.9
    assert make_optimizer("nesterov", p).defaults["nesterov"] is True
    assert make_optimizer("amsgrad", p).defaults["amsgrad"] is True
    assert make_optimizer("adam", p).defaults["betas"] == (0.9, 0.999)
    la = make_optimizer("lookahead", p, lr=0.01)
    assert isinstance(la, Lookahead) and isinstance(la.base, torch.optim.Adam)
    assert (la.k, la.alpha, la.param_groups[0]["lr"]) == (5, 0.5, 0.01)


@pytest.fixture(scope="module")
def tiny_problem(vgg, media):
    from stylestream.train.images import load_image

    style = load_image(media / "styles" / "mosaic.jpg", size=32)
    x = load_image(media / "content" / "chicago.jpg", size=32)[..., :24, :32].repeat(2, 1, 1, 1)
    loss = PerceptualLoss(vgg, style)
    return loss, x, loss.content_targets(x)


# Learning rates for this tiny problem (random VGG-16, lambda_s = 1e10: large raw gradients), not advice.
# The adaptive optimizers normalise the gradient, so the study's 1e-3 works for them; SGD's step (and
# RAdam's during its un-rectified warm-up) is lr times the raw gradient, so it needs a tiny lr here;
# RMSprop's first steps are 1/sqrt(1 - alpha) = 10x its lr. L-BFGS line-searches from its usual lr 1;
# L-BFGS-B has no lr.
TEST_LR = {"sgd": 1e-8, "momentum": 1e-8, "nesterov": 1e-8, "radam": 1e-8, "lbfgs": 1.0, "rmsprop": 1e-4}


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_takes_steps_and_lowers_the_loss(name, tiny_problem):
    loss, x, targets = tiny_problem
    torch.manual_seed(0)
    model = build_model("johnson", width=8, res_blocks=1)
    base = name.removeprefix("lookahead-")
    kw = {"k": 2} if name.startswith("lookahead") else {}  # k = 2: two slow-weight syncs in 4 steps
    opt = make_optimizer(name, model.parameters(), lr=TEST_LR.get(base, 1e-3), **kw)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        start = loss(model(x), targets)["total"].item()
    for _ in range(4):
        train_step(model, opt, loss, x, targets, closure=needs_closure(name))
    with torch.no_grad():
        end = loss(model(x), targets)["total"].item()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "no parameter moved"
    assert math.isfinite(end) and end < start, f"{name}: loss {start:.6g} -> {end:.6g}"


def _toy():
    """Least squares on fixed data: the parameters, a batch sequence, and the loss."""
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(8, 3, generator=g, dtype=torch.float64),
        torch.randn(8, generator=g, dtype=torch.float64),
    )
    w0 = torch.randn(3, generator=g, dtype=torch.float64)
    return w0, lambda w, t: ((a[t % 8 :][:4] @ w - b[t % 8 :][:4]) ** 2).mean()


def _reference_lookahead(w0, loss_fn, fast_step, k, alpha, steps):
    """Zhang et al. 2019, Algorithm 1, written out directly."""
    slow, fast, trajectory = w0.clone(), w0.clone(), []
    for t in range(steps):
        fast = fast_step(fast, loss_fn, t)
        if (t + 1) % k == 0:
            slow = slow + alpha * (fast - slow)
            fast = slow.clone()
        trajectory.append(fast.clone())
    return trajectory


@pytest.mark.parametrize("k,alpha", [(5, 0.5), (3, 0.8)])
def test_lookahead_sgd_matches_the_algorithm_step_by_step(k, alpha):
    w0, loss_fn, lr = *_toy(), 0.05

    def sgd_step(w, f, t):
        w = w.clone().requires_grad_()
        (grad,) = torch.autograd.grad(f(w, t), w)
        return (w - lr * grad).detach()

    expected = _reference_lookahead(w0, loss_fn, sgd_step, k, alpha, 13)
    w = w0.clone().requires_grad_()
    opt = make_optimizer("lookahead-sgd", [w], lr=lr, k=k, alpha=alpha)
    for t in range(13):
        opt.zero_grad()
        loss_fn(w, t).backward()
        opt.step()
        torch.testing.assert_close(w.detach(), expected[t], rtol=1e-12, atol=1e-12, msg=f"step {t + 1}")


def test_lookahead_adam_keeps_the_inner_state_across_syncs():
    """The algorithm resets the fast weights, not the inner optimizer's moments."""
    w0, loss_fn = _toy()
    inner_w = w0.clone().requires_grad_()
    inner = torch.optim.Adam([inner_w], lr=0.1)

    def adam_step(w, f, t):
        with torch.no_grad():
            inner_w.copy_(w)
        inner.zero_grad()
        f(inner_w, t).backward()
        inner.step()
        return inner_w.detach().clone()

    expected = _reference_lookahead(w0, loss_fn, adam_step, 5, 0.5, 12)
    w = w0.clone().requires_grad_()
    opt = make_optimizer("lookahead", [w], lr=0.1)
    for t in range(12):
        opt.zero_grad()
        loss_fn(w, t).backward()
        opt.step()
        torch.testing.assert_close(w.detach(), expected[t], rtol=1e-12, atol=1e-12, msg=f"step {t + 1}")


def test_lookahead_state_dict_resumes_exactly_and_schedules_reach_the_base():
    w0, loss_fn = _toy()

    def run(steps, opt, sched, w, start=0):
        for t in range(start, steps):
            opt.zero_grad()
            loss_fn(w, t).backward()
            opt.step()
            sched.step()

    w = w0.clone().requires_grad_()
    opt = make_optimizer("lookahead-adam", [w], lr=0.1)
    sched = make_schedule("cosine", opt, 12)
    run(12, opt, sched, w)

    w2 = w0.clone().requires_grad_()
    opt2 = make_optimizer("lookahead-adam", [w2], lr=0.1)
    sched2 = make_schedule("cosine", opt2, 12)
    run(7, opt2, sched2, w2)
    saved_w, saved_opt, saved_sched = (
        w2.detach().clone(),
        copy.deepcopy(opt2.state_dict()),
        sched2.state_dict(),
    )

    w3 = saved_w.clone().requires_grad_()
    opt3 = make_optimizer("lookahead-adam", [w3], lr=0.1)
    sched3 = make_schedule("cosine", opt3, 12)
    opt3.load_state_dict(saved_opt)
    sched3.load_state_dict(saved_sched)
    assert opt3.base.param_groups[0]["lr"] == opt2.base.param_groups[0]["lr"] < 0.1
    run(12, opt3, sched3, w3, start=7)
    assert torch.equal(w3.detach(), w.detach())


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_schedules_follow_their_formulas(name):
    total, lr0 = 20, 0.5
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr0)
    sched = make_schedule(name, opt, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    t = torch.arange(total, dtype=torch.float64)
    expected = {
        "constant": torch.full((total,), lr0, dtype=torch.float64),
        "step": lr0 * 0.1 ** torch.div(t, 7, rounding_mode="floor"),  # ceil(20 / 3) = 7
        "exponential": lr0 * 0.01 ** (t / total),
        "inverse-time": lr0 / (1 + (9 / total) * t),
        "cosine": lr0 * (1 + torch.cos(math.pi * t / total)) / 2,
    }[name]
    torch.testing.assert_close(torch.tensor(lrs, dtype=torch.float64), expected, rtol=1e-9, atol=1e-12)
    assert lrs[0] == lr0


def test_unknown_schedule_lists_the_choices():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1)
    with pytest.raises(UnknownNameError, match="unknown schedule 'linear'; choose one of: constant, step"):
        make_schedule("linear", opt, 10)


def test_lbfgsb_is_scipys_l_bfgs_b_within_its_bounds():
    """On a box-constrained quadratic whose minimum lies outside the box, LBFGSB ends where SciPy's own
    L-BFGS-B does: on the bound, with the other coordinates at the minimum."""
    from scipy.optimize import minimize

    target = torch.tensor([300.0, 100.0, -20.0, 254.0], dtype=torch.float64)
    x = torch.full((4,), 128.0, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer("lbfgsb", [x], bounds=(0.0, 255.0), max_iter=50)
    evaluations = []

    def closure():
        opt.zero_grad()
        loss = ((x - target) ** 2 * torch.arange(1, 5)).sum()
        loss.backward()
        evaluations.append(loss.item())
        return loss

    first = opt.step(closure)
    assert first.item() == evaluations[0]
    torch.testing.assert_close(x.detach(), torch.tensor([255.0, 100.0, 0.0, 254.0], dtype=torch.float64))
    w = target.numpy()
    ref = minimize(lambda v: float((((v - w) ** 2) * [1, 2, 3, 4]).sum()), [128.0] * 4, method="L-BFGS-B",
                   bounds=[(0, 255)] * 4)  # fmt: skip
    np_x = x.detach().numpy()
    assert abs(np_x - ref.x).max() < 1e-3 and len(evaluations) <= 50 * 5 // 4
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()


def test_lbfgsb_without_scipy_is_a_one_line_error_before_any_work(monkeypatch, make_cfg, tmp_path):
    import builtins

    from stylestream.train.config import ConfigError
    from stylestream.train.loop import train
    from stylestream.train.optimize import OptimizeConfig, check_config

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("No module named 'scipy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(ConfigError, match="optimizer lbfgsb needs SciPy .*pip install scipy"):
        train(make_cfg(optimizer="lbfgsb"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="optimizer lbfgsb needs SciPy"):
        check_config(OptimizeConfig(content=tmp_path, style=tmp_path, out=tmp_path / "o.png", optimizer="lookahead-lbfgsb"))
