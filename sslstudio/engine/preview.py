"""Generated samples of a task, drawn with their labels: ``sslstudio preview`` and the window's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sslstudio.errors import DataError


def preview_images(task, data: str, n: int = 16, seed: int = 0) -> np.ndarray:
    """Decode ``n`` random images of folder ``data`` (a few more if some are unreadable)."""
    from sslstudio.data import decode_images, scan_folder

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
    items = task.prepare(images, seed)
    return [task.make_item(k % len(items), items[k % len(items)], np.random.default_rng((seed, k)))
            for k in range(n)]


def preview_grid(task, data: str, n: int = 16, seed: int = 0, columns: int | None = None) -> Image.Image:
    """A grid of ``n`` rendered samples (or the task's own preview) with a title naming the task."""
    from sslstudio.tasks.render import grid

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
    img = preview_grid(task, data, n, seed)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path)
    return out_path
