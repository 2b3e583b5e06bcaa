"""Lockstep training reproduces sequential `train` runs: same losses, same weights."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from stylestream.models import load_model
from stylestream.train.lockstep import make_shared, train_lockstep
from stylestream.train.loop import ConfigError, train


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
