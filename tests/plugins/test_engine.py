import asyncio
import threading
import time

import numpy as np
import pytest

from stylestream.plugins import Engine, Param, PluginSet, StylePlugin, discover_plugins


class Recorder(StylePlugin):
    """Inverts frames; records each batch's shape; fails on frames whose first pixel is 13."""

    name = "recorder"
    description = "test plugin"

    def __init__(self, delay: float = 0.05):
        self.batches: list[tuple] = []
        self.delay = delay
        self.lock = threading.Lock()

    def apply(self, frames, params):
        with self.lock:
            self.batches.append(frames.shape)
        if (frames[:, 0, 0, 0] == 13).any():
            raise RuntimeError("bad frame 13")
        time.sleep(self.delay)  # long enough for other callers' frames to queue up
        return 255 - frames


def _engine(**kw):
    plugins = PluginSet()
    rec = Recorder()
    plugins.add(rec, "test")
    return Engine(plugins, **kw), rec


def _frame(value: int, shape=(24, 32, 3)) -> np.ndarray:
    f = np.full(shape, value, np.uint8)
    f[1:, 1:] = np.random.default_rng(value).integers(0, 256, (shape[0] - 1, shape[1] - 1, 3))
    return f


def test_two_callers_are_batched_and_get_their_own_frames():
    engine, rec = _engine()

    async def caller(base: int, n: int):
        outs = []
        for i in range(n):
            f = _frame(base + i)
            outs.append((f, await engine.submit("recorder", f)))
        return outs

    async def main():
        return await asyncio.gather(caller(20, 6), caller(120, 6))

    try:
        results = asyncio.run(main())
    finally:
        engine.close()
    for outs in results:
        for f, out in outs:
            assert np.array_equal(out, 255 - f)
    assert max(b[0] for b in rec.batches) == 2, rec.batches  # the two streams shared batches...
    assert len(rec.batches) <= 7, rec.batches  # ...nearly always, not by luck once
    assert sum(b[0] for b in rec.batches) == 12


def test_shapes_and_params_are_not_mixed():
    engine, rec = _engine()

    async def main():
        small, big = _frame(1, (16, 16, 3)), _frame(2, (24, 32, 3))
        return await asyncio.gather(engine.submit("recorder", small), engine.submit("recorder", big),
                                    engine.submit("recorder", small, {"strength": 0.5}))  # fmt: skip

    try:
        a, b, c = asyncio.run(main())
    finally:
        engine.close()
    assert a.shape == (16, 16, 3) and b.shape == (24, 32, 3)
    small = _frame(1, (16, 16, 3)).astype(int)
    assert np.abs(c.astype(int) - ((255 - small) + small) / 2).max() <= 1  # strength applied per caller
    assert all(len({s[1:3]}) == 1 for s in rec.batches)


def test_a_failure_reaches_only_its_caller():
    engine, _ = _engine()

    async def main():
        good, bad = _frame(40), _frame(13)
        return await asyncio.gather(engine.submit("recorder", good), engine.submit("recorder", bad),
                                    engine.submit("recorder", good), return_exceptions=True)  # fmt: skip

    try:
        r = asyncio.run(main())
        assert np.array_equal(r[0], 255 - _frame(40)) and np.array_equal(r[2], 255 - _frame(40))
        assert isinstance(r[1], RuntimeError) and "bad frame 13" in str(r[1])
        # the worker survived
        assert np.array_equal(asyncio.run(engine.submit("recorder", _frame(7))), 255 - _frame(7))
    finally:
        engine.close()


def test_submit_never_blocks_the_event_loop():
    engine, rec = _engine()
    rec.delay = 0.2
    ticks = []

    async def ticker():
        for _ in range(10):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    async def main():
        await asyncio.gather(ticker(), *(engine.submit("recorder", _frame(i)) for i in range(3)))

    try:
        asyncio.run(main())
    finally:
        engine.close()
    assert max(np.diff(ticks)) < 0.15  # the loop kept ticking while the batch ran for >= 0.2 s


def test_submit_validates_before_queueing():
    engine = Engine(discover_plugins(include_user_dir=False))
    try:
        with pytest.raises(KeyError, match="unknown style 'nope'"):
            asyncio.run(engine.submit("nope", _frame(1)))
        with pytest.raises(ValueError, match="expected uint8 RGB frames of shape \\(H, W, 3\\)"):
            asyncio.run(engine.submit("sketch", np.zeros((4, 4), np.uint8)))
    finally:
        engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(engine.submit("sketch", _frame(1)))


def test_max_side_downscales_keeping_aspect_and_restores_size():
    engine, rec = _engine(max_side=64)
    try:
        f = np.random.default_rng(0).integers(0, 256, (2, 120, 200, 3), dtype=np.uint8)
        out = engine.process("recorder", f)
        assert out.shape == f.shape
        assert rec.batches[-1] == (2, 38, 64, 3)  # 120x200 -> 38x64 (aspect ratio kept)
        engine.process("recorder", f[:, :50, :40])  # already small enough: untouched
        assert rec.batches[-1] == (2, 50, 40, 3)
    finally:
        engine.close()
    with pytest.raises(ValueError, match="max_side must be at least 16"):
        _engine(max_side=4)


def test_process_is_thread_safe(model_dir):
    engine = Engine(discover_plugins([model_dir], include_user_dir=False))
    frames = [np.random.default_rng(i).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8) for i in range(4)]
    expected = [engine.process("lite", f) for f in frames]
    got: dict[int, np.ndarray] = {}

    def work(i):
        got[i] = engine.process("lite", frames[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    for i in range(4):
        assert np.array_equal(got[i], expected[i])


class Counting(StylePlugin):
    """Records what `apply` receives and how often parameters are resolved."""

    name = "counting"
    extra_params = (Param("amount", "Amount", 0.5, 0.0, 1.0),)

    def __init__(self):
        self.resolved = 0
        self.seen: list[dict] = []

    def resolve_params(self, params):
        self.resolved += 1
        return super().resolve_params(params)

    def apply(self, frames, params):
        self.seen.append(dict(params))
        return 255 - frames


def test_the_frame_contract_is_enforced_once_and_apply_only_stylizes():
    plugins = PluginSet()
    plugin = Counting()
    plugins.add(plugin, "test")
    f = _frame(3)
    with Engine(plugins) as engine:
        out = engine.process("counting", f[None], {"strength": 0.5, "stabilize": 0.7, "amount": 2})
        assert plugin.resolved == 1
        assert plugin.seen == [{"amount": 1.0}]  # clamped; no strength, no stabilize: the engine's business
        assert np.abs(out[0].astype(int) - ((255 - f.astype(int)) + f) / 2).max() <= 1
        got = asyncio.run(engine.submit("counting", f, {"amount": 0.25}))
        assert plugin.resolved == 2 and plugin.seen[-1] == {"amount": 0.25}
        assert np.array_equal(got, 255 - f)
        with pytest.raises(ValueError, match="must be a number"):
            engine.process("counting", f[None], {"stabilize": "lots"})  # validated though never applied here
        stats = engine.stats()
    assert stats["frames"] == 2 and stats["batches"] == 2 and stats["frames_by_path"] == {"numpy": 2}
    assert stats["paths"] == {"counting": "numpy"}
    assert set(stats["stages"]) == {"queue", "stage", "prepare", "model", "finish"}  # no copies on this path
    assert stats["stages"]["queue"]["frames"] == 1  # only submitted frames wait in the queue


def test_stabilize_never_changes_a_batch_and_never_splits_one():
    engine, rec = _engine(batch_window_ms=200)
    f = _frame(5)
    try:
        plain = engine.process("recorder", f[None])
        assert np.array_equal(engine.process("recorder", f[None], {"stabilize": 1.0}), plain)

        async def main():
            return await asyncio.gather(*(engine.submit("recorder", f, {"stabilize": s}) for s in (0.0, 0.5, 1.0)))

        outs = asyncio.run(main())
    finally:
        engine.close()
    assert all(np.array_equal(o, 255 - f) for o in outs)
    assert rec.batches[-1][0] == 3  # one batch for the three callers


def test_plugin_process_is_the_engines_contract(monkeypatch, photo):
    import stylestream.plugins.engine as engine_module

    calls = []
    real = engine_module.stylize

    def spy(plugin, frames, params=None, **kw):
        calls.append(plugin.name)
        return real(plugin, frames, params, **kw)

    monkeypatch.setattr(engine_module, "stylize", spy)
    plugins = discover_plugins(include_user_dir=False)
    with Engine(plugins) as engine:
        a = engine.process("sketch", photo, {"strength": 0.6})
    b = plugins.get("sketch").process(photo, {"strength": 0.6})  # a third-party caller without an engine
    assert calls == ["sketch", "sketch"]
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match=r"expected uint8 RGB frames of shape \(N, H, W, 3\)"):
        plugins.get("sketch").process(photo.astype(np.float32))


class Shrinker(StylePlugin):
    name = "shrinker"

    def apply(self, frames, params):
        return frames[:, ::2]


def test_a_style_that_breaks_the_contract_fails_its_callers_only():
    plugins = PluginSet()
    plugins.add(Shrinker(), "test")
    with Engine(plugins) as engine, pytest.raises(RuntimeError, match="style 'shrinker' returned uint8"):
        engine.process("shrinker", _frame(1)[None])
