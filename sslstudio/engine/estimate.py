"""How long a pretraining run will take on this machine, and a recipe that fits a machine without a GPU.

:func:`estimate_minutes` builds the task and model as the engine does, times a few training steps
on a few of the folder's images (with :mod:`sslstudio.engine.bench`'s timing: one warm-up step,
then ``steps`` timed ones) and extrapolates to the run: epochs x steps per epoch, plus the held-out
images' forward passes after each epoch (and DeepCluster's feature pass before each epoch).

:func:`paper_recipe` is the task's optimisation recipe (its paper's epochs, batch size and learning
rate) at the application's default backbone and size; :func:`cpu_recipe` is one sized for a 2-4 core
CPU, chosen from measurements (:data:`CPU_RECIPES`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from sslstudio.engine.bench import rate, train_step
from sslstudio.engine.device import autocast, device_name, resolve_device, resolve_precision
from sslstudio.engine.events import EventSink, LogEvent, RunControl
from sslstudio.engine.loader import DeviceBatches, epoch_batches, make_task_batch
from sslstudio.settings import check_settings

__all__ = ["CPU_LR", "CPU_RECIPES", "Estimate", "cpu_recipe", "estimate_minutes", "format_estimate", "has_gpu",
           "paper_recipe", "recipe_text"]

#: The CPU recipe's batch size (source images): small enough for many steps per epoch on a
#: 4,000-image folder, large enough for BatchNorm statistics.
CPU_BATCH = 64

#: Per task: (backbone, image size, epochs), for about 5-20 minutes on 2 cores and 4,000 images. Measured
#: on the development machine (2 cores, no GPU, other work running beside: load 1.2-2) with
#: :func:`estimate_minutes` on ``shared/data/unlabelled`` (3,900 images), 2026-12-04:
#:
#: - rotation, batch 64, one thread: ``resnet18`` at 32 px 124-142 samples/s, at 64 px 46-67;
#:   ``resnet18_small`` at 32 px 21 (its full-resolution layer1 costs ~6x the standard stem's at the same
#:   size; at 64 px docs/benchmarks.md measured 9 samples/s on two threads). ``sslstudio bench`` agreed:
#:   ``resnet18_small`` 32 px 16 samples/s against 78 for ``resnet18`` at 32 px (both under load). So
#:   the standard stem at 32 px (1 x 1 at layer4) is the CPU backbone; the small stem does not fit.
#: - two threads, the recipes below, seconds per epoch: rotation 68-76 (10 epochs: 11-13 min), jigsaw
#:   105-120 (10: 18-20 min), context 26 (20: 9 min), colorization 27 (15: 7 min), inpainting 25 (20: 8 min),
#:   autoencoder 24 (20: 8 min), exemplar 41 (30: 20 min), deepcluster 20 plus its k-means (20: 7 min).
#: - checked against the engine: a 1-epoch rotation run at 32 px took 82 s (estimate 68-76 s per epoch);
#:   jigsaw at 64 px over 640 images trained at 32.5 samples/s (estimate 32-35).
#:
#: Whether each recipe learns was measured with these exact settings (fp32) on a GPU, 2026-12-04; the
#: table is in docs/fidelity.md ("Does each task learn with its CPU recipe?").
CPU_RECIPES: dict[str, tuple[str, int, int]] = {
    "rotation": ("resnet18", 32, 10),
    "jigsaw": ("resnet18", 64, 10),  # 32 px makes 9 px tiles; 64 px (18 px tiles) is the smallest sensible
    "context": ("resnet18", 64, 20),  # 32 px makes 7 px patches; two 15 px patches per image are cheap
    "colorization": ("resnet18", 32, 15),  # the paper's 15 epochs, at 32 px
    "inpainting": ("resnet18", 32, 20),
    "autoencoder": ("resnet18", 32, 20),
    "exemplar": ("resnet18", 32, 30),
    "deepcluster": ("resnet18", 32, 20),
    # the two-view tasks, measured end to end on 2 cores (docs/fidelity.md): 2-9 min each
    "simclr": ("resnet18", 32, 10),  # 2 min 6 s
    "simsiam": ("resnet18", 32, 10),  # 2 min 34 s
    "moco": ("resnet18", 32, 10),  # 4 min 47 s
    "byol": ("resnet18", 32, 10),  # 8 min 27 s
}

#: Learning rates that replace the linearly scaled one, where that one did not learn in the recipe's epochs
#: (measured as above, held-out pretext accuracy at the end; docs/fidelity.md):
#:
#: - jigsaw: the scaled 0.0025 ended at chance in 8 epochs (2.1% and 1.0% against 1.0%); 0.01 reached 9.2%
#:   and 8.2% (seeds 0 and 1) in 8 epochs and 17.9% in 10; 0.02 and 0.03 collapsed to a constant
#:   answer (held-out 0.0%, loss ln 100);
#: - exemplar (3,705 surrogate classes): the scaled 0.005 ended at 0.0% in 15 epochs; 0.02 reached 1.3% in
#:   15 and 9.0% in 30 epochs, 0.05 1.4% in 15 and 10.3% in 30.
CPU_LR: dict[str, float] = {"jigsaw": 0.01, "exemplar": 0.05}


def has_gpu() -> bool:
    """Whether a CUDA or MPS device is available (what ``device=auto`` would train on)."""
    return resolve_device("auto").type != "cpu"


def paper_recipe(task_name: str) -> dict:
    """The task's paper recipe: its ``optim`` epochs, batch size and learning rate, at the application's
    declared default backbone and image size (:class:`~sslstudio.engine.pretrain.PretrainConfig`'s
    ``arch`` and ``image_size``; the papers' own networks and image sizes differ, see docs/fidelity.md)."""
    from sslstudio.engine.pretrain import PretrainConfig
    from sslstudio.tasks import get_task

    optim = get_task(task_name).optim
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    return {"arch": defaults["arch"], "image_size": defaults["image_size"], "epochs": int(optim.epochs),
            "batch_size": int(optim.batch_size), "lr": float(optim.lr)}


def cpu_recipe(task_name: str) -> dict:
    """A recipe whose whole run takes about 5-20 minutes on 2 CPU cores for a 4,000-image folder.

    Chosen from measurements (:data:`CPU_RECIPES` has the figures): ``resnet18`` at 32 px runs 2-3x
    faster than at 64 px, and ``resnet18_small`` (3x3 stem, no max-pool) at 32 px about 6x slower than
    ``resnet18`` at 32 px, so the standard stem at 32 px is the CPU backbone (layer4 still ends on a
    1 x 1 map). Tasks whose network input is a part of the image (jigsaw's tiles, context's patches)
    keep 64 px: at 32 px their inputs would be 7-9 px. The epochs put the run in that window.

    The batch is :data:`CPU_BATCH` images (or the paper's, when smaller) and the learning rate the
    paper's scaled linearly with the batch (``lr x batch / paper batch``, the linear scaling rule of
    Goyal et al. 2017), except where that rate did not learn in the recipe's few epochs (:data:`CPU_LR`:
    jigsaw, exemplar); with fewer than 30 epochs the ``auto`` schedule is warm-up + cosine (a constant rate
    for a constant-rate paper: DeepCluster). Every value
    is within the task's and :class:`~sslstudio.engine.pretrain.PretrainConfig`'s declared ranges, and
    the image size is at least the task's ``min_image_size``. Whether such a short run learns its
    pretext task is not promised: the run's verdict says.
    """
    from sslstudio.tasks import get_task

    cls = get_task(task_name)
    arch, size, epochs = CPU_RECIPES.get(task_name, ("resnet18", 32, 10))
    optim = cls.optim
    batch = min(CPU_BATCH, int(optim.batch_size))
    lr = CPU_LR.get(task_name, float(optim.lr) * batch / int(optim.batch_size))
    return {"arch": arch, "image_size": max(size, int(cls.min_image_size)), "epochs": epochs,
            "batch_size": batch, "lr": float(f"{lr:.3g}")}


def recipe_text(recipe: dict) -> str:
    """``resnet18 at 32 px, 10 epochs, batch 64, lr 0.05``."""
    return (f"{recipe['arch']} at {recipe['image_size']} px, {recipe['epochs']} epochs, batch {recipe['batch_size']}, "
            f"lr {recipe['lr']:.3g}")


@dataclass(frozen=True)
class Estimate:
    """A run's duration extrapolated from timed steps."""

    seconds: float
    samples_per_s: float  # training samples per second (network inputs, as the engine counts them)
    seconds_per_epoch: float
    epochs: int
    steps_per_epoch: int
    train_items: int
    held_out_items: int
    timed_batch: int  # source images per timed step
    device: str
    measured_s: float  # how long the measurement took

    @property
    def minutes(self) -> float:
        return self.seconds / 60.0

    def text(self) -> str:
        """``≈ 12 min on this machine``."""
        return f"{format_estimate(self.seconds)} on this machine"


def format_estimate(seconds: float) -> str:
    """``≈ 12 min``, ``≈ 1 h 05 min``, ``< 1 min``."""
    if not math.isfinite(seconds):
        return "≈ ? min"
    minutes = int(round(seconds / 60.0))
    if minutes < 1:
        return "< 1 min"
    if minutes < 60:
        return f"≈ {minutes} min"
    return f"≈ {minutes // 60} h {minutes % 60:02d} min"


def _sample_images(folder: str | None, count: int, size: int, task, seed: int) -> np.ndarray:
    """The first ``count`` usable images of ``folder`` at ``size`` px (repeated when there are fewer);
    seeded noise when there are none (a step's time does not depend on the pixels)."""
    from sslstudio.data import decode_images, scan_folder

    arrays = np.zeros((0, size, size, 3), dtype=np.uint8)
    if folder:
        try:
            files = scan_folder(folder).files[: count * 2]  # a few spare for unusable files
        except Exception:  # noqa: BLE001 - an unreadable folder: time on noise instead
            files = []
        if files:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # skipped files are the scan's and the run's to report
                arrays = np.asarray(decode_images(files, size, min_source_size=task.min_image_size,
                                                  small_policy=task.small_image_policy).arrays)[:count]
    if len(arrays) == 0:
        arrays = np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.resize(arrays, (count, size, size, 3)))


def _item_counts(task, items, images, n_images: int, holdout: float) -> tuple[int, int]:
    """Training and held-out items of a run over ``n_images`` (the engine's split)."""
    n_val = int(math.floor(holdout * n_images)) if n_images >= 20 else 0
    n_train = n_images - n_val
    n_items = max(1, round(n_train * len(items) / max(len(images), 1)))
    classes = getattr(task.config, "classes", None)
    if task.name == "exemplar" and isinstance(classes, int) and classes > 0:
        n_items = min(n_items, classes)  # one seed region per surrogate class
    val = task.holdout_items(items, images[:1]) if n_val else None
    n_val_items = 0 if val is None else (max(8, n_val) if task.name == "exemplar" else n_val)
    return n_items, n_val_items


#: A timed step's network input, in values: 16 images' worth at 64 px (rotation at 32 px: 16 images of
#: four angles; jigsaw at 64 px: 22 puzzles of nine 18 px tiles), so a CPU estimate takes a few seconds.
TIMED_VALUES = 16 * 3 * 64 * 64


#: A timed step has at least this many items (or the whole batch): on 2 cores a step of 4 rotation images
#: at 64 px ran about 25% slower per sample than one of 8 or 16, which ran within 5% of one of 64.
MIN_TIMED_ITEMS = 8


def _timed_items(task, items, batch_size: int, seed: int, device, max_values: int) -> np.ndarray:
    """The indices of the items of a timed step: as many as ``max_values`` input values allow (at least
    :data:`MIN_TIMED_ITEMS`, at most the batch and the items at hand)."""
    probe, _ = make_task_batch(task, items, np.arange(min(2, len(items))), seed, 0, 0, device)
    per_item = max(1, int(probe[0].numel()))
    return np.arange(max(1, min(len(items), batch_size, max(MIN_TIMED_ITEMS, max_values // per_item))))


def estimate_minutes(config, n_images: int, steps: int = 3, on_event: EventSink | None = None,
                     control: RunControl | None = None, progress: Callable | None = None,
                     max_values: int = TIMED_VALUES) -> Estimate:
    """Time a few training steps of ``config`` (a :class:`~sslstudio.engine.pretrain.PretrainConfig`) and
    extrapolate to a run over ``n_images`` images.

    The task and model are built as the engine builds them (task options, image size, backbone, device,
    precision); a step is timed on the folder's first images, as many as make ``max_values`` input values
    (:data:`TIMED_VALUES`; at least 2, at most the batch), after one warm-up step, as the batch's making plus the
    model's forward, backward and update; a held-out forward pass is timed the same way. The run is then
    ``epochs x (trained items x step time per item + held-out items x forward time per item)``, plus a
    forward pass over the training items before each epoch for tasks that re-plan every epoch
    (DeepCluster's clustering; its k-means is not counted). Not counted: decoding the folder (about a
    second per 4,000 images), ``torch.compile``'s compilation and the kNN monitor.
    """
    from sslstudio.tasks import create_task
    from sslstudio.tasks.base import PretextTask

    t0 = time.perf_counter()
    emit = on_event or (lambda event: None)
    control = control or RunControl()
    report = progress or (lambda done, total=0: None)
    total = steps + 5
    check_settings(config)
    task = create_task(config.task, config.task_options, config.image_size)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    epochs = int(config.epochs or task.optim.epochs)
    batch_size = int(config.batch_size or task.optim.batch_size)
    images = _sample_images(config.data, max(2, min(batch_size, 64)), config.image_size, task, config.seed)
    report(1, total)
    items = task.prepare(images, config.seed)
    n_items, n_val_items = _item_counts(task, items, images, int(n_images), config.holdout)
    index = _timed_items(task, items, batch_size, config.seed, device, max_values)
    count = lambda _batch: len(index)  # noqa: E731 - items per timed batch
    report(2, total)
    control.checkpoint()

    batches = epoch_batches(len(items), len(index), config.seed, 0)
    per_item_batch = 1.0 / rate(DeviceBatches(items, task, config.seed, batches, device), steps, 1, count)
    inputs, target = make_task_batch(task, items, index, config.seed, 0, 0, device)
    step = train_step(task, config.arch, items, inputs, target, device, precision, device.type == "cuda", False,
                      config.seed)
    done = [2]

    def timed_step():
        control.checkpoint()
        out = step()
        done[0] += 1
        report(min(done[0], total - 1), total)
        return out

    per_item_train = 1.0 / rate(iter(timed_step, None), steps, 1, count)
    model = step.model
    model.eval()

    def forward():
        control.checkpoint()
        with torch.no_grad(), autocast(device, precision):
            model(inputs)
        return inputs

    per_item_eval = 1.0 / rate(iter(forward, None), 2, 1, count)
    report(total, total)

    trained = (n_items // batch_size) * batch_size if n_items >= batch_size else n_items
    steps_per_epoch = max(1, n_items // batch_size) if n_items >= batch_size else 1
    epoch_s = trained * (per_item_batch + per_item_train) + n_val_items * (per_item_batch + per_item_eval)
    if type(task).begin_epoch is not PretextTask.begin_epoch:
        epoch_s += n_items * per_item_eval  # the task's pass over its training items before each epoch
    estimate = Estimate(seconds=epochs * epoch_s,
                        samples_per_s=task.samples_per_image / (per_item_batch + per_item_train),
                        seconds_per_epoch=epoch_s, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        train_items=n_items, held_out_items=n_val_items, timed_batch=len(index),
                        device=device_name(device), measured_s=time.perf_counter() - t0)
    emit(LogEvent(f"estimate: {estimate.text()} ({estimate.samples_per_s:.0f} samples/s, "
                  f"{estimate.seconds_per_epoch:.0f} s per epoch)"))
    return estimate
