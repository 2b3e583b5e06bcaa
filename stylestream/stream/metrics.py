"""Prometheus series for the server (`GET /metrics`), one registry per app so several apps (tests)
can live in one process."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401 (re-exported)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

# Seconds; real-time video lives between a few ms and a second, anything past that is a problem.
_BUCKETS = (0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0)


class EngineCollector:
    """The engine's own counters (frames, batches, seconds per frame-path stage), read when /metrics is
    scraped: where a frame's time goes (queue, upload, model, download, ...)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self):  # type: ignore[no-untyped-def]
        stats = getattr(self.engine, "stats", None)
        if stats is None:
            return
        snap = stats()
        yield CounterMetricFamily("stylestream_engine_frames", "frames through the engine", value=snap["frames"])
        yield CounterMetricFamily("stylestream_engine_batches", "batches run by the engine", value=snap["batches"])
        seconds = CounterMetricFamily("stylestream_engine_stage_seconds",
                                      "time spent per frame-path stage (GPU stages: GPU time)", labels=["stage"])  # fmt: skip
        for stage, st in snap.get("stages", {}).items():
            seconds.add_metric([stage], st["seconds"])
        yield seconds
        by_path = CounterMetricFamily("stylestream_engine_path_frames", "frames per frame path", labels=["path"])
        for path, n in snap.get("frames_by_path", {}).items():
            by_path.add_metric([path], n)
        yield by_path


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions = Gauge("stylestream_sessions", "open sessions", ["kind"], registry=r)
        self.viewers = Gauge("stylestream_viewers", "open WHEP viewers", registry=r)
        self.sessions_total = Counter("stylestream_sessions_created", "sessions created", ["kind"], registry=r)
        self.frames_in = Counter("stylestream_frames_in", "frames received from peers", ["style"], registry=r)
        self.frames_out = Counter("stylestream_frames_out", "stylized frames sent", ["style"], registry=r)
        self.frames_dropped = Counter(
            "stylestream_frames_dropped", "stale frames skipped (latest frame wins)", ["style"], registry=r
        )
        self.plugin_errors = Counter(
            "stylestream_plugin_errors", "frames passed through because the style raised", ["style"], registry=r
        )
        self.inference = Histogram(
            "stylestream_inference_seconds", "time in the style engine per frame", ["style"],
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "stylestream_latency_seconds", "server end-to-end: frame received -> stylized frame sent",
            ["style"], buckets=_BUCKETS, registry=r,
        )  # fmt: skip

        self.processing_scale = Gauge(
            "stylestream_processing_scale", "processing size / input size (longer sides) per session; "
            "below 1 when the frame rate is held by adapting the size", ["session"], registry=r,
        )  # fmt: skip
        # Labelled series appear only once used: give the session gauges and counters their zeros, so an
        # idle server's /metrics says "0 sessions" instead of nothing.
        for kind in ("browser", "whip"):
            self.sessions.labels(kind)
            self.sessions_total.labels(kind)

    def watch_engine(self, engine: Any) -> None:
        self.registry.register(EngineCollector(engine))

    def forget_session(self, label: str) -> None:
        try:
            self.processing_scale.remove(label)
        except KeyError:
            pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
