"""Triton Inference Server as the inference tier: `--backend triton --triton-url grpc://HOST:8001` (or
http://HOST:8000) sends each batch of frames to the server, which runs the style's model, looked up by
name in its repository, and batches the frames of every stylestream server that calls it (dynamic batching).

A model is a style when its metadata (`/v2/models/NAME`) is one (N, 3, H, W) input and one such output with
free H and W, FP32 or UINT8 (the wire type: UINT8 frames are 4x less traffic; they are rounded the way
stylestream rounds). It is checked on first use and again after the server was lost, since a restarted
server may serve another model under that name. Frames go over gRPC or HTTP, or through system shared
memory when the server is on this machine (a loopback URL): they are then written once to /dev/shm and
never cross a socket.

Nothing here contacts the server before a frame (or `check`) asks for it, so a server that is down when a
style is first loaded does not break the style for good: calls fail with TritonUnreachable, whose message
is the same every time (the page shows it once), and succeed again once the server is back.
Importing this module does not import tritonclient."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np

from stylestream.runtime.base import Backend, BackendUnavailable, register

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install stylestream[triton] (tritonclient with gRPC and HTTP)"
DEFAULT_PORTS = {"grpc": 8001, "grpcs": 8001, "http": 8000, "https": 8000}
WIRE_DTYPES = {"FP32": np.dtype(np.float32), "UINT8": np.dtype(np.uint8)}
TIMEOUT_S = 10.0  # one call (a batch of frames, or metadata); past it the server counts as lost
# gRPC waits up to 2 minutes between reconnection attempts by default: a restarted server would stay
# "unreachable" for that long. One second keeps recovery prompt at one failed connect per second.
GRPC_RECONNECT_MS = 1000
MIN_SHM_BYTES = 1 << 20


class TritonUnreachable(ValueError):
    """The server at --triton-url does not answer. A ValueError, like other settings that do not work:
    at start it is reported as the command's error; mid-stream the frames pass through meanwhile."""


class TritonError(RuntimeError):
    """The server answered with an error (unknown model, bad request); the message is its own, on one line."""

    @property
    def model_missing(self) -> bool:
        """The server has no such model ready (never had it, or is unloading it while it stops)."""
        text = str(self).lower()
        return any(s in text for s in ("unknown model", "no available versions", "is not ready"))


class NotAStyle(ValueError):
    """A Triton model whose inputs/outputs are not a style's; the message says what differs."""


# ------------------------------------------------------------------------------------------ the URL


@dataclass(frozen=True)
class TritonURL:
    scheme: str  # grpc | grpcs | http | https
    host: str
    port: int

    @property
    def protocol(self) -> str:
        return "grpc" if self.scheme.startswith("grpc") else "http"

    @property
    def ssl(self) -> bool:
        return self.scheme.endswith("s")

    @property
    def address(self) -> str:
        """host:port, as tritonclient takes it (an IPv6 host in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def local(self) -> bool:
        """The server is on this machine (a loopback host), so it can read frames from shared memory."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}"


def parse_triton_url(text: str) -> TritonURL:
    """'grpc://HOST[:8001]', 'http://HOST[:8000]' (grpcs://, https:// for TLS) -> TritonURL; ValueError
    otherwise, naming what is expected."""
    expected = f"--triton-url {text!r}: expected grpc://HOST:8001 or http://HOST:8000 (grpcs://, https:// for TLS)"
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query \
            or parts.fragment or parts.username or parts.password:  # fmt: skip
        raise ValueError(expected)
    return TritonURL(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])


# ------------------------------------------------------------------------------------ the signature


@dataclass(frozen=True)
class StyleSignature:
    """How to call one Triton model as a style."""

    input: str
    output: str
    input_dtype: np.dtype
    output_dtype: np.dtype
    max_batch: int | None  # most frames per request; None: no limit

    def describe(self) -> str:
        return f"{self.input_dtype.name} in, {self.output_dtype.name} out"


def style_signature(metadata: dict[str, Any], config: dict[str, Any]) -> StyleSignature:
    """Check a model's metadata (`/v2/models/NAME`) against a style's signature: one input and one output,
    each (N, 3, H, W) with free H and W, FP32 or UINT8. `config` gives max_batch_size. NotAStyle says why not."""
    ins, outs = metadata.get("inputs") or [], metadata.get("outputs") or []
    if len(ins) != 1 or len(outs) != 1:
        raise NotAStyle(f"has {len(ins)} input(s) and {len(outs)} output(s); a style has one of each")
    shapes = []
    for t in (ins[0], outs[0]):
        if t.get("datatype") not in WIRE_DTYPES:
            raise NotAStyle(f"{t.get('name')!r} is {t.get('datatype')}; a style takes and gives FP32 or UINT8")
        shape = [int(d) for d in t.get("shape") or []]
        if len(shape) != 4 or shape[1] != 3 or shape[2] != -1 or shape[3] != -1:
            raise NotAStyle(f"{t.get('name')!r} has shape {shape}; a style's is [-1, 3, -1, -1] "
                            "(N, RGB, any height and width)")  # fmt: skip
        shapes.append(shape)
    max_batch = int(config.get("max_batch_size") or 0)
    fixed = shapes[0][0]
    return StyleSignature(ins[0]["name"], outs[0]["name"], WIRE_DTYPES[ins[0]["datatype"]],
                          WIRE_DTYPES[outs[0]["datatype"]],
                          max_batch or (fixed if fixed > 0 else None))  # fmt: skip


def to_wire(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 frames in [0, 255] -> the model's input type (UINT8 rounded as NeuralPlugin rounds)."""
    if dtype == np.uint8:
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x, dtype=np.float32)


# ---------------------------------------------------------------------------------- the connection


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


class TritonConnection:
    """A tritonclient client for one server, over gRPC or HTTP, with the calls stylestream makes. Every
    failure is TritonUnreachable (the server did not answer) or TritonError (it answered no)."""

    def __init__(self, url: TritonURL | str, timeout_s: float = TIMEOUT_S) -> None:
        self.url = parse_triton_url(url) if isinstance(url, str) else url
        self.timeout_s = timeout_s
        # tritonclient's HTTP client is not thread-safe (its gRPC client is): HTTP calls take turns
        self._http_lock = threading.Lock() if self.url.protocol == "http" else None
        self._mod: Any = None
        self._client: Any = self._make_client()

    def _make_client(self) -> Any:
        try:
            if self.url.protocol == "grpc":
                import tritonclient.grpc as mod
            else:
                import tritonclient.http as mod
        except ImportError as exc:
            raise BackendUnavailable(f"the triton backend needs tritonclient ({exc}); {INSTALL_HINT}") from None
        self._mod = mod
        if self.url.protocol == "http":
            return mod.InferenceServerClient(self.url.address, ssl=self.url.ssl, connection_timeout=self.timeout_s,
                                             network_timeout=self.timeout_s)  # fmt: skip
        big = 2**31 - 1  # frames are megabytes; gRPC's default message limit is 4 MB
        args = [("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big),
                ("grpc.initial_reconnect_backoff_ms", GRPC_RECONNECT_MS // 4),
                ("grpc.min_reconnect_backoff_ms", GRPC_RECONNECT_MS // 4),
                ("grpc.max_reconnect_backoff_ms", GRPC_RECONNECT_MS)]  # fmt: skip
        return mod.InferenceServerClient(self.url.address, ssl=self.url.ssl, channel_args=args)

    def unreachable(self) -> TritonUnreachable:
        return TritonUnreachable(f"Triton at {self.url} is unreachable (is tritonserver running, and is "
                                 "--triton-url right?)")  # fmt: skip

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        if self.url.protocol == "grpc":  # HTTP's timeouts are the client's own (network_timeout)
            kw.setdefault("client_timeout", self.timeout_s)
        try:
            if self._http_lock is None:
                return fn(*args, **kw)
            with self._http_lock:
                return fn(*args, **kw)
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            # gRPC: the server is gone or too slow; HTTP: a proxy in front of it says so (a dead server
            # itself refuses the connection: OSError below)
            if any(s in status for s in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "502", "503", "504")):
                log.debug("%s: %s failed: %s", self.url, what, exc)
                raise self.unreachable() from None
            raise TritonError(f"Triton at {self.url}: {what}: {_one_line(exc.message() or exc)}") from None
        except (OSError, TimeoutError) as exc:  # HTTP: refused, reset, timed out
            log.debug("%s: %s failed: %s", self.url, what, exc)
            raise self.unreachable() from None
        except Exception as exc:  # geventhttpclient raises its own kinds for a dropped socket
            if type(exc).__module__.split(".")[0] in ("gevent", "geventhttpclient", "grpc"):
                log.debug("%s: %s failed: %s", self.url, what, exc)
                raise self.unreachable() from None
            raise

    def _json(self, fn: Any, *args: Any, **kw: Any) -> dict[str, Any]:
        if self.url.protocol == "grpc":
            return fn(*args, as_json=True, **kw)
        return fn(*args, **kw)

    def server_version(self) -> str:
        meta = self._call("server metadata", self._json, self._client.get_server_metadata)
        return str(meta.get("version", "?"))

    def index(self) -> list[dict[str, Any]]:
        """The repository's models: [{'name', 'version', 'state', 'reason'}]."""
        got = self._call("repository index", self._json, self._client.get_model_repository_index)
        return list(got.get("models", []) if isinstance(got, dict) else got)

    def metadata(self, model: str) -> dict[str, Any]:
        return self._call(f"metadata of model {model!r}", self._json, self._client.get_model_metadata, model)

    def config(self, model: str) -> dict[str, Any]:
        got = self._call(f"config of model {model!r}", self._json, self._client.get_model_config, model)
        return got.get("config", got)  # gRPC wraps it in {"config": ...}

    def signature(self, model: str) -> StyleSignature:
        try:
            return style_signature(self.metadata(model), self.config(model))
        except NotAStyle as exc:
            raise TritonError(f"Triton at {self.url}: model {model!r} is not a style: {exc}") from None

    def infer(self, model: str, sig: StyleSignature, x: np.ndarray, shm: _Regions | None = None) -> np.ndarray:
        """One request: x in the model's input type -> the output as a new array (in the output type)."""
        mod = self._mod
        datatype = {v: k for k, v in WIRE_DTYPES.items()}
        inp = mod.InferInput(sig.input, list(x.shape), datatype[sig.input_dtype])
        out = mod.InferRequestedOutput(sig.output, **({} if self.url.protocol == "grpc" else {"binary_data": True}))
        out_bytes = x.size * sig.output_dtype.itemsize
        if shm is not None:
            shm.write(x)
            inp.set_shared_memory(shm.input_name, x.nbytes)
            out.set_shared_memory(shm.output_name, out_bytes)
        elif self.url.protocol == "http":
            inp.set_data_from_numpy(x, binary_data=True)
        else:
            inp.set_data_from_numpy(x)
        result = self._call(f"inference on model {model!r}", self._client.infer, model, [inp], outputs=[out])
        if shm is not None:
            return shm.read(x.shape, sig.output_dtype)
        y = result.as_numpy(sig.output)
        if y is None or y.shape != x.shape:
            got = None if y is None else y.shape
            raise TritonError(f"Triton at {self.url}: model {model!r} returned {got} for input {x.shape}")
        return y

    def register_shm(self, name: str, key: str, size: int) -> None:
        self._call("shared memory registration", self._client.register_system_shared_memory, name, key, size)

    def unregister_shm(self, name: str) -> None:
        self._call("shared memory release", self._client.unregister_system_shared_memory, name)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception as exc:  # noqa: BLE001 -- closing must not fail on a dead server
                log.debug("closing the Triton client: %s", exc)
            self._client = None


# ---------------------------------------------------------------------------------- shared memory


class _Regions:
    """One input and one output region in /dev/shm, registered with the server, for one call at a time."""

    def __init__(self, conn: TritonConnection, prefix: str, size: int) -> None:
        from multiprocessing import shared_memory

        self.conn = conn
        self.size = size
        self.input_name, self.output_name = f"{prefix}-in", f"{prefix}-out"
        self._mem = [shared_memory.SharedMemory(name=n, create=True, size=size) for n in (self.input_name,
                                                                                           self.output_name)]  # fmt: skip
        self.registered = False

    def register(self) -> None:
        for name in (self.input_name, self.output_name):
            self.conn.register_shm(name, f"/{name}", self.size)
        self.registered = True

    def write(self, x: np.ndarray) -> None:
        np.ndarray(x.shape, x.dtype, buffer=self._mem[0].buf)[...] = x

    def read(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.ndarray(shape, dtype, buffer=self._mem[1].buf).copy()  # the region is reused by the next call

    def close(self, unregister: bool) -> None:
        if unregister and self.registered:
            for name in (self.input_name, self.output_name):
                try:
                    self.conn.unregister_shm(name)
                except (TritonUnreachable, TritonError) as exc:  # a restarted server has forgotten them
                    log.debug("%s", exc)
        self.registered = False
        for m in self._mem:
            m.close()
            m.unlink()


class SharedMemoryPool:
    """Region pairs for a server on this machine, one per concurrent call, grown to the largest batch seen.
    After the server was lost its registrations are gone: they are made again on the next call."""

    def __init__(self, conn: TritonConnection) -> None:
        self.conn = conn
        self.prefix = f"stylestream-{os.getpid()}-{secrets.token_hex(4)}"
        self._free: list[_Regions] = []
        self._all: list[_Regions] = []
        self._lock = threading.Lock()
        self._n = 0

    def acquire(self, nbytes: int) -> _Regions:
        with self._lock:
            fits = [r for r in self._free if r.size >= nbytes]
            if fits:
                regions = fits[0]
                self._free.remove(regions)
            else:
                size = max(MIN_SHM_BYTES, 1 << (nbytes - 1).bit_length())
                self._n += 1
                regions = _Regions(self.conn, f"{self.prefix}-{self._n}", size)
                self._all.append(regions)
        if not regions.registered:
            try:
                regions.register()
            except BaseException:
                self.release(regions)
                raise
        return regions

    def release(self, regions: _Regions) -> None:
        with self._lock:
            self._free.append(regions)

    def forget_registrations(self) -> None:
        """The server restarted (or may have): register every region again before its next use."""
        with self._lock:
            for r in self._all:
                r.registered = False

    def close(self) -> None:
        with self._lock:
            regions, self._all, self._free = self._all, [], []
        for r in regions:
            r.close(unregister=True)


# ---------------------------------------------------------------------------------------- backend


def model_name_for(path: Path) -> str:
    """The Triton model a local style file stands for: the name in its card (NAME.json), else its stem."""
    from stylestream.card import read_card

    card = read_card(Path(path).with_suffix(".json"), max_bytes=1 << 20, missing_ok=True)
    name = card.get("name")
    return name if isinstance(name, str) and name else Path(path).stem


@register
class TritonBackend(Backend):
    name = "triton"
    help = ("Triton Inference Server at --triton-url runs the style's model (by the style's name); "
            "pip install stylestream[triton]")  # fmt: skip
    remote: ClassVar[bool] = True  # a server runs the model by name: the style's file only names it

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        import importlib.util

        if importlib.util.find_spec("tritonclient") is None:
            return f"tritonclient is not installed; {INSTALL_HINT}"
        return None

    def __init__(self, path: Path, device: str, root: Path | None = None, *, url: str | None = None,
                 model: str | None = None, timeout_s: float = TIMEOUT_S,
                 shared_memory: bool | None = None) -> None:  # fmt: skip
        """url: the server (--triton-url); model: its model's name (default: model_name_for(path));
        shared_memory: None = when the server is on this machine."""
        super().__init__(path, device, root)
        if not url:
            raise BackendUnavailable("--backend triton needs --triton-url grpc://HOST:8001 (or http://HOST:8000)")
        self.url = parse_triton_url(url)
        self.model = model or model_name_for(self.path)
        self.conn = TritonConnection(self.url, timeout_s)
        self._signature: StyleSignature | None = None
        self._server_version = ""
        self._check_lock = threading.Lock()
        use_shm = self.url.local if shared_memory is None else shared_memory
        self._shm: SharedMemoryPool | None = SharedMemoryPool(self.conn) if use_shm else None

    def check(self) -> StyleSignature:
        """The model's signature, fetched and checked once (and again after the server was lost)."""
        sig = self._signature
        if sig is not None:
            return sig
        with self._check_lock:
            if self._signature is None:
                self._signature = self.conn.signature(self.model)
                try:
                    self._server_version = self.conn.server_version()
                except TritonError:
                    self._server_version = "?"
                log.info("%s: model %r on Triton %s: %s", self.url, self.model, self._server_version,
                         self._signature.describe())  # fmt: skip
            return self._signature

    def lost(self) -> TritonUnreachable:
        """The one message for a style whose server went away, however it went (down, restarting and
        unloading its models first, or the model unloaded): the page shows a style's message once."""
        return TritonUnreachable(f"Triton at {self.url} is not serving model {self.model!r} (unreachable, "
                                 "restarting, or the model is not loaded)")  # fmt: skip

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            sig = self.check()
            step = sig.max_batch or len(x) or 1
            outs = [self._infer(sig, to_wire(x[i : i + step], sig.input_dtype)) for i in range(0, len(x), step)]
        except TritonUnreachable:
            self._lost()
            raise self.lost() from None
        except TritonError as exc:
            if not exc.model_missing:
                raise
            self._lost()
            raise self.lost() from None
        if not outs:
            return np.zeros(x.shape, np.float32)
        return (np.concatenate(outs) if len(outs) > 1 else outs[0]).astype(np.float32, copy=False)

    def _infer(self, sig: StyleSignature, x: np.ndarray) -> np.ndarray:
        if self._shm is None:
            return self.conn.infer(self.model, sig, x)
        try:
            regions = self._shm.acquire(max(x.nbytes, x.size * sig.output_dtype.itemsize))
        except TritonError as exc:  # e.g. a server in a container that does not share /dev/shm
            log.warning("%s: shared memory is not possible (%s); sending frames over %s instead", self.url, exc,
                        self.url.protocol)  # fmt: skip
            self._shm.close()
            self._shm = None
            return self.conn.infer(self.model, sig, x)
        try:
            return self.conn.infer(self.model, sig, x, regions)
        except TritonError as exc:
            if "shared memory" not in str(exc):
                raise
            # the server restarted between two calls without us seeing it go: register again, once
            self._shm.forget_registrations()
            regions.register()
            return self.conn.infer(self.model, sig, x, regions)
        finally:
            self._shm.release(regions)

    def _lost(self) -> None:
        """The server stopped answering: it may come back restarted, with another model under this name
        and without our shared memory registrations."""
        self._signature = None
        if self._shm is not None:
            self._shm.forget_registrations()

    def describe(self) -> str:
        sig = self._signature
        transport = "shared memory" if self._shm is not None else self.url.protocol
        what = f", {sig.describe()}" if sig else ""
        return f"triton ({self.url}, model {self.model}{what}, {transport})"

    def version(self) -> str:
        try:
            from importlib.metadata import version

            client = f"tritonclient {version('tritonclient')}"
        except Exception:  # noqa: BLE001 -- a version string must not fail
            client = "tritonclient"
        return f"Triton {self._server_version}, {client}" if self._server_version else client

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        self.conn.close()
