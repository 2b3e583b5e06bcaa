"""The fused lockstep pass (--fused): one VGG pass and one backward for a group's models gives what
their own passes give (to float rounding), leaves a diverging model out, lets L-BFGS take its own
pass, resumes exactly, and is chosen by device (auto: CUDA only)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from stylestream.cli import main
from stylestream.models import build_model, load_model
from stylestream.train import lockstep
from stylestream.train.config import ConfigError
from stylestream.train.fused import Member, fused_backward, fused_wanted
from stylestream.train.lockstep import auto_parallel, make_shared, train_lockstep
from stylestream.train.loop import train
from stylestream.train.losses import PerceptualLoss
from stylestream.train.temporal_loss import move_batch

# fused and unfused differ only by the batch size VGG's kernels see: float rounding, amplified a little
# by the optimizers over a few steps
REL = 1e-5
# on CUDA cuDNN picks other kernels for the stacked batch than for one model's (and autotunes them); with
# TF32 off only float32 rounding remains. This bound is an estimate: the test has not yet run on a GPU
REL_CUDA = 1e-4


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_model(Path(run_dir) / "model.pt").state_dict()


def rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b|| over every float tensor of two state dicts."""
    keys = [k for k in b if b[k].is_floating_point()]
    num = sum(float(((a[k] - b[k]) ** 2).sum()) for k in keys)
    return (num / sum(float((b[k] ** 2).sum()) for k in keys)) ** 0.5


def initial_weights(seed: int = 42) -> dict[str, torch.Tensor]:
    """The weights every run of seed `seed` starts from (lockstep seeds torch, then builds the net)."""
    torch.manual_seed(seed)
    return build_model("johnson").state_dict()


def card(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "card.json").read_text())


def test_auto_is_on_for_cuda_only():
    assert fused_wanted("auto", torch.device("cuda", 0)) and not fused_wanted("auto", torch.device("cpu"))
    assert fused_wanted("on", torch.device("cpu")) and not fused_wanted("off", torch.device("cuda"))


# (name, optimizer, lr, schedule, temporal weight): three optimizers with different state, one with the
# temporal term (its partner frames go through the network in the fused pass too)
SETTINGS = [("adam", "adam", 1e-2, "constant", 0.0), ("rmsprop", "rmsprop", 1e-3, "cosine", 10.0),
            ("adagrad", "adagrad", 1e-2, "step", 0.0)]  # fmt: skip


def test_fused_equals_unfused_equals_sequential(make_cfg, tmp_path):
    kw = {"steps": 4, "batch_size": 4, "device": "cpu"}  # 4 steps of 4 over 6 images cross an epoch

    def group(fused: str) -> list:
        return [make_cfg(out=str(tmp_path / f"{fused}-{name}"), optimizer=opt, lr=lr, schedule=sched,
                         temporal_weight=tw, fused=fused, **kw)
                for name, opt, lr, sched, tw in SETTINGS]  # fmt: skip

    for fused in ("on", "off"):
        cfgs = group(fused)
        assert all(oc.status == "ok" for oc in train_lockstep(cfgs, make_shared(cfgs[0]), progress=False))
    init = initial_weights()
    for name, opt, lr, sched, tw in SETTINGS:
        seq = train(make_cfg(out=str(tmp_path / f"seq-{name}"), optimizer=opt, lr=lr, schedule=sched,
                             temporal_weight=tw, **kw))  # fmt: skip
        assert seq.status == "ok" and seq.card["fused"]["used"] is False  # auto: off on CPU
        on, off, alone = (weights(tmp_path / f"{p}-{name}") for p in ("on", "off", "seq"))
        assert rel_diff(alone, init) > 1e-3, name  # every run's weights moved: the comparison means something
        assert rel_diff(on, alone) < REL and rel_diff(off, alone) < REL, name
        assert card(tmp_path / f"on-{name}")["fused"] == {"mode": "on", "used": True, "fused_runs": 3}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_equals_unfused_on_cuda(make_cfg, tmp_path, monkeypatch):
    """Where fused is the default. TF32 convolutions (torch's default on CUDA) are off here so that what
    remains is the float32 rounding of the kernels cuDNN picks for the stacked vs the single batch."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    kw = {"steps": 4, "batch_size": 4, "device": "cuda"}
    for fused in ("on", "off"):
        cfgs = [make_cfg(out=str(tmp_path / f"{fused}-{name}"), optimizer=opt, lr=lr, schedule=sched,
                         temporal_weight=tw, fused=fused, **kw)
                for name, opt, lr, sched, tw in SETTINGS]  # fmt: skip
        outcomes = train_lockstep(cfgs, make_shared(cfgs[0]), progress=False)
        assert all(oc.status == "ok" for oc in outcomes)
        assert all(oc.card["fused"]["used"] is (fused == "on") for oc in outcomes)
    for name, *_ in SETTINGS:
        on, off = weights(tmp_path / f"on-{name}"), weights(tmp_path / f"off-{name}")
        assert rel_diff(off, initial_weights()) > 1e-3 and rel_diff(on, off) < REL_CUDA, name


def test_lbfgs_takes_its_own_pass_in_a_fused_group(make_cfg, tmp_path):
    kw = {"steps": 2, "device": "cpu"}
    cfgs = [make_cfg(out=str(tmp_path / "adam"), optimizer="adam", lr=1e-2, fused="on", **kw),
            make_cfg(out=str(tmp_path / "lbfgs"), optimizer="lbfgs", lr=1e-4, fused="on", **kw)]  # fmt: skip
    assert all(oc.status == "ok" for oc in train_lockstep(cfgs, make_shared(cfgs[0]), progress=False))
    c = card(tmp_path / "lbfgs")["fused"]
    assert c["used"] is False and "lbfgs re-evaluates its loss" in c["why_not"] and c["fused_runs"] == 1
    assert card(tmp_path / "adam")["fused"]["used"] is True
    alone = train(make_cfg(out=str(tmp_path / "alone"), optimizer="lbfgs", lr=1e-4, **kw))
    a, b = weights(tmp_path / "lbfgs"), weights(Path(alone.run_dir))
    assert rel_diff(b, initial_weights()) > 1e-3  # L-BFGS did move (lr 1e-8 would not)
    # its own pass in the group: what it takes alone, bit for bit
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_diverging_model_leaves_the_others_untouched(make_cfg, tmp_path):
    kw = {"steps": 4, "fused": "on"}
    cfgs = [make_cfg(out=str(tmp_path / "adam"), optimizer="adam", lr=1e-2, **kw),
            make_cfg(out=str(tmp_path / "sgd"), optimizer="sgd", lr=1e30, **kw)]  # fmt: skip
    outcomes = train_lockstep(cfgs, make_shared(cfgs[0]), progress=False)
    assert [oc.status for oc in outcomes] == ["diverged", "ok"]  # outcomes in the order the runs ended
    alone = train(make_cfg(out=str(tmp_path / "alone"), optimizer="adam", lr=1e-2, steps=4, fused="on"))
    assert rel_diff(weights(tmp_path / "adam"), weights(Path(alone.run_dir))) < REL


def test_fused_backward_leaves_a_nan_model_out(vgg):
    torch.manual_seed(0)
    loss = PerceptualLoss(vgg, torch.rand(1, 3, 32, 32) * 255)
    x = torch.rand(2, 3, 32, 32) * 255
    targets = loss.content_targets(x)
    bad, good = build_model("johnson"), build_model("johnson")
    solo = copy.deepcopy(good)
    with torch.no_grad():
        next(bad.parameters()).fill_(float("nan"))
    members = [Member(m, torch.optim.SGD(m.parameters(), lr=1.0), None, 10.0) for m in (bad, good)]
    res = fused_backward(members, loss, x, targets, amp_dtype=None, moved=move_batch(x, 42, 1))
    assert [r.backward for r in res] == [False, True]
    assert not torch.isfinite(res[0].terms["total"]) and torch.isfinite(res[1].terms["total"])
    assert all(p.grad is None for p in bad.parameters())
    # the good model's gradients are those of its own loss alone (with its temporal term)
    from stylestream.train.step import add_temporal, model_outputs

    moved = move_batch(x, 42, 1)
    y, y_moved = model_outputs(solo, x, moved)
    add_temporal(loss(y, targets), 10.0, moved, y, y_moved)["total"].backward()
    for p, q in zip(good.parameters(), solo.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6 * float(q.grad.abs().max()))


def test_resumed_fused_group_equals_uninterrupted(make_cfg, tmp_path):
    def cfgs(prefix: str, **kw) -> list:
        return [make_cfg(out=str(tmp_path / f"{prefix}-{o}"), optimizer=o, lr=1e-2, steps=5, fused="on",
                         checkpoint_every=2, temporal_weight=5.0, **kw) for o in ("adam", "nadam")]  # fmt: skip

    straight = cfgs("straight")
    train_lockstep(straight, make_shared(straight[0]), progress=False)

    def interrupt(cfg, step, losses):
        if cfg.optimizer == "nadam" and step == 3:  # both runs finished step 3
            raise KeyboardInterrupt

    stopped = cfgs("stopped")
    with pytest.raises(KeyboardInterrupt):
        train_lockstep(stopped, make_shared(stopped[0]), progress=False, on_step=interrupt)
    assert [torch.load(Path(c.out) / "checkpoint.pt", weights_only=True)["step"] for c in stopped] == [3, 3]
    resumed = cfgs("stopped", resume=True)
    assert all(oc.status == "ok" for oc in train_lockstep(resumed, make_shared(resumed[0]), progress=False))
    for o in ("adam", "nadam"):
        a, b = weights(tmp_path / f"straight-{o}"), weights(tmp_path / f"stopped-{o}")
        assert all(torch.equal(a[k], b[k]) for k in a), o


def test_a_failed_fused_pass_falls_back_to_own_passes(make_cfg, tmp_path, monkeypatch):
    real = lockstep.fused_backward
    calls = []

    def fails_at_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(lockstep, "fused_backward", fails_at_step_2)

    def group(prefix: str, fused: str) -> list:
        return [make_cfg(out=str(tmp_path / f"{prefix}-{o}"), optimizer=o, lr=1e-2, steps=4, fused=fused)
                for o in ("adam", "rmsprop")]  # fmt: skip

    cfgs = group("fell", "on")
    assert [oc.status for oc in train_lockstep(cfgs, make_shared(cfgs[0]), progress=False)] == ["ok", "ok"]
    assert len(calls) == 2  # no fused pass after the failure
    for c in cfgs:
        f = card(Path(c.out))["fused"]
        assert f["used"] is False and "failed at step 2 (RuntimeError: out of memory (simulated))" in f["why_not"]
    ref = group("ref", "off")
    train_lockstep(ref, make_shared(ref[0]), progress=False)
    for o in ("adam", "rmsprop"):  # the failed pass changed nothing: the batch was redone unfused
        assert rel_diff(weights(tmp_path / f"fell-{o}"), weights(tmp_path / f"ref-{o}")) < REL


def test_a_group_agrees_on_fused(make_cfg, tmp_path):
    cfgs = [make_cfg(out=str(tmp_path / "a"), fused="on"), make_cfg(out=str(tmp_path / "b"), fused="off")]
    with pytest.raises(ConfigError, match="differ in fused"):
        train_lockstep(cfgs, make_shared(cfgs[0]), progress=False)
    with pytest.raises(ConfigError, match="unknown --fused 'yes'; choose one of: auto, on, off"):
        make_cfg(fused="yes").validate()


def test_fused_memory_budget_counts_every_runs_activations(make_cfg, monkeypatch):
    monkeypatch.setattr(lockstep, "available_bytes", lambda device: 8 << 30)
    act = 1 << 30
    cpu = torch.device("cpu")
    unfused = auto_parallel(make_cfg(fused="off"), ["adam"] * 8, cpu, act)  # 4 GiB - 1 GiB: all 8 fit
    fused = auto_parallel(make_cfg(fused="on"), ["adam"] * 8, cpu, act)  # 1 GiB + weights each: 3 fit
    assert unfused == 8 and fused == 3


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["train", *args])
    return code, capsys.readouterr().out


def test_cli_fused_on_trains_on_cpu_and_auto_stays_off(tiny_data, style_path, tmp_path, capsys):
    base = ["--style", str(style_path), "--data", str(tiny_data), "--vgg-weights", "random", "--image-size", "32",
            "--batch-size", "2", "--steps", "2", "--no-progress", "--no-amp"]  # fmt: skip
    code, out = _cli([*base, "--out", str(tmp_path / "on"), "--fused", "on"], capsys)
    assert code == 0 and "ok: 2 steps" in out
    assert card(tmp_path / "on")["fused"] == {"mode": "on", "used": True, "fused_runs": 1}
    code, out = _cli([*base, "--out", str(tmp_path / "auto")], capsys)
    assert code == 0
    assert card(tmp_path / "auto")["fused"] == {"mode": "auto", "used": False, "fused_runs": 0,
                                                "why_not": "--fused auto (auto: on for CUDA only, this is cpu)"}  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(["train", *base, "--out", str(tmp_path / "bad"), "--fused", "maybe"])
    assert exc.value.code == 2 and "invalid choice: 'maybe'" in capsys.readouterr().err
