"""Batches of task samples, made on the training device, reproducibly.

Every batch the program makes (training, the held-out evaluation, the preview, bench) is made by
:func:`make_task_batch`: the batch's items gathered with one numpy indexing operation, copied to
the device, and turned into ``(inputs, target)`` there by the task's ``make_batch`` with a CPU
generator seeded from :func:`batch_seed` ``(seed, epoch, step[, rank])``. The order of an epoch
comes from ``torch.Generator().manual_seed(seed * 1_000_003 + epoch)``. So a batch is a function
of the run seed, the epoch and the step alone, a resumed run sees exactly the batches it would
have seen, and a preview shows what training makes of the same items.
"""

from __future__ import annotations

import numpy as np
import torch

VAL_EPOCH = 2**31 - 1  # the "epoch" whose randomness the held-out samples use, fixed for a run


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


def batch_seed(seed: int, epoch: int, step: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for the generator of one batch (``stream``: the process's rank in a
    data-parallel run, so that each shard of a global batch draws its own random numbers)."""
    parts = (int(seed), int(epoch), int(step)) + ((int(stream),) if stream else ())
    return int(np.random.SeedSequence(parts).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_task_batch(task, items, index, seed: int, epoch: int, step: int, device: torch.device,
                    stream: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The task's batch of ``items[index]``: the one way training, the preview and bench make samples.

    The items are copied to ``device`` (pinned and non-blocking on CUDA) with their int64 indices,
    and ``task.make_batch`` draws its randomness from a generator seeded with
    :func:`batch_seed` ``(seed, epoch, step, stream)``.
    """
    index = np.asarray(index, dtype=np.int64)
    images = torch.from_numpy(np.ascontiguousarray(items[index]))
    positions = torch.from_numpy(index)
    if device.type == "cuda":
        images, positions = images.pin_memory(), positions.pin_memory()
    images = images.to(device, non_blocking=True)
    positions = positions.to(device, non_blocking=True)
    generator = torch.Generator().manual_seed(batch_seed(seed, epoch, step, stream))
    return task.make_batch(images, generator, positions)


class DeviceBatches:
    """An epoch's batches of ``(epoch, index)`` keys, each made by :func:`make_task_batch` when iterated.

    Step ``k`` of the list (counted from 0) is made with the generator of ``(seed, epoch, k,
    stream)``; ``stream`` is the process's rank, whose shard of each global batch the keys are.
    """

    def __init__(self, items, task, seed: int, batches: list, device: torch.device, stream: int = 0):
        self.items, self.task, self.seed, self.batches, self.device = items, task, int(seed), batches, device
        self.stream = int(stream)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for step, keys in enumerate(self.batches):
            index = np.fromiter((i for _, i in keys), dtype=np.int64, count=len(keys))
            yield make_task_batch(self.task, self.items, index, self.seed, keys[0][0], step, self.device,
                                  self.stream)
