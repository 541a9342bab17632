"""`toolkit train --nproc N`: start N local training processes, each running `train.loop.run`.

Why a module of its own: launching sits above the training loop (it calls `run` in every child),
while `train.distributed` sits below it (the loop uses its process group and rank helpers). Kept
in `train.distributed`, the two modules would import each other.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import torch.multiprocessing as mp

from toolkit.errors import UserError

from .config import TrainConfig
from .distributed import env_group
from .loop import preflight, run

__all__ = ["free_port", "launch"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child(rank: int, nproc: int, port: int, config: dict[str, Any], results: Any) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    result = run(TrainConfig.from_dict(config), progress=rank == 0)
    if rank == 0:
        results.put(result)


def launch(config: Any, nproc: int) -> Any:
    """Run `train.loop.run(config)` in N local processes and return rank 0's `TrainResult`.
    Options and data are checked here first, so a mistake is one line and not N tracebacks."""
    if nproc < 1:
        raise UserError(f"--nproc must be 1 or more, got {nproc}")
    if env_group().active:
        raise UserError("--nproc inside a torchrun job: give one or the other")
    preflight(config)
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    try:
        mp.start_processes(_child, args=(nproc, free_port(), config.to_dict(), results), nprocs=nproc,
                           join=True, start_method="spawn")
    except mp.ProcessRaisedException as e:
        last = str(e).rstrip().splitlines()[-1]
        raise UserError(f"a training process failed: {last.split(': ', 1)[-1]}") from None
    except mp.ProcessExitedException as e:
        raise UserError(f"a training process exited with code {e.exit_code}") from None
    return results.get()
