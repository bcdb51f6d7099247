"""Generated samples of a task, drawn with their labels: ``sslstudio preview`` and the window's grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


def preview_samples(task, images: np.ndarray, n: int = 16, seed: int = 0) -> list[tuple]:
    """``n`` samples ``(inputs, target)`` made exactly as training makes them (``prepare`` then ``make_item``)."""
    check_preview(n, task.image_size, seed)
    items = task.prepare(images, seed)
    return [task.make_item(k % len(items), items[k % len(items)], np.random.default_rng((seed, k)))
            for k in range(n)]


def preview_grid(task, data: str, n: int = 16, seed: int = 0, columns: int | None = None) -> Image.Image:
    """A grid of ``n`` rendered samples (or the task's own preview) with a title naming the task."""
    from sslstudio.tasks.render import grid

    check_preview(n, task.image_size, seed)
    images = preview_images(task, data, n, seed)
    own = task.render_preview(images, n, seed)
    if own is not None:
        return own
    tiles = [task.render(inputs, target) for inputs, target in preview_samples(task, images, n, seed)]
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
