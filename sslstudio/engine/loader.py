"""Datasets and loaders that turn decoded images into task samples, reproducibly.

Every sample's randomness comes from ``numpy.random.default_rng((seed, epoch, index))`` and the
order of an epoch from ``torch.Generator().manual_seed(seed, epoch)``: a run is the same whatever
the number of worker processes, and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

VAL_EPOCH = 2**31 - 1  # the "epoch" whose randomness the held-out samples use, fixed for a run


class TaskDataset(Dataset):
    """Indexable by ``(epoch, index)``: the task's sample of image ``index`` in that epoch."""

    def __init__(self, arrays: np.ndarray, task, seed: int):
        self.arrays = arrays
        self.task = task
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, key):
        epoch, index = key
        rng = np.random.default_rng((self.seed, int(epoch), int(index)))
        return self.task.make_item(int(index), self.arrays[index], rng)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  drop_last: bool = True, order=None) -> list[list[tuple[int, int]]]:
    """Batches of ``(epoch, index)`` keys for one epoch (``order``: the task's own index order)."""
    if order is not None:
        order = [int(i) for i in order]
        n = len(order)
    elif shuffle:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    if drop_last and n >= batch_size:
        n_batches = n // batch_size
    else:
        n_batches = (n + batch_size - 1) // batch_size
    return [[(epoch, i) for i in order[b * batch_size:(b + 1) * batch_size]] for b in range(n_batches)]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def make_loader(dataset: TaskDataset, batches: list, workers: int, pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=_worker_init if workers > 0 else None,
                      prefetch_factor=4 if workers > 0 else None)
