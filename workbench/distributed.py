"""Joining a data-parallel job started by ``torchrun``.

``torchrun --nproc-per-node N -m workbench.cli ...`` starts N copies of a command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment.
``torchrun_process`` reads them, joins the process group with torch's default backend for the
device (gloo on the CPU, NCCL on CUDA: one code path) and leaves it again. Run without
``torchrun``, it is a group of one and starts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from workbench.devices import resolve_device
from workbench.errors import DeviceError, one_line

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Process:
    """This process's place in the job, and the device its model goes on."""

    rank: int
    world: int
    local_world: int
    device: torch.device

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world): which share of a stream this process reads."""
        return self.rank, self.world

    @property
    def leader(self) -> bool:
        """Rank 0 writes files and shows progress."""
        return self.rank == 0

    @property
    def threads(self) -> int:
        """Torch threads per process: the machine's cores shared by the processes on it."""
        return max(1, (os.cpu_count() or 1) // self.local_world)


@contextmanager
def torchrun_process(device: str = "auto") -> Iterator[Process]:
    """This process's ``Process``, inside the job's process group for the ``with`` block.

    ``device`` is as for ``load_model``; under ``torchrun`` an accelerator chosen without an
    index (``auto``, ``cuda``) becomes the one of this process's ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = resolve_device(device)
    if world <= 1:
        yield Process(0, 1, 1, chosen)
        return
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise DeviceError(
            f"WORLD_SIZE is {world} but {', '.join(missing)} not set; start data-parallel runs "
            "with torchrun --nproc-per-node N -m workbench.cli ..."
        )
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if chosen.type != "cpu" and str(device) in ("auto", chosen.type):
        chosen = torch.device(chosen.type, local)
    import torch.distributed as dist

    try:
        dist.init_process_group(backend=dist.get_default_backend_for_device(chosen))
    except (RuntimeError, ValueError) as err:
        raise DeviceError(f"could not join the torchrun job: {one_line(err)}") from None
    try:
        yield Process(rank, world, local_world, chosen)
    finally:
        dist.destroy_process_group()
