"""Lockstep training reproduces sequential `train` runs: same losses, same weights."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from stylestream.models import load_model
from stylestream.train.config import ConfigError
from stylestream.train.lockstep import make_shared, train_lockstep
from stylestream.train.loop import train


def totals(run_dir: Path) -> list[float]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [float(r["total"]) for r in csv.DictReader(f)]


def test_lockstep_equals_sequential(make_cfg, tmp_path):
    # different optimizers, lrs and schedules; 4 steps of batch 4 over 6 images cross an epoch
    settings = [("adam", 1e-2, "constant"), ("rmsprop", 1e-3, "cosine"), ("nadam", 1e-3, "step")]
    kw = {"steps": 4, "batch_size": 4}
    seq = {}
    for opt, lr, sched in settings:
        r = train(make_cfg(out=str(tmp_path / f"seq-{opt}"), optimizer=opt, lr=lr, schedule=sched, **kw))
        seq[opt] = r
    cfgs = [make_cfg(out=str(tmp_path / f"ls-{opt}"), optimizer=opt, lr=lr, schedule=sched, **kw)
            for opt, lr, sched in settings]  # fmt: skip
    done = []
    outcomes = train_lockstep(cfgs, make_shared(cfgs[0]), progress=False,
                              on_done=lambda cfg, oc, model: done.append(cfg.optimizer))  # fmt: skip
    assert sorted(done) == sorted(s[0] for s in settings)
    for (opt, _, _), oc in zip(settings, outcomes):
        assert oc.status == "ok" and oc.step == 4
        a, b = totals(tmp_path / f"seq-{opt}"), totals(tmp_path / f"ls-{opt}")
        assert len(a) == len(b) == 4
        assert b == pytest.approx(a, rel=1e-5)
        assert b[0] == pytest.approx(totals(tmp_path / "seq-adam")[0], rel=1e-6)  # same init, same batch
        ma, mb = load_model(tmp_path / f"seq-{opt}/model.pt"), load_model(tmp_path / f"ls-{opt}/model.pt")
        for pa, pb in zip(ma.state_dict().values(), mb.state_dict().values()):
            torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6)
    # the optimizers really differ: their weights after 4 steps are not the same
    w = [load_model(tmp_path / f"ls-{o}/model.pt").state_dict() for o, _, _ in settings]
    assert not torch.equal(next(iter(w[0].values())), next(iter(w[1].values())))


def test_lockstep_refuses_mixed_groups(make_cfg, tmp_path):
    cfgs = [make_cfg(out=str(tmp_path / "a")), make_cfg(out=str(tmp_path / "b"), batch_size=3)]
    with pytest.raises(ConfigError, match="differ in batch_size"):
        train_lockstep(cfgs, make_shared(cfgs[0]), progress=False)


def test_lockstep_runs_follow_the_folder_rules_of_train(make_cfg, tmp_path, caplog):
    """A run killed before its first checkpoint: --resume starts over (and says so), a plain run is
    refused naming both flags, --overwrite starts afresh; exactly as `train` does."""

    def killed_early(out: Path) -> None:
        out.mkdir()
        (out / "metrics.csv").write_text(
            "step,epoch,content,style,tv,total,lr,images/s,seconds\n1,0,1,1,0,2,0.001,1,1\n"
        )
        (out / "card.json").write_text('{"status": "running"}')

    for name in ("seq", "ls"):
        killed_early(tmp_path / name)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume to continue it, --overwrite"):
        train(make_cfg(out=str(tmp_path / "seq"), steps=2))
    cfg = make_cfg(out=str(tmp_path / "ls"), steps=2)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume to continue it, --overwrite"):
        train_lockstep([cfg], make_shared(cfg), progress=False)

    caplog.clear()
    assert train(make_cfg(out=str(tmp_path / "seq"), steps=2, resume=True)).step == 2
    (oc,) = train_lockstep([make_cfg(out=str(tmp_path / "ls"), steps=2, resume=True)], make_shared(cfg),
                           progress=False)  # fmt: skip
    assert oc.status == "ok" and oc.step == 2
    said = [r.getMessage() for r in caplog.records if "starting over from step 0" in r.getMessage()]
    assert said == [f"--resume: {tmp_path / n} has no checkpoint yet (the run stopped before its first one); "
                    "starting over from step 0" for n in ("seq", "ls")]  # fmt: skip
    assert totals(tmp_path / "ls") == pytest.approx(totals(tmp_path / "seq"), rel=1e-5)  # both from step 0

    (oc,) = train_lockstep([make_cfg(out=str(tmp_path / "ls"), steps=3, overwrite=True)], make_shared(cfg),
                           progress=False)  # fmt: skip
    assert oc.step == 3 and len(totals(tmp_path / "ls")) == 3


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_model(Path(run_dir) / "model.pt").state_dict()


def test_train_is_a_lockstep_group_of_one(make_cfg, tmp_path):
    kw = {"steps": 4, "optimizer": "lookahead", "schedule": "cosine", "lr": 2e-3, "checkpoint_every": 2}
    alone = train(make_cfg(out=str(tmp_path / "train"), **kw))
    cfg = make_cfg(out=str(tmp_path / "group"), **kw)
    (oc,) = train_lockstep([cfg], make_shared(cfg), progress=False)
    assert alone.status == oc.status == "ok" and alone.step == oc.step == 4
    assert totals(tmp_path / "train") == totals(tmp_path / "group")
    a, b = weights(tmp_path / "train"), weights(tmp_path / "group")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    same = ("kind", "status", "vgg_weights", "device", "amp", "dataset", "style_image", "total_steps", "step")
    assert {k: alone.card[k] for k in same} == {k: oc.card[k] for k in same}


def test_ctrl_c_mid_group_checkpoints_each_run_at_its_own_last_step(make_cfg, tmp_path):
    """Ctrl-C after the first run's step 2 and before the second's: each checkpoint holds the steps its
    run really took, and resuming each gives the weights of the group that was never stopped."""
    settings = (("a", "adam", 1e-2), ("b", "rmsprop", 1e-3))

    def cfgs(prefix: str, **kw) -> list:
        return [make_cfg(out=str(tmp_path / f"{prefix}-{name}"), optimizer=opt, lr=lr, steps=4, **kw)
                for name, opt, lr in settings]  # fmt: skip

    train_lockstep(cfgs("straight"), make_shared(cfgs("straight")[0]), progress=False)

    def interrupt(cfg, step, losses):
        if cfg.optimizer == "adam" and step == 2:
            raise KeyboardInterrupt

    stopped = cfgs("stopped")
    with pytest.raises(KeyboardInterrupt):
        train_lockstep(stopped, make_shared(stopped[0]), progress=False, on_step=interrupt)
    steps = [torch.load(Path(c.out) / "checkpoint.pt", weights_only=True)["step"] for c in stopped]
    assert steps == [2, 1]
    with pytest.raises(ConfigError, match=r"resume from different steps: \[1, 2\]"):
        train_lockstep(cfgs("stopped", resume=True), make_shared(stopped[0]), progress=False)
    for cfg in cfgs("stopped", resume=True):  # one group each, as a resumed sweep groups them
        (oc,) = train_lockstep([cfg], make_shared(cfg), progress=False)
        assert oc.status == "ok" and oc.step == 4
    for name, _, _ in settings:
        a, b = weights(tmp_path / f"straight-{name}"), weights(tmp_path / f"stopped-{name}")
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert totals(tmp_path / f"straight-{name}") == totals(tmp_path / f"stopped-{name}")


def test_lockstep_checkpoint_holds_and_restores_the_cuda_rng(make_cfg, tmp_path, monkeypatch):
    """With CUDA in use its generators are saved and restored with the others. This machine has no GPU,
    so CUDA's generator state is faked: saved from get_rng_state_all, handed back to set_rng_state_all."""
    cuda_state = [torch.arange(16, dtype=torch.uint8)]
    restored: list = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [t.clone() for t in cuda_state])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(list(states)))

    def interrupt(cfg, step, losses):
        if step == 2:
            raise KeyboardInterrupt

    cfg = make_cfg(out=str(tmp_path / "run"), steps=3)
    with pytest.raises(KeyboardInterrupt):
        train_lockstep([cfg], make_shared(cfg), progress=False, on_step=interrupt)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["rng"]
    assert set(saved) == {"torch", "python", "cuda"} and torch.equal(saved["cuda"][0], cuda_state[0])

    cuda_state[0] = torch.zeros(16, dtype=torch.uint8)  # the generator moved on since the checkpoint
    (oc,) = train_lockstep([make_cfg(out=str(tmp_path / "run"), steps=3, resume=True)], make_shared(cfg),
                           progress=False)  # fmt: skip
    assert oc.status == "ok" and oc.step == 3
    assert len(restored) == 1 and torch.equal(restored[0][0], torch.arange(16, dtype=torch.uint8))
