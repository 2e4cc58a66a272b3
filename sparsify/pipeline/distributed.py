"""Data-parallel training with PyTorch's own engine (DDP), launched by ``torchrun``.

    torchrun --nproc_per_node=2 -m sparsify train RECIPE --out DIR

Each global mini-batch is split across ranks (rank r takes positions r, r+W, ...), so W
processes see exactly the batches one process would. The loss on a rank is
``sum(CE over its shard) * W / B`` with B the global batch size; DDP averages gradients over
W ranks, which gives ``sum(CE over the batch) / B``: the single-process gradient, for any
split (even uneven last batches). Identical gradients make identical steps, so the proximal
step, applied after ``optimizer.step()`` on every rank, keeps the weights bit-identical.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sparsify.errors import SparsifyError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size and its device. World size 1 = no DDP."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes artifacts and prints."""
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch of indices."""
        return idx[self.rank :: self.world_size] if self.enabled else idx

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (identity without DDP)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set WORLD_SIZE > 1 for this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def distributed(device_spec: str = "auto") -> Iterator[DistContext]:
    """Initialise the process group from torchrun's environment; tear it down on exit.

    Backend: nccl when training on CUDA, gloo on CPU. Without torchrun, yields a
    single-process context and initialises nothing.
    """
    if not launched_by_torchrun():
        yield DistContext()
        return
    use_cuda = device_spec == "cuda" or (device_spec == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise SparsifyError(
                "device 'cuda' was asked for under torchrun but no GPU is visible; set "
                "device: cpu or auto."
            )
        if local_rank >= gpus:  # torch's own error here names neither cause nor fix
            raise SparsifyError(
                f"torchrun started local rank {local_rank} but {gpus} CUDA GPU(s) are visible; "
                f"start at most {gpus} process(es) per node (--nproc_per_node={gpus}) or set "
                "device: cpu."
            )
        torch.cuda.set_device(local_rank)
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    try:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    except (RuntimeError, ValueError) as exc:
        raise SparsifyError(
            f"could not join the torchrun process group ({exc}); check the launcher settings."
        ) from None
    try:
        yield DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)
    finally:
        dist.destroy_process_group()
