"""Mini-batch samplers over a multi-task dataset (seed Sec. 2).

Three ways to fill a global batch of `batch_size` samples, where `tasks[i]` is the task of
sample i:
- "uniform" (the paper's): a random permutation of all samples cut into batches.
- "task": one task per batch; each task's permutation is cut into batches, then the batches
  of all tasks are shuffled together.
- "balanced": an equal share of each task per batch (when batch_size is not a multiple of the
  number of tasks, the leftover slots go to tasks drawn at random, so shares differ by at most
  one); each task is read in successive random permutations, cycling when it runs out. An
  epoch has len(tasks) // batch_size batches.

Each sampler yields lists of dataset indices (use `DataLoader(batch_sampler=...)`), is
deterministic per (seed, epoch) (call `set_epoch` before each epoch), and serves one process
of `world_size`: process `rank` gets its contiguous share of batch_size // world_size samples
of every global batch, so the shares of all ranks make up the global batch.
With drop_last=False, a last short batch is topped up with the first samples of the same
permutation so every batch is full.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from gpvcli.errors import GPVError


def _cut(order: np.ndarray, size: int, drop_last: bool) -> list[np.ndarray]:
    """Consecutive batches of `size` from `order`; a short last batch is dropped or topped up."""
    n_full = len(order) // size
    batches = [order[i * size : (i + 1) * size] for i in range(n_full)]
    tail = order[n_full * size :]
    if len(tail) and not drop_last:
        batches.append(np.concatenate([tail, np.resize(order, size - len(tail))]))
    return batches


def _n_batches(n: int, size: int, drop_last: bool) -> int:
    return n // size if drop_last else math.ceil(n / size)


class TaskBatchSampler(Sampler[list[int]]):
    """Base of the three samplers: validation, per-epoch seeding and the per-rank share."""

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        batch_size: int,
        seed: int,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not len(tasks):
            raise GPVError("cannot sample batches from an empty dataset")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise GPVError(
                f"bad sampler settings: batch_size={batch_size}, rank={rank}, world_size={world_size}"
            )
        if batch_size % world_size:
            raise GPVError(
                f"the global batch size {batch_size} is not a multiple of the {world_size} processes",
                hint="choose a batch size divisible by the number of processes",
            )
        names = np.asarray(tasks)
        self.groups = {t: np.flatnonzero(names == t) for t in sorted(set(tasks))}
        self.num_samples = len(tasks)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        share = self.batch_size // self.world_size
        for batch in self._global_batches(rng):
            yield batch[self.rank * share : (self.rank + 1) * share].tolist()

    def __len__(self) -> int:
        raise NotImplementedError

    def _global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        raise NotImplementedError


class UniformBatchSampler(TaskBatchSampler):
    """Uniform over all samples of all tasks (the paper's)."""

    def __len__(self) -> int:
        return _n_batches(self.num_samples, self.batch_size, self.drop_last)

    def _global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        return _cut(rng.permutation(self.num_samples), self.batch_size, self.drop_last)


class SingleTaskBatchSampler(TaskBatchSampler):
    """One task per batch. With drop_last, a task with fewer samples than a batch gets no batch."""

    def __len__(self) -> int:
        return sum(_n_batches(len(g), self.batch_size, self.drop_last) for g in self.groups.values())

    def _global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        batches = [
            b for g in self.groups.values() for b in _cut(rng.permutation(g), self.batch_size, self.drop_last)
        ]
        return [batches[i] for i in rng.permutation(len(batches))]


class BalancedBatchSampler(TaskBatchSampler):
    """An equal share of each task per batch, sampling each task by cycling permutations."""

    def __len__(self) -> int:
        return _n_batches(self.num_samples, self.batch_size, self.drop_last)

    def _global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        cyclers = [_Cycler(g, rng) for g in self.groups.values()]
        k = len(cyclers)
        batches = []
        for _ in range(len(self)):
            counts = np.full(k, self.batch_size // k)
            counts[rng.choice(k, self.batch_size % k, replace=False)] += 1
            parts = [c.take(n) for c, n in zip(cyclers, counts)]
            # Interleave the tasks (t0 t1 t2 t0 t1 t2 ...) so each rank's share is balanced too.
            order = np.argsort(np.concatenate([np.arange(n) / n for n in counts if n]), kind="stable")
            batches.append(np.concatenate(parts)[order])
        return batches


class _Cycler:
    """Reads a task's samples in successive random permutations; a batch that straddles two
    permutations gets no sample twice (unless it asks for more samples than the task has)."""

    def __init__(self, group: np.ndarray, rng: np.random.Generator):
        self.group = group
        self.rng = rng
        self.order = rng.permutation(group)
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        out = self.order[self.pos : self.pos + n]
        self.pos += len(out)
        while len(out) < n:
            order = self.rng.permutation(self.group)
            taken = np.isin(order, out)
            self.order = np.concatenate([order[~taken], order[taken]])  # this batch's samples last
            self.pos = min(n - len(out), len(order))
            out = np.concatenate([out, self.order[: self.pos]])
        return out


SAMPLERS = {"uniform": UniformBatchSampler, "task": SingleTaskBatchSampler, "balanced": BalancedBatchSampler}


def make_batch_sampler(
    kind: str,
    tasks: Sequence[str],
    *,
    batch_size: int,
    seed: int,
    drop_last: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> TaskBatchSampler:
    """The batch sampler of `kind` ("uniform", "task" or "balanced"); see the module docstring."""
    if kind not in SAMPLERS:
        raise GPVError(f"unknown sampling {kind!r}", hint=f"choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[kind](
        tasks, batch_size=batch_size, seed=seed, drop_last=drop_last, rank=rank, world_size=world_size
    )
