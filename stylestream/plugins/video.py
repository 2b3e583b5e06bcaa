"""Stylizing a video file: same frame count, size and frame rate, audio copied.

Three stages overlap: a decoder thread (demux + decode), the calling thread (inference, in batches)
and an encoder thread (encode + mux). PyAV and the backends release the GIL in their C code, so the
stages really run in parallel. Audio packets travel through the same queues as the frames, so the
output stays interleaved in the input's order without re-encoding the audio."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.media import MediaError
from stylestream.models.io import atomic_write

log = logging.getLogger(__name__)

_END = object()
QUEUE_FRAMES = 16  # bounded queues: a fast decoder must not fill the memory


@dataclass
class VideoResult:
    frames: int
    width: int
    height: int
    fps: float
    audio_copied: bool
    seconds: float


def _codec_for(path: Path) -> tuple[str, dict[str, str]]:
    if path.suffix.lower() == ".webm":
        return "libvpx-vp9", {"crf": "30", "b": "0", "row-mt": "1"}
    return "libx264", {"crf": "18", "preset": "veryfast"}


class _Stage(threading.Thread):
    """A thread whose exception is kept for the caller to re-raise."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the calling thread
            self.error = exc


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event, producer: _Stage | None = None) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if producer is not None and not producer.is_alive() and q.empty():
                producer.join()
                if producer.error is not None:
                    raise producer.error from None
                return _END
            if stop.is_set():
                raise RuntimeError("video pipeline stopped")


def stylize_video(src: Path, dst: Path, stylize: Callable[[np.ndarray, Mapping[str, Any] | None], np.ndarray],
                  params: Mapping[str, Any] | None = None, batch: int = 4, progress: bool = True,
                  desc: str | None = None) -> VideoResult:  # fmt: skip
    """Stylize `src` into `dst` with `stylize(frames (N,H,W,3) uint8, params) -> same`.

    The output is written to a temp file beside `dst` and renamed at the end (atomic_write), so a failure
    never leaves a truncated video (or overwrites an existing one); WriteError when the disk refuses it."""
    import time

    import av
    from tqdm import tqdm

    t0 = time.perf_counter()
    try:
        inp = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{src}: not a readable video ({exc})") from None
    try:
        if not inp.streams.video:
            raise MediaError(f"{src}: has no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        width, height = vin.codec_context.width, vin.codec_context.height
        result: dict[str, Any] = {}

        def write(tmp: str) -> None:
            try:
                out = av.open(tmp, "w")
            except (av.error.FFmpegError, ValueError) as exc:
                raise MediaError(f"{dst}: cannot write a video with this suffix ({exc})") from None
            try:
                codec, opts = _codec_for(dst)
                vout = out.add_stream(codec, rate=rate, options=opts)
                vout.width, vout.height = width, height
                # 4:2:0 needs even sizes; keep odd-sized videos exact with 4:4:4 instead of cropping
                vout.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
                aout = None
                if ain is not None:
                    try:
                        aout = out.add_stream_from_template(ain)
                    except Exception as exc:  # noqa: BLE001 -- PyAV raises several kinds; audio is optional here
                        log.warning("%s: audio (%s) cannot be copied into %s (%s); the output has no audio",
                                    src, ain.codec_context.name, dst.suffix, exc)  # fmt: skip
                estimate = round(inp.duration / 1e6 * float(rate)) if inp.duration else None
                total = vin.frames or estimate
                result["frames"] = _pipeline(inp, vin, ain, out, vout, aout, stylize, params, max(1, batch),
                                             tqdm(total=total, unit="frame", desc=desc or src.name,
                                                  disable=not progress, dynamic_ncols=True))  # fmt: skip
                result["audio"] = aout is not None
            except BaseException:
                with contextlib.suppress(Exception):  # the first error is the one to report
                    out.close()
                raise
            out.close()  # writes the trailer: a full disk can show up here too

        atomic_write(dst, write, keep_suffix=True)  # the suffix picks the container
    finally:
        inp.close()
    seconds = time.perf_counter() - t0
    return VideoResult(result["frames"], width, height, float(rate), result["audio"], seconds)


def _pipeline(inp: Any, vin: Any, ain: Any, out: Any, vout: Any, aout: Any, stylize: Callable,
              params: Mapping[str, Any] | None, batch: int, bar: Any) -> int:  # fmt: skip
    import av

    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(QUEUE_FRAMES)
    styled: queue.Queue = queue.Queue(QUEUE_FRAMES)
    frames_done = 0

    def decode() -> None:
        streams = [s for s in (vin, ain if aout is not None else None) if s is not None]
        index = 0
        try:
            for packet in inp.demux(*streams):
                if stop.is_set():
                    return
                if packet.stream is vin:
                    for frame in packet.decode():
                        pts = frame.pts if frame.pts is not None else index
                        _put(decoded, ("v", frame.to_ndarray(format="rgb24"), pts, frame.time_base), stop)
                        index += 1
                elif packet.dts is not None:  # the demuxer's flush packets carry nothing
                    _put(decoded, ("a", packet), stop)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{inp.name}: video is corrupt after frame {index} ({exc})") from None
        finally:
            _put(decoded, _END, stop)

    def encode() -> None:
        while True:
            item = _get(styled, stop)
            if item is _END:
                break
            if item[0] == "a":
                item[1].stream = aout
                out.mux(item[1])
                continue
            _, rgb, pts, tb = item
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = pts, tb
            out.mux(vout.encode(frame))
        out.mux(vout.encode(None))  # flush the encoder's delayed frames

    decoder = _Stage(decode, "stylize-decode")
    encoder = _Stage(encode, "stylize-encode")
    decoder.start()
    encoder.start()
    pending: list[tuple] = []  # video frames (and audio packets between them) waiting for a batch

    from stylestream.temporal import Stabilizer

    stabilizer, amount = Stabilizer(), float((params or {}).get("stabilize", 0.0))

    def flush() -> None:
        nonlocal frames_done
        video = [it for it in pending if it[0] == "v"]
        if video:
            out_frames = stylize(np.stack([it[1] for it in video]), params)
            if amount > 0:  # frame by frame, in order: each one leans on the previous output
                out_frames = [stabilizer(it[1], o, amount) for it, o in zip(video, out_frames)]
            it_out = iter(out_frames)
            for it in pending:
                _put(styled, ("v", next(it_out), it[2], it[3]) if it[0] == "v" else it, stop)
            frames_done += len(video)
            bar.update(len(video))
        else:
            for it in pending:
                _put(styled, it, stop)
        pending.clear()

    try:
        while True:
            item = _get(decoded, stop, decoder)
            if item is _END:
                break
            pending.append(item)
            if sum(1 for it in pending if it[0] == "v") >= batch:
                flush()
            if encoder.error is not None:
                raise encoder.error
        flush()
        bar.total = frames_done  # the frame count was an estimate from the duration
        bar.refresh()
        _put(styled, _END, stop)
        encoder.join()
        decoder.join()
        if decoder.error is not None:
            raise decoder.error
        if encoder.error is not None:
            raise encoder.error
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        decoder.join(timeout=10)
        encoder.join(timeout=10)
        bar.close()
    return frames_done
