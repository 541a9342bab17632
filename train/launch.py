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

from toolkit.core.errors import UserError

from .config import TrainConfig
from .distributed import env_group
from .interrupt import TrainingAborted, TrainingInterrupted, aborted_message, sigint_stops
from .loop import preflight, run

__all__ = ["free_port", "launch"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child(rank: int, nproc: int, port: int, config: dict[str, Any], results: Any) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    try:
        result = run(TrainConfig.from_dict(config), progress=rank == 0)
    except TrainingInterrupted as e:  # every rank stops at the same step; rank 0 reports it
        result = e
    if rank == 0:
        results.put(result)


def launch(config: Any, nproc: int) -> Any:
    """Run `train.loop.run(config)` in N local processes and return rank 0's `TrainResult`.
    Options and data are checked here first, so a mistake is one line and not N tracebacks.

    Ctrl-C: a terminal sends it to every process of the job, so this one only waits for the
    ranks to stop after their step (`train.interrupt`) and raises their `TrainingInterrupted`;
    at a second Ctrl-C it stops them at once. (A SIGINT sent to this process alone is not passed
    on: the ranks would get two from a terminal's one.)"""
    if nproc < 1:
        raise UserError(f"--nproc must be 1 or more, got {nproc}")
    if env_group().active:
        raise UserError("--nproc inside a torchrun job: give one or the other")
    run_dir = preflight(config)[0].run_dir
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    try:
        with sigint_stops():
            _join(mp.start_processes(_child, args=(nproc, free_port(), config.to_dict(), results), nprocs=nproc,
                                     join=False, start_method="spawn"), run_dir)
    except mp.ProcessRaisedException as e:
        last = str(e).rstrip().splitlines()[-1]
        raise UserError(f"a training process failed: {last.split(': ', 1)[-1]}") from None
    except mp.ProcessExitedException as e:
        raise UserError(f"a training process exited with code {e.exit_code}") from None
    result = results.get()
    if isinstance(result, TrainingInterrupted):
        raise result
    return result


def _join(context: Any, run_dir: Any) -> None:
    """Wait for every process; a second Ctrl-C stops them (SIGTERM, then SIGKILL)."""
    try:
        while not context.join():
            pass
    except KeyboardInterrupt:
        for p in context.processes:
            p.terminate()
        for p in context.processes:
            p.join(10)
            if p.is_alive():
                p.kill()
        raise TrainingAborted(aborted_message(run_dir)) from None
