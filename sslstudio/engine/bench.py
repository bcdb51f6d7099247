"""``sslstudio bench``: where pretraining time goes, measured in one process on the same images.

Four figures, in samples per second (a sample is one network input: rotation's four angles of an
image are four samples):

- ``naive``: what a user would write with an ``ImageFolder``-style dataset: per sample, PIL
  decode, convert, resize, crop, in a DataLoader with ``workers`` processes, then the task's
  transform (``make_batch``) on each batch. Where the task's items are not the images
  (Exemplar-CNN's seed regions), the decoding is paid for and the transform runs on the items of
  the same positions. No model.
- ``pipeline``: sslstudio's data pipeline: images decoded once to uint8 arrays (timed
  separately as ``decode_s``), then the training loop's batches from memory
  (:class:`~sslstudio.engine.loader.DeviceBatches`: whole batches made on the device by the
  task's ``make_batch``). No model.
- ``model``: one training step (forward, backward, optimiser) on tensors already on the device,
  shaped like a real batch, with the engine's settings (precision, channels_last on CUDA): the
  ceiling. Where those settings are not plain fp32 (on CUDA: bf16 autocast and channels_last),
  ``model_fp32_eager`` is the same step in fp32 with the default memory format, for the speed-up;
  with ``compile=True``, ``model_compiled`` is the step under ``torch.compile`` (after its
  compilation, which is timed as ``compile_s``).
- ``train``: the engine's real pretraining loop for one epoch (from its ``summary.json``), over the
  first ``train_images`` images (all of them when ``None``).

The ratios ``pipeline/naive`` and ``train/model`` say whether the data pipeline keeps up.

Files that cannot be used (corrupt, not an image, unreadable...) are found by the pipeline's decode,
which runs first, and are left out of every figure, as every other command skips them: ``images`` is
the usable images, ``images_found`` the image files in the folder, and ``skipped`` /
``skipped_by_reason`` count the others (with the decode's reasons).
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sslstudio.engine.device import autocast, device_name, resolve_device, resolve_precision
from sslstudio.engine.loader import DeviceBatches, batch_seed, epoch_batches, make_task_batch


#: Loaders are timed for at least this long: their batches take milliseconds.
LOADER_SECONDS = 2.0


class NaiveFolderDataset(Dataset):
    """Per-sample PIL decoding and resizing to uint8 ``[S, S, 3]`` (with the sample's index): the baseline to beat."""

    def __init__(self, paths: list[Path], task):
        self.paths, self.task = list(paths), task

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image, ImageOps

        with Image.open(self.paths[index]) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
        size = self.task.image_size
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        return np.array(img.crop((left, top, left + size, top + size)), dtype=np.uint8), index


class NaiveBatches:
    """The task's batches of a DataLoader's decoded images: ``make_batch`` on each, on ``device``."""

    def __init__(self, loader: DataLoader, task, items, seed: int, device: torch.device):
        self.loader, self.task, self.items, self.seed, self.device = loader, task, items, seed, device
        self.images_are_items = items.shape[1:] == (task.image_size, task.image_size, 3)

    def __iter__(self):
        for step, (images, index) in enumerate(self.loader):
            if not self.images_are_items:
                images = torch.from_numpy(np.ascontiguousarray(self.items[index.numpy() % len(self.items)]))
            generator = torch.Generator().manual_seed(batch_seed(self.seed, 0, step))
            yield self.task.make_batch(images.to(self.device), generator, index.to(self.device))


def rate(batches, steps: int, warmup: int, count: Callable, min_seconds: float = 0.0) -> float:
    """Samples/s over at least ``steps`` batches and ``min_seconds`` after ``warmup`` batches
    (the batches are cycled when there are too few). Also :mod:`sslstudio.engine.estimate`'s timing."""
    if warmup < 1:
        raise ValueError("warmup must be at least 1")
    it = iter(batches)
    done = total = 0
    start = None
    while True:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(batches)
            batch = next(it)
        done += 1
        if done == warmup:
            start = time.perf_counter()
            continue
        if done > warmup:
            total += count(batch)
            elapsed = time.perf_counter() - start
            if done - warmup >= steps and elapsed >= min_seconds:
                return total / max(elapsed, 1e-9)


def run_bench(data: str, task_name: str = "rotation", arch: str = "resnet18", image_size: int = 64,
              batch_size: int = 64, device: str = "auto", precision: str = "auto", workers: int = 2,
              steps: int = 20, warmup: int = 3, seed: int = 0, train_images: int | None = 512,
              compile: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Measure the four figures and return them with the ratios, device, precision and peak memory."""
    from sslstudio.data import decode_images, scan_folder
    from sslstudio.tasks import create_task

    log = log or (lambda message: None)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    task = create_task(task_name, image_size=image_size)
    found = scan_folder(data).files

    # decoded first: the files it skips (with the data layer's reasons) are left out of every figure
    log("pipeline: decode once (timed), then samples from memory")
    t0 = time.perf_counter()
    decoded = decode_images(found, image_size, min_source_size=task.min_image_size,
                            small_policy=task.small_image_policy)
    decode_s = time.perf_counter() - t0
    files = list(decoded.paths)

    def _samples(batch) -> int:  # as the engine counts: images x the task's inputs per image
        return int(batch[0].shape[0] * task.samples_per_image)

    result: dict = {"task": task_name, "arch": arch, "image_size": image_size, "batch_size": batch_size,
                    "workers": workers, "device": str(dev), "device_name": device_name(dev), "precision": prec,
                    "images": len(files), "images_found": len(found), "skipped": len(decoded.skipped),
                    "skipped_by_reason": decoded.skipped_counts(), "samples_per_image": task.samples_per_image}

    items = task.prepare(decoded.arrays, seed)
    log("naive: PIL decode + resize per sample, then the task's transform per batch")
    naive = DataLoader(NaiveFolderDataset(files, task), batch_size=batch_size, shuffle=True,
                       num_workers=workers, drop_last=len(files) >= batch_size,
                       generator=torch.Generator().manual_seed(seed))
    result["naive"] = rate(NaiveBatches(naive, task, items, seed, dev), steps, warmup, _samples, LOADER_SECONDS)

    log("pipeline: the training loop's batches from the decoded images")
    result["decode_s"] = decode_s
    batches = [b for e in range(3) for b in epoch_batches(len(items), batch_size, seed, e)]
    result["pipeline"] = rate(DeviceBatches(items, task, seed, batches, dev), steps, warmup, _samples,
                              LOADER_SECONDS)

    log("model: training steps on tensors already on the device")
    inputs, target = make_task_batch(task, items, [i for _, i in batches[0]], seed, 0, 0, dev)
    engine = dict(precision=prec, channels_last=dev.type == "cuda")

    def model_rate(precision: str, channels_last: bool, compiled: bool = False) -> float:
        step = train_step(task, arch, items, inputs, target, dev, precision, channels_last, compiled, seed)
        return rate(iter(step, None), steps, warmup, _samples)

    result["model"] = model_rate(**engine)
    if engine != dict(precision="fp32", channels_last=False):
        log("model: the same step in fp32 eager (no autocast, default memory format)")
        result["model_fp32_eager"] = model_rate("fp32", False)
    if compile:
        log("model: the same step under torch.compile")
        t0 = time.perf_counter()
        step = train_step(task, arch, items, inputs, target, dev, prec, engine["channels_last"], True, seed)
        step()  # compiles
        result["compile_s"] = time.perf_counter() - t0
        result["model_compiled"] = rate(iter(step, None), steps, warmup, _samples)

    subset = files if not train_images or train_images >= len(files) else files[:train_images]
    result["train_images"] = len(subset)
    log(f"train: the engine's pretraining loop, one epoch over {len(subset)} images")
    result["train"] = _engine_rate(subset, task=task_name, arch=arch, epochs=1, batch_size=batch_size,
                                   image_size=image_size, device=device, precision=precision, workers=workers,
                                   seed=seed, holdout=0.0)
    result["pipeline/naive"] = result["pipeline"] / result["naive"]
    result["train/model"] = result["train"] / result["model"]
    result["peak_host_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_gpu_allocated_mb"] = (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None)
    return result


def _engine_rate(files: list, **settings) -> float:
    """Samples per second of the engine's pretraining loop (:func:`pretrain`) over ``files``."""
    from sslstudio.engine.pretrain import PretrainConfig, pretrain

    with tempfile.TemporaryDirectory(prefix="sslstudio-bench-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for k, path in enumerate(files):  # links, so the loop reads the same files
            (folder / f"{k:07d}{Path(path).suffix.lower()}").symlink_to(Path(path).resolve())
        summary = pretrain(PretrainConfig(data=str(folder), out=str(Path(tmp) / "run"), **settings))
    return summary["samples_per_s"]


def train_step(task, arch, items, inputs, target, dev, precision, channels_last, compiled, seed):
    """A function doing one training step of a fresh model on the given device tensors (its ``model``
    attribute: the model it trains, for timing a forward pass). Also :mod:`sslstudio.engine.estimate`'s."""
    from sslstudio.models import build_backbone

    torch.manual_seed(seed)
    backbone = build_backbone(arch)
    model = task.build_head(backbone, backbone.feature_dim).to(dev)
    task.begin_epoch(model, items, 0, dev, torch.optim.SGD(model.parameters(), lr=0.0), seed)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    net = torch.compile(model) if compiled else model

    def step():
        with autocast(dev, precision):
            loss = task.loss(net(inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return (inputs, target)

    step.model = net
    return step


def _skipped_text(result: dict) -> str:
    """``", 2 skipped (1 corrupt, 1 not an image)"``: a note on the unusable files, or nothing."""
    from sslstudio.data.decode import format_counts

    if not result.get("skipped"):
        return ""
    return f", {result['skipped']} skipped ({format_counts(result.get('skipped_by_reason') or {})})"


def format_bench(result: dict) -> str:
    lines = [f"{result['task']} / {result['arch']} at {result['image_size']} px, batch {result['batch_size']} "
             f"images, {result['workers']} workers, {result['images']} images{_skipped_text(result)}; "
             f"device {result['device_name']}, precision {result['precision']}",
             f"  naive     {result['naive']:10,.0f} samples/s   (PIL decode + resize + transform per sample)",
             f"  pipeline  {result['pipeline']:10,.0f} samples/s   (decoded once in {result['decode_s']:.1f} s)",
             f"  model     {result['model']:10,.0f} samples/s   (training step on device tensors: the ceiling)",
             *([f"  fp32 eager {result['model_fp32_eager']:9,.0f} samples/s   (the same step without autocast or "
                f"channels_last; the engine's step is {result['model'] / result['model_fp32_eager']:.2f}x this)"]
              if "model_fp32_eager" in result else []),
             *([f"  compiled  {result['model_compiled']:10,.0f} samples/s   (torch.compile, after "
                f"{result['compile_s']:.0f} s compiling: {result['model_compiled'] / result['model']:.2f}x eager)"]
              if "model_compiled" in result else []),
             f"  train     {result['train']:10,.0f} samples/s   (the engine's loop, one epoch over "
             f"{result['train_images']} images)",
             f"  pipeline/naive {result['pipeline/naive']:.2f}   train/model {result['train/model']:.2f}",
             f"  peak host RSS {result['peak_host_rss_mb']:,.0f} MB"
             + (f", peak GPU allocated {result['peak_gpu_allocated_mb']:,.0f} MB"
                if result["peak_gpu_allocated_mb"] is not None else "")]
    return "\n".join(lines)
