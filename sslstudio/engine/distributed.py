"""Data-parallel training over several processes (``torchrun --nproc-per-node N -m sslstudio pretrain``).

``torchrun`` starts N copies of the command with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in
the environment. :func:`init_distributed` reads them, joins the process group (NCCL when the run
trains on CUDA GPUs, gloo on the CPU) and gives each process its GPU (``cuda:LOCAL_RANK``).

How the work is split, so that N processes train the same recipe as one:

- ``--batch-size`` stays the *global* batch (the paper's number). Every global batch of
  ``(epoch, index)`` keys is cut into N interleaved shards (``keys[rank::N]``), one per process;
  DistributedDataParallel averages the gradients, so one optimiser step still sees the whole batch.
  The batch size must therefore be a multiple of N.
- BatchNorm's running statistics are averaged over the processes after every epoch, before the
  held-out evaluation and the checkpoint.
- With a decode cache, rank 0 decodes the folder into it while the others wait (the process group's
  timeout is 2 hours, ``SSLSTUDIO_DIST_TIMEOUT_MIN`` changes it); they then map the same file.
- Every process makes the same epoch order (it is seeded by the run seed and epoch) and makes its
  shard's samples on its own device with the task's ``make_batch``, drawing from a generator keyed
  by (seed, epoch, step, rank), and passing the shard's item indices.
- Only rank 0 writes the run folder and emits events; losses, metrics and sample counts are
  summed over the processes (``all_reduce``) before they are recorded, so ``metrics.jsonl`` holds
  the figures of the whole global batch.
- A task whose state changes between epochs (DeepCluster's clusters) computes it on every rank;
  rank 0's state, plan and weights are then broadcast so that no rank drifts.
- At the end each process fingerprints its final weights (SHA-256 of every tensor's bytes) and the
  fingerprints are gathered into ``summary.json`` (``distributed.ranks_agree``).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass

import torch

from sslstudio.errors import ConfigError

__all__ = ["DistContext", "init_distributed", "state_digest"]


@dataclass
class DistContext:
    """Where this process stands in a data-parallel run (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batches: list[list]) -> list[list]:
        """This process's share of every global batch of keys."""
        if not self.enabled:
            return batches
        return [keys[self.rank::self.world_size] for keys in batches]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        if self.backend == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t)
        return t.cpu().tolist()

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather_object(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Overwrite every parameter and buffer with rank 0's values."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(tensor.data, src=0)

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over the processes.

        DistributedDataParallel keeps parameters equal, but each process updates its running
        statistics from its own shard during the last forward pass of an epoch; averaging them
        gives every process the same (and better estimated) statistics before evaluation and
        checkpoints.
        """
        if not self.enabled:
            return
        with torch.no_grad():
            for buf in module.buffers():
                if buf.is_floating_point():
                    torch.distributed.all_reduce(buf.data)
                    buf.data.div_(self.world_size)
                else:
                    torch.distributed.broadcast(buf.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise ConfigError(f"the environment variable {name}={value!r} is not a number; "
                          "start distributed runs with torchrun.") from None


def init_distributed(device: str) -> tuple[DistContext, str]:
    """Join the process group ``torchrun`` describes (if any).

    Args:
        device: The run's ``--device`` setting (``auto``, ``cpu``, ``cuda``, ...).

    Returns:
        The context and the device this process trains on (``cuda:LOCAL_RANK`` on GPUs).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not torch.distributed.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run a single process instead of torchrun.")
    name = (device or "auto").lower()
    use_cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} with torchrun needs CUDA GPUs, and none is available; "
                              "use --device cpu for gloo processes on the CPU.")
        local_gpus = torch.cuda.device_count()
        if local_rank >= local_gpus:
            raise ConfigError(f"torchrun started process {local_rank} on this machine but it has only "
                              f"{local_gpus} GPU(s); use --nproc-per-node {local_gpus} or fewer.")
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", f"cuda:{local_rank}"
    else:
        backend, device = "gloo", "cpu"
    owns = False
    if not torch.distributed.is_initialized():
        # generous: the other processes wait while rank 0 fills the decode cache of a large folder
        timeout = datetime.timedelta(minutes=_env_int("SSLSTUDIO_DIST_TIMEOUT_MIN", 120))
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout)
        owns = True
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, owns_group=owns), device


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor of ``module.state_dict()`` (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(tensor.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
