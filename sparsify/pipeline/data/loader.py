"""Batches for training and evaluation: torch DataLoaders over a seeded batch order.

The order of one epoch is ``perm = torch.randperm(n, generator=gen)`` and the global batches
are ``perm[i : i + B]`` (the order the lecture code used, so in-memory MNIST runs repeat bit
for bit). Under DDP each rank takes positions ``rank, rank + W, ...`` of every *global* batch,
so W processes see exactly the batches one process would (see
:mod:`sparsify.pipeline.distributed`). torch's ``DistributedSampler`` is not used: it splits
the *epoch* between ranks (each rank batches its own half), which changes every batch and so
the trained weights with the world size.

A ``TensorDataset`` (data held in memory), or a dataset that says it is ``batched`` (an in-
memory set under a batch augmentation), is indexed with the whole batch of indices at once
(``batch_size=None``: no per-item fetch, no collate copy); any other Dataset goes through the
DataLoader's usual per-item fetch and collate, in ``num_workers`` worker processes if asked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from sparsify.pipeline.distributed import DistContext


class ShuffledBatches(Sampler[torch.Tensor]):
    """This rank's share of each global batch of a fresh ``randperm(n, generator)`` per epoch.

    The permutation is drawn when iteration starts (once per epoch, in the main process even
    with workers), so the generator's state after an epoch is all a resumed run needs.
    """

    def __init__(
        self, n: int, batch_size: int, generator: torch.Generator, dist: DistContext
    ) -> None:
        self.n, self.batch_size, self.generator, self.dist = n, batch_size, generator, dist

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        perm = torch.randperm(self.n, generator=self.generator)
        for i in range(0, self.n, self.batch_size):
            yield self.dist.shard(perm[i : i + self.batch_size])


class FixedBatches(Sampler[torch.Tensor]):
    """This rank's shard of ``0..n-1`` in order, in batches of ``batch_size`` (evaluation)."""

    def __init__(self, n: int, batch_size: int, dist: DistContext) -> None:
        self.idx = dist.shard(torch.arange(n))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.idx) / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(0, len(self.idx), self.batch_size):
            yield self.idx[i : i + self.batch_size]


class _AsLists(Sampler[list[int]]):
    """A batch sampler of index lists for the per-item path."""

    def __init__(self, batches: Sampler[torch.Tensor]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.batches:
            yield b.tolist()


def batch_loader(
    dataset: Dataset,
    batches: Sampler[torch.Tensor],
    *,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader yielding ``(x, y)`` for each index batch of ``batches``.

    ``generator`` seeds the workers (and keeps torch's global RNG untouched: a DataLoader
    without one draws its base seed from the global RNG every epoch).
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if isinstance(dataset, TensorDataset) or getattr(dataset, "batched", False):
        return DataLoader(
            dataset, sampler=batches, batch_size=None, num_workers=num_workers, generator=gen
        )
    return DataLoader(
        dataset, batch_sampler=_AsLists(batches), num_workers=num_workers, generator=gen
    )


class TrainBatches:
    """Iterate one epoch of ``(x, y, global batch size)`` from a shuffled DataLoader.

    ``global batch size`` is the size of the batch across all ranks (the last one may be
    short), which the loss scaling of the loop needs.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        generator: torch.Generator,
        dist: DistContext | None = None,
        num_workers: int = 0,
        worker_generator: torch.Generator | None = None,
    ) -> None:
        self.n = len(dataset)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.generator = generator
        self.worker_generator = worker_generator or torch.Generator().manual_seed(0)
        sampler = ShuffledBatches(self.n, batch_size, generator, dist or DistContext())
        self.loader = batch_loader(
            dataset, sampler, num_workers=num_workers, generator=self.worker_generator
        )

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        for step, (x, y) in enumerate(self.loader):
            yield x, y, min(self.batch_size, self.n - step * self.batch_size)
