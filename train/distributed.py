"""Data-parallel training on several processes: GPUs (`nccl`) or CPU cores and machines (`gloo`).

Two ways in, one code path:
- `torchrun --nproc-per-node N -m toolkit train ...` sets RANK / WORLD_SIZE / LOCAL_RANK /
  MASTER_ADDR / MASTER_PORT; `process_group()` reads them;
- `toolkit train --nproc N` (`train.launch`) starts N local processes itself with the same variables.

Each process trains a `DistributedDataParallel` copy on its share of every batch (`--batch-size`
is per process; `train.dataset.EpochBatches` deals the global batch out by rank, in the same
deterministic order as a single process, which is what keeps `--resume` exact and is why the
stock `DistributedSampler` is not used). Only rank 0 writes: the run folder, checkpoints, logs,
the progress bar. At the end every rank hashes its parameters and the hashes are compared, so a
run whose replicas drifted apart fails loudly instead of saving one replica's weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from toolkit.core.errors import CheckFailed, UserError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Group:
    """This process's place in the run (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def local_world(self) -> int:
        """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE; all of them otherwise)."""
        try:
            return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", self.world)))
        except ValueError:
            return self.world

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_finite(self, value: float) -> bool:
        """Whether `value` is finite on every rank: one rank stopping alone would leave the
        others waiting forever in the gradient all-reduce."""
        return self._agree(bool(torch.isfinite(torch.tensor(value))), dist.ReduceOp.MIN) if self.active \
            else math.isfinite(value)

    def any_rank(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank: a stop asked of one rank (its Ctrl-C came first)
        is taken by all at the same step, or the others would wait for it forever."""
        return self._agree(flag, dist.ReduceOp.MAX) if self.active else bool(flag)

    @staticmethod
    def _agree(flag: bool, op: Any) -> bool:
        t = torch.tensor([float(flag)], device=_collective_device())
        dist.all_reduce(t, op=op)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def env_group() -> Group:
    """The group the environment describes (torchrun's variables), without joining it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise UserError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {e}") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"bad torchrun environment: RANK {rank} of WORLD_SIZE {world}")
    return Group(rank=rank, world=world, local_rank=local)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[tuple[Group, torch.device]]:
    """Join the process group of the environment (if any) for the duration of a run.

    Yields the group and the device this rank trains on: `cuda:LOCAL_RANK` with `nccl` when
    the run is on CUDA, the CPU with `gloo` otherwise."""
    group = env_group()
    if not group.active:
        yield group, device
        return
    if device.type == "cuda":
        if group.local_rank >= torch.cuda.device_count():
            raise UserError(f"rank {group.rank}: LOCAL_RANK {group.local_rank} but only "
                            f"{torch.cuda.device_count()} CUDA device(s) are visible")
        torch.cuda.set_device(group.local_rank)
        device, backend = torch.device("cuda", group.local_rank), "nccl"
    else:
        backend = "gloo"
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend=backend, rank=group.rank, world_size=group.world)
    try:
        yield group, device
    except BaseException:
        if started and dist.is_initialized():
            dist.destroy_process_group()
        raise
    if started and dist.is_initialized():
        # Every rank is done communicating before any tears its connections down: a rank that
        # leaves first can make gloo abort the other one's process ("terminate called ...").
        dist.barrier()
        dist.destroy_process_group()


def wrap(net: nn.Module, group: Group, device: torch.device) -> nn.Module:
    """The module the training forward calls: `net` itself, or its DDP wrapper (which averages
    gradients across ranks during backward and broadcasts BatchNorm buffers from rank 0)."""
    if not group.active:
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def parameters_sha256(net: nn.Module) -> str:
    """A hash of the parameters' bytes (BatchNorm's running statistics are per rank between
    broadcasts and are not part of it)."""
    h = hashlib.sha256()
    for name, p in sorted(net.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def check_replicas(net: nn.Module, group: Group) -> list[str]:
    """Every rank's parameter hash; `CheckFailed` when they differ."""
    hashes = group.gather(parameters_sha256(net))
    if len(set(hashes)) > 1:
        raise CheckFailed(f"the {group.world} training processes ended with different weights "
                          f"({', '.join(h[:12] for h in hashes)}): the run is not consistent")
    return hashes
