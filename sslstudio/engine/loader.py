"""Datasets and loaders that turn decoded images into task samples, reproducibly.

A task with a batch transform draws each batch's randomness from a generator seeded with
:func:`batch_seed` ``(seed, epoch, step[, rank])``; a per-sample task draws each sample's from
``numpy.random.default_rng((seed, epoch, index))``. The order of an epoch comes from
``torch.Generator().manual_seed(seed * 1_000_003 + epoch)``. So a run is the same whatever the
number of worker processes, and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

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
    """A loader worker computes samples with one thread (its randomness is seeded per sample, not per worker)."""
    torch.set_num_threads(1)


def make_loader(dataset: TaskDataset, batches: list, workers: int, pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=_worker_init if workers > 0 else None,
                      prefetch_factor=4 if workers > 0 else None)


def batch_seed(seed: int, epoch: int, step: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for the generator of one batch (``stream``: the process's rank in a
    data-parallel run, so that each shard of a global batch draws its own random numbers)."""
    parts = (int(seed), int(epoch), int(step)) + ((int(stream),) if stream else ())
    return int(np.random.SeedSequence(parts).generate_state(1, dtype=np.uint64)[0] >> 1)


class DeviceBatches:
    """Batches a task builds itself from uint8 images on the training device (tasks with ``make_batch``).

    The images of a batch are gathered with one numpy indexing operation, copied to the device
    (pinned and non-blocking on CUDA), and turned into inputs there by whole-tensor operations:
    no per-image Python, no worker processes needed.
    """

    def __init__(self, items: np.ndarray, task, seed: int, batches: list, device: torch.device, stream: int = 0):
        self.items, self.task, self.seed, self.batches, self.device = items, task, int(seed), batches, device
        self.stream = int(stream)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        pin = self.device.type == "cuda"
        for step, keys in enumerate(self.batches):
            epoch = keys[0][0]
            index = np.fromiter((i for _, i in keys), dtype=np.int64, count=len(keys))
            images = torch.from_numpy(self.items[index])
            if pin:
                images = images.pin_memory()
            images = images.to(self.device, non_blocking=True)
            generator = torch.Generator().manual_seed(batch_seed(self.seed, epoch, step, self.stream))
            yield self.task.make_batch(images, generator)


def task_batches(dataset: TaskDataset, batches: list, workers: int, device: torch.device, stream: int = 0):
    """Device-side batches when the task can build them, else a DataLoader over its samples."""
    if getattr(dataset.task, "batch_transform", False):
        return DeviceBatches(dataset.arrays, dataset.task, dataset.seed, batches, device, stream)
    return make_loader(dataset, batches, workers, pin_memory=device.type == "cuda")


class _EpochBatches(Sampler):
    """A batch sampler whose batches are replaced before each epoch (the DataLoader stays)."""

    def __init__(self):
        self.batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class EpochLoaders:
    """The loader of each training epoch, keeping DataLoader worker processes alive across epochs.

    Per-sample tasks run in worker processes; starting them (and filling their prefetch queues)
    every epoch costs time, so the DataLoader is made once with ``persistent_workers`` and only
    its batches change. Tasks whose samples depend on state that :meth:`begin_epoch` changes
    (DeepCluster's cluster labels) get fresh workers each epoch, which see the new state.
    """

    def __init__(self, dataset: TaskDataset, workers: int, device: torch.device, stream: int = 0):
        from sslstudio.tasks.base import PretextTask

        self.dataset, self.workers, self.device, self.stream = dataset, int(workers), device, int(stream)
        task = dataset.task
        self.persistent = (self.workers > 0 and not getattr(task, "batch_transform", False)
                           and type(task).begin_epoch is PretextTask.begin_epoch)
        self._sampler: _EpochBatches | None = None
        self._loader: DataLoader | None = None

    def __call__(self, batches: list):
        if not self.persistent:
            return task_batches(self.dataset, batches, self.workers, self.device, self.stream)
        if self._loader is None:
            self._sampler = _EpochBatches()
            self._loader = DataLoader(self.dataset, batch_sampler=self._sampler, num_workers=self.workers,
                                      pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init,
                                      prefetch_factor=4, persistent_workers=True)
        self._sampler.batches = batches
        return self._loader

    def close(self) -> None:
        """Stop the worker processes (also after a cancelled epoch left batches in flight)."""
        if self._loader is not None:
            iterator = getattr(self._loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
            self._loader = None
            self._sampler = None
