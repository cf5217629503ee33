"""Data-parallel training on ``torch.distributed``: the process group of a ``torchrun`` launch, and the values that
rank 0 decides for every rank.

``deepwiener train ... --distributed`` under ``torchrun`` calls :func:`init` (gloo on CPU, nccl on CUDA, one GPU per
process); ``training.fit`` then trains through ``DistributedDataParallel``: every rank takes a disjoint share of each
global batch, DDP averages the gradients, and rank 0 alone writes files. Whatever ends or repeats an epoch (the time
budget, early stopping, a divergence rollback) is decided from rank 0's numbers, broadcast by :meth:`World.from_main`,
so no rank waits for a collective that another one skipped. Without a process group, :func:`current` is the one-process
world, whose methods return their arguments.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from deepwiener.errors import ConfigError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""The environment that ``torchrun`` gives each process."""


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the process group.

    Attributes:
        rank: this process's rank (0: the one that writes files).
        size: the number of processes.
        local_rank: the rank on this machine (its GPU, on CUDA).
        device: where the collectives' tensors live ("cpu" for gloo, "cuda" for nccl).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run and its checkpoints and holds its lock."""
        return self.rank == 0

    def from_main(self, *values: float) -> tuple[float, ...]:
        """Rank 0's ``values`` on every rank (one broadcast; the values themselves in one process)."""
        if self.size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return tuple(tensor.tolist())

    def object_from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` (picklable) on every rank; ``value`` itself in one process."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=torch.device(self.device))
        return box[0]

    def sum(self, value: torch.Tensor) -> float:
        """The sum of a scalar tensor over the ranks."""
        if self.size == 1:
            return float(value)
        total = value.detach().to(device=self.device, dtype=torch.float64).reshape(1).clone()
        dist.all_reduce(total)
        return float(total)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` (it averages the gradients in ``backward``); the model itself in one
        process."""
        if self.size == 1:
            return model
        ids = [self.local_rank] if self.device == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def current() -> World:
    """The world of the default process group, if one is initialised; else the one-process world."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")), device=device)


def init(device: str) -> World:
    """Join the process group of a ``torchrun`` launch: gloo for a CPU device, nccl (this machine's GPU
    ``LOCAL_RANK``) for CUDA.

    Raises:
        ConfigError: not started by ``torchrun`` (its environment is missing), or torch.distributed is missing.
    """
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise ConfigError(f"--distributed runs under torchrun (missing {', '.join(missing)}): torchrun "
                          "--nproc_per_node N $(which deepwiener) train ... --distributed")
    if not dist.is_available():
        raise ConfigError("--distributed needs a torch built with torch.distributed")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current()


def close(wait: bool = False) -> None:
    """Leave the process group (a no-op without one).

    Args:
        wait: first wait for every other rank (after a run that ended well on this rank), so that no rank tears
            down its connections while rank 0 still writes the run (gloo aborted a rank once in that window).
            Not after an error: the other ranks may never reach the barrier, and torchrun stops them when this
            one exits.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()
