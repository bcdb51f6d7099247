"""Generated samples of a task, drawn with their labels: ``sslstudio preview`` and the window's grid.

A preview is the training transform on a small batch: the task's ``make_batch`` through
:func:`~sslstudio.engine.loader.make_task_batch`, the function training's batches go through, so
what the user sees is what trains."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sslstudio.errors import ConfigError, DataError
from sslstudio.settings import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, check_settings, param

#: File endings ``save_preview`` can write (Pillow picks the format from the ending).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class PreviewSettings:
    """The numeric settings of a preview with their ranges, declared once: the preview functions check
    them before any image is read and the window takes its limits from them."""

    n: int = param(16, "Number of samples in the grid.", min=1, max=256)
    image_size: int = param(64, "Side of the square network inputs (pixels).", min=MIN_IMAGE_SIZE,
                            max=MAX_IMAGE_SIZE)
    seed: int = param(0, "Seed of the drawn images and samples.", min=0)


def check_preview(n: int, image_size: int | None = None, seed: int = 0, out: str | None = None) -> None:
    """Raise :class:`ConfigError` with a sentence for a preview setting out of its declared range, or an
    ``out`` that is not an image file name."""
    check_settings({"n": n, "image_size": image_size, "seed": seed}, PreviewSettings)
    if out is not None and Path(out).suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"--out must name an image file ending in {', '.join(IMAGE_SUFFIXES)}; got {str(out)!r}.")


def preview_images(task, data: str, n: int = 16, seed: int = 0) -> np.ndarray:
    """Decode ``n`` random images of folder ``data`` (a few more if some are unreadable)."""
    from sslstudio.data import decode_images, scan_folder

    check_preview(n, task.image_size, seed)
    report = scan_folder(data)
    order = np.random.default_rng(seed).permutation(len(report.files))
    arrays: list[np.ndarray] = []
    chunk = max(n, 8)
    for start in range(0, len(order), chunk):
        paths = [report.files[i] for i in order[start:start + chunk]]
        try:
            decoded = decode_images(paths, task.image_size, min_source_size=task.min_image_size,
                                    small_policy=task.small_image_policy)
        except DataError:
            continue
        arrays.extend(decoded.arrays)
        if len(arrays) >= n:
            break
    if not arrays:
        raise DataError(f"none of the {len(report.files)} image files in {data} could be read.")
    return np.stack(arrays[:max(n, 1)])


@dataclass
class PreviewBatch:
    """What a preview made: the source images, the task's items, and the batch of the first items.

    Attributes:
        images: Decoded uint8 source images ``[N, S, S, 3]``.
        items: What ``task.prepare`` made of them.
        index: int64 positions in ``items`` of the batch's samples (the first ``n``, cycled).
        inputs, target: The batch :func:`~sslstudio.engine.loader.make_task_batch` made, on the CPU.
        seed: The preview's seed (also the run seed of the batch).
    """

    images: np.ndarray
    items: np.ndarray
    index: np.ndarray
    inputs: torch.Tensor
    target: torch.Tensor
    seed: int

    def samples(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The batch's samples ``(inputs[b], target[b])``, what ``task.render`` draws."""
        return [(self.inputs[b], self.target[b]) for b in range(len(self.index))]

    def own_drawing(self, task) -> Image.Image | None:
        """The task's own grid of this batch (``task.render_preview``), or ``None``."""
        return task.render_preview(self.images, self.items, self.index, self.inputs, self.target, self.seed)


def preview_batch(task, images: np.ndarray, n: int = 16, seed: int = 0,
                  device: torch.device | str = "cpu") -> PreviewBatch:
    """``n`` samples made exactly as training makes them: ``prepare``, ``begin_preview``, then the batch of
    the first ``n`` items (cycled if there are fewer) at epoch 0, step 0 of a run with this seed."""
    from sslstudio.engine.loader import make_task_batch

    check_preview(n, task.image_size, seed)
    items = task.prepare(images, seed)
    task.begin_preview(items, seed)
    index = np.arange(n, dtype=np.int64) % len(items)
    inputs, target = make_task_batch(task, items, index, seed, 0, 0, torch.device(device))
    return PreviewBatch(images, items, index, inputs.cpu(), target.cpu(), int(seed))


def preview_grid(task, data: str, n: int = 16, seed: int = 0, columns: int | None = None) -> Image.Image:
    """A grid of ``n`` rendered samples (or the task's own drawing of them) with a title naming the task."""
    from sslstudio.tasks.render import grid

    check_preview(n, task.image_size, seed)
    batch = preview_batch(task, preview_images(task, data, n, seed), n, seed)
    own = batch.own_drawing(task)
    if own is not None:
        return own
    tiles = [task.render(inputs, target) for inputs, target in batch.samples()]
    if columns is None:
        # about 1.6 times wider than tall
        columns = max(1, min(len(tiles), round((1.6 * len(tiles) * tiles[0].height / tiles[0].width) ** 0.5)))
    return grid(tiles, columns, title=f"{task.name}: {task.description} (seed {seed})")


def save_preview(task, data: str, out: str, n: int = 16, seed: int = 0) -> Path:
    """Write :func:`preview_grid`'s grid to ``out`` (an image file; its folder is made)."""
    check_preview(n, task.image_size, seed, out)  # before any image is read or any file written
    img = preview_grid(task, data, n, seed)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path)
    return out_path
