"""`stylestream sweep --ray auto|local|ADDRESS`: the sweep's lockstep groups as Ray tasks. Only where a
group trains changes: planning, resume and the report stay stylestream.train.sweep's, and each task runs
sweep.run_group on a worker, one task per group (a group holds as many runs as fit one worker: --parallel,
or as a probe task measures on a worker). Every run writes its folder under the sweep folder, so on a
cluster that folder, and --data, --style and the VGG weights, must be on storage every node sees at the
same path; the driver writes the report once every task has ended. A task that fails (its worker or node
died, it ran out of memory, stylestream is missing on its node) marks its unfinished runs crashed, and
the sweep goes on; --resume continues them like any crashed run.

Workers import stylestream: every node needs `pip install stylestream[ray]`, the same version as the
driver's. Each task checks that first and fails with a one-line error naming the node; the task function
is sent by value and its arguments are plain data, so the check runs even where stylestream is missing.

Ray's usage stats stay off: RAY_USAGE_STATS_ENABLED=0 is set before Ray starts unless the user set it (a
cluster started with `ray start` decides its own: `ray start --disable-usage-stats`), and `--ray local`
keeps its node on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, unless set). One thing Ray does whatever
those say: the head's dashboard process asks the cloud metadata endpoints (http://169.254.169.254,
http://metadata.google.internal) which cloud it runs on; docs/scaling.md says how to stop that, and the
tests do. Authentication is Ray's: a local instance of Ray 2.60 turns token auth on and keeps the token in
~/.ray/auth_token; for a cluster, give its token as Ray documents (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import stylestream
from stylestream.models.io import WriteError
from stylestream.train.config import ConfigError, TrainConfig
from stylestream.train.runstate import Position
from stylestream.train.sweep import (
    SWEEP_FILE,
    Group,
    Notify,
    SweepConfig,
    SweepContext,
    SweepProgress,
    group_size,
    mark_crashed,
    run_group,
    run_status,
    sweep_context,
)

if TYPE_CHECKING:
    from ray.util.queue import Queue

log = logging.getLogger(__name__)

USAGE_STATS = "RAY_USAGE_STATS_ENABLED"
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local instance binds 127.0.0.1 (read at `import ray`)
STEP_EVERY_S = 2.0  # how often a task reports its group's step to the driver's bar
CANCEL_WAIT_S = 60.0  # on Ctrl-C, how long cancelled tasks get to checkpoint their runs
VGG_ENV = "STYLESTREAM_VGG_WEIGHTS"
REACH_TIMEOUT_S = 10.0  # a cluster address that takes no connection in this long is an error (Ray waits minutes)


class ClusterError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or cannot run the sweep's tasks."""


def ray_environ(address: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables to set before Ray loads, those the user has not set: usage stats off (Ray would
    otherwise report them to its developers), and a local instance on loopback (Ray otherwise binds the
    machine's network address, open to the network)."""
    chosen = {USAGE_STATS: "0"} | ({LOOPBACK_ONLY: "0"} if address == "local" else {})
    return {k: v for k, v in chosen.items() if k not in environ}


def one_line(exc: BaseException | None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """A cluster address (HOST:PORT or ray://HOST:PORT) that takes no TCP connection is an error now, in
    seconds: ray.init would retry it for minutes. auto and local are Ray's to resolve."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # [IPv6]:PORT
    if not sep or not host or not port.isdigit():
        raise ClusterError(f"--ray {address}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ClusterError(f"--ray {address}: nothing answers at {host}:{port} ({why}); is the cluster's head "
                           "running (`ray start --head` prints its address)?") from None  # fmt: skip


class TaskWriteError(Exception):
    """A WriteError raised in a task, as the driver can unpickle it (WriteError's __init__ does not take
    the args OSError pickles), to raise it there again: a disk that refuses writes stops the sweep."""

    def __init__(self, path: str, errno: int, strerror: str) -> None:
        super().__init__(path, errno, strerror)

    def original(self) -> WriteError:
        return WriteError(*self.args)


def _sweep_payload(sc: SweepConfig) -> dict[str, Any]:
    """sc as plain data (a worker unpickles it before it checks its stylestream), paths absolute (a worker's
    current folder is not the driver's)."""
    d = dataclasses.asdict(sc)
    base = d["base"]
    for key in ("style", "data", "out"):
        base[key] = str(Path(base[key]).resolve())
    if base["vgg_weights"] not in ("random", "imagenet"):
        base["vgg_weights"] = str(Path(base["vgg_weights"]).expanduser().resolve())
    for key in ("eval_data", "content"):
        if d[key] is not None:
            d[key] = str(Path(d[key]).resolve())
    base["progress"] = False  # the driver's bar shows progress; workers' bars would interleave in its log
    base["device"] = task_device(base["device"])
    d["ray"], d["ray_cpus"] = None, 1
    # the driver's offline copy of the ImageNet weights, for the workers too (a node's own environment
    # is not the driver's): the same weights as the report says
    env = os.environ.get(VGG_ENV)
    d["_environ"] = {VGG_ENV: str(Path(env).expanduser().resolve())} if env and base["vgg_weights"] == "imagenet" else {}
    return d


def task_device(device: str) -> str:
    """The device a task trains on: Ray gives a GPU task its own GPU as its only visible one, so cuda:N
    (a GPU of the driver's machine) is that task's cuda."""
    return "cuda" if device.startswith("cuda:") else device


def _group_payload(group: Group) -> dict[str, Any]:
    cfgs = [dataclasses.asdict(c) | {"out": str(Path(c.out).resolve()), "progress": False,
                                     "device": task_device(c.device)} for c in group.cfgs]  # fmt: skip
    return {"batch_size": group.batch_size, "point": dataclasses.asdict(group.point), "cfgs": cfgs}


def _sweep_from(d: dict[str, Any]) -> SweepConfig:
    return SweepConfig(**{k: v for k, v in d.items() if not k.startswith("_")} | {"base": TrainConfig(**d["base"])})


_context: tuple[str, SweepContext] | None = None  # this worker's, for the sweep it last served


def _worker_context(sweep: dict[str, Any]) -> SweepContext:
    """The sweep's images and VGG, loaded once per worker process (Ray reuses a CPU worker for further
    tasks of the same sweep, as the local sweep loads them once for all its groups)."""
    global _context
    key = json.dumps(sweep, sort_keys=True, default=str)
    if _context is None or _context[0] != key:
        _context = (key, sweep_context(_sweep_from(sweep)))
    return _context[1]


def _send(events: Queue, item: tuple) -> None:
    try:
        events.put_nowait(item)
    except Exception:  # progress only: a lost event never stops training
        log.debug("progress event lost", exc_info=True)


def check_shared(sweep: dict[str, Any]) -> None:
    """The sweep folder, as the driver wrote it, is here: else this node's runs would land where the
    driver never reads them."""
    out = Path(sweep["base"]["out"])
    if not (out / SWEEP_FILE).is_file():
        raise ClusterError(f"Ray node {socket.gethostname()} does not see the sweep folder {out} (no "
                           f"{SWEEP_FILE}): --out must be on storage every node shares, at the same path")  # fmt: skip


def train_group_here(sweep: dict[str, Any], group: dict[str, Any], events: Queue, key: int) -> list[tuple[str, str]]:
    """A task's work on its worker: train the group, telling the driver each run's end and, every
    STEP_EVERY_S, the group's step. Returns (out, status) for each run that ended."""
    import ray
    import torch

    check_shared(sweep)
    os.environ.update(sweep.get("_environ", {}))  # this worker process's, for this sweep
    # Ray sets OMP_NUM_THREADS to the task's CPUs only if torch was not loaded before (a setup hook may
    # have): more threads than the task holds make the tasks on one node fight over its cores
    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0))
    if cpus:
        torch.set_num_threads(cpus)
    ctx = _worker_context(sweep)
    g = Group(group["batch_size"], Position(**group["point"]), [TrainConfig(**c) for c in group["cfgs"]])
    ended: list[tuple[str, str]] = []
    last = 0.0

    def notify(cfg: TrainConfig, status: str) -> None:
        ended.append((str(cfg.out), status))
        _send(events, ("done", key, str(cfg.out), status))

    def on_step(cfg: TrainConfig, step: int, losses: dict[str, float]) -> None:
        nonlocal last
        if time.monotonic() - last >= STEP_EVERY_S:
            last = time.monotonic()
            _send(events, ("step", key, step))

    try:
        run_group(ctx, g, notify, progress=False, on_step=on_step)
    except WriteError as exc:
        raise TaskWriteError(str(exc.path), exc.errno, exc.strerror) from None
    return ended


def group_size_here(sweep: dict[str, Any], batch_size: int, optimizers: list[str]) -> int:
    """How many runs of one group fit this worker (the probe task's work)."""
    from stylestream import devices
    from stylestream.train.distributed import local_device

    check_shared(sweep)
    os.environ.update(sweep.get("_environ", {}))  # this worker process's, for this sweep
    sc = _sweep_from(sweep)
    return group_size(sc.base, batch_size, optimizers, local_device(devices.resolve(sc.base.device)))


def _task_functions() -> tuple[Any, Any]:
    """The two task bodies, defined here so that cloudpickle sends them by value: a worker runs them,
    and their stylestream check, before it imports anything of stylestream's."""

    def check(expected: str) -> None:
        import socket

        try:
            import stylestream
        except ImportError:
            raise RuntimeError(f"stylestream is not installed on Ray node {socket.gethostname()}: every node "
                               f"needs `pip install stylestream[ray]=={expected}`") from None  # fmt: skip
        if stylestream.__version__ != expected:
            raise RuntimeError(f"Ray node {socket.gethostname()} has stylestream {stylestream.__version__}, the "
                               f"sweep's is {expected}: install the same version on every node")  # fmt: skip

    def train_group(expected: str, sweep: dict, group: dict, events: Any, key: int) -> list:
        check(expected)
        from stylestream.train.sweep_ray import train_group_here

        return train_group_here(sweep, group, events, key)

    def probe_group_size(expected: str, sweep: dict, batch_size: int, optimizers: list) -> int:
        check(expected)
        from stylestream.train.sweep_ray import group_size_here

        return group_size_here(sweep, batch_size, optimizers)

    return train_group, probe_group_size


class RayDispatch:
    """Each group as a Ray task: --ray-cpus CPUs (1), and 1 GPU where the cluster has GPUs (unless --device
    cpu or mps).
    A context manager: connects on entry (or uses this process's connection) and disconnects on exit
    (a local instance stops with it)."""

    def __init__(self, sc: SweepConfig) -> None:
        self.sc = sc
        self.address = sc.ray or "auto"
        self.ray: Any = None
        self.connected_here = False
        self.gpu = False
        self.where = ""

    def __enter__(self) -> None:
        os.environ.update(ray_environ(self.address))  # before `import ray`: Ray reads them at import
        try:
            import ray
        except ImportError:
            raise ClusterError("--ray needs Ray: pip install 'stylestream[ray]'") from None
        self.ray = ray
        if ray.is_initialized():  # a program that called ray.init itself: its cluster, its settings
            log.info("Ray: using the connection this process already has")
        else:
            check_reachable(self.address)
            options: dict[str, Any] = {"include_dashboard": False} if self.address == "local" else {}
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
                raise ClusterError(f"--ray {self.address}: cannot start or reach Ray: {one_line(exc)}") from None
            self.connected_here = True
        try:
            self._inspect()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _inspect(self) -> None:
        ray, device = self.ray, self.sc.base.device
        resources = ray.cluster_resources()
        nodes = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive"))
        gpus = int(resources.get("GPU", 0))
        self.gpu = gpus > 0 and device not in ("cpu", "mps")
        if device.startswith("cuda") and not gpus:
            raise ClusterError(f"--device {device}: the Ray cluster has no GPU")
        self.where = (f"Ray ({self.address}): {len(nodes)} node(s) at {', '.join(nodes[:8])}, "
                      f"{resources.get('CPU', 0):g} CPUs, {gpus} GPUs")  # fmt: skip
        cpus = self.sc.ray_cpus
        log.info("%s; one task per lockstep group, with %d CPU%s%s", self.where, cpus, "s" if cpus > 1 else "",
                 " and 1 GPU" if self.gpu else "")  # fmt: skip
        if resources.get("CPU", 0) < cpus:
            raise ClusterError(f"--ray-cpus {cpus}: the Ray cluster has {resources.get('CPU', 0):g} CPUs")
        if self.address == "local" and any(not ip.startswith("127.") for ip in nodes):
            log.warning("the local Ray instance listens on %s, not loopback only (%s was set too late or to 1)",
                        ", ".join(nodes), LOOPBACK_ONLY)  # fmt: skip
        train_group, probe = _task_functions()
        # max_retries=0: a retried group would find its folders half-written; --resume is the way back.
        # num_gpus in ray.remote (not .options) keeps Ray's GPU default of one task per worker process,
        # so a finished task's CUDA memory goes back before the next task gets that GPU.
        resources_per_task = {"num_cpus": cpus, "num_gpus": 1 if self.gpu else 0, "max_retries": 0}
        self.train_task = ray.remote(**resources_per_task)(train_group).options(name="stylestream-sweep-group")
        self.probe_task = ray.remote(**resources_per_task)(probe).options(name="stylestream-sweep-probe")

    def __exit__(self, *exc: object) -> None:
        if self.connected_here:
            self.ray.shutdown()
            self.connected_here = False

    def describe(self) -> str:
        return self.where

    def group_size(self, batch_size: int, optimizers: list[str]) -> int:
        """Measured by a probe task on a worker like those that train (the driver may have no GPU)."""
        ref = self.probe_task.remote(stylestream.__version__, _sweep_payload(self.sc), batch_size, optimizers)
        try:
            return int(self.ray.get(ref))
        except self.ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise ClusterError(f"sizing the lockstep groups on a Ray worker failed: {one_line(cause)} "
                               "(or pass --parallel)") from None  # fmt: skip

    def run(self, groups: list[Group], progress: SweepProgress) -> None:
        from ray.util.queue import Empty, Queue

        ray = self.ray
        events: Queue | None = Queue(actor_options={"num_cpus": 0})  # runs' ends, groups' steps, as they come
        sweep = _sweep_payload(self.sc)
        pending: dict[Any, int] = {}
        for i, g in enumerate(groups):
            pending[self.train_task.remote(stylestream.__version__, sweep, _group_payload(g), events, i)] = i
        by_out = {str(Path(c.out).resolve()): c for g in groups for c in g.cfgs}
        ended: set[str] = set()
        steps: dict[int, int] = {}

        def notify(cfg: TrainConfig, status: str) -> None:  # once per run: events and results overlap
            if str(cfg.out) not in ended:
                ended.add(str(cfg.out))
                progress.done(cfg, status)

        def drain() -> None:
            nonlocal events
            while events is not None:
                try:
                    batch = events.get_nowait_batch(max(1, events.qsize()))
                except Empty:
                    return
                except ray.exceptions.RayError as exc:  # progress only: the tasks' results still count
                    log.warning("Ray: progress events lost (%s); runs are counted as their tasks end",
                                one_line(exc))  # fmt: skip
                    events = None
                    return
                for kind, key, *rest in batch:
                    if kind == "step":
                        steps[key] = rest[0]
                    elif rest[0] in by_out:
                        notify(by_out[rest[0]], rest[1])

        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                drain()
                for ref in ready:
                    i = pending.pop(ref)
                    steps.pop(i, None)
                    self._collect(ref, groups[i], notify)
                running = [f"#{i + 1} ({groups[i].desc}) step {steps[i]}" for i in sorted(steps)]
                progress.note(f"groups left {len(pending)}/{len(groups)}"
                              + ("; running " + ", ".join(running[:4]) if running else ""))  # fmt: skip
        except BaseException:
            self._cancel(list(pending))
            raise
        finally:
            if events is not None:
                events.shutdown()

    def _collect(self, ref: Any, group: Group, notify: Notify) -> None:
        """A task's end: its runs' ends, or its failure on each unfinished run's card."""
        exceptions = self.ray.exceptions
        by_out = {str(Path(c.out).resolve()): c for c in group.cfgs}
        try:
            for out, status in self.ray.get(ref):
                notify(by_out[out], status)
            return
        except exceptions.RayTaskError as exc:  # the task raised
            cause = exc.cause if exc.cause is not None else exc
            if isinstance(cause, TaskWriteError):  # stops the sweep, as in one process
                raise cause.original() from None
            if isinstance(cause, ConfigError):
                raise cause from None
            error = one_line(cause)
        except exceptions.RayError as exc:  # its worker or node died, out of memory, cancelled
            error = one_line(exc)
        log.error("Ray task of group %s (%s) failed: %s", group.desc, group.names, error)
        mark_crashed(group.cfgs, f"Ray task failed: {error}", notify)
        for c in group.cfgs:  # runs that ended before the task failed, should their events have been lost
            status = run_status(c)
            if status in ("ok", "diverged", "crashed"):
                notify(c, status)

    def _cancel(self, refs: list[Any]) -> None:
        """Ctrl-C or a sweep-stopping error: interrupt the running tasks (each checkpoints its runs, as a
        local sweep does on Ctrl-C) and give them CANCEL_WAIT_S to finish that."""
        if not refs:
            return
        log.warning("stopping %d Ray task(s); --resume continues their runs", len(refs))
        for ref in refs:
            self.ray.cancel(ref)
        self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
