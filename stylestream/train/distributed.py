"""Scale-out training with DistributedDataParallel, launched by torchrun:

    torchrun --nproc-per-node N -m stylestream train --batch-size B ...

Each of the N processes trains on its shard of every global batch (B images per process, N*B per
step), gradients are averaged across processes (NCCL on GPUs, gloo on CPU), and only rank 0 writes
the run directory. `stylestream.train.lockstep` calls these helpers; outside torchrun they do nothing."""

from __future__ import annotations

import atexit
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun set up (once); returns (rank, world size), (0, 1) when not
    distributed."""
    if not launched_by_torchrun() or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        atexit.register(shutdown)
        log.info("rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_rank(), dist.get_world_size()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the process group this process joined; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """Under torchrun each process drives its own GPU: cuda -> cuda:LOCAL_RANK."""
    if device.type == "cuda" and device.index is None and dist.is_available() and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def mean_across_ranks(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The global batch's loss terms (mean of the ranks' shard means), identical on every rank, so
    rank 0 logs the loss of the whole batch and every rank sees a divergence at the same step."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return terms
    keys = list(terms)
    stacked = torch.stack([terms[k].detach().float() for k in keys])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.unbind()))


def min_across_ranks(n: int) -> int:
    """The smallest of the ranks' values: each rank's shard may hold one image more than another's,
    and every rank must take the same number of steps or the gradient all-reduce waits forever."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return n
    t = torch.tensor([n], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())
