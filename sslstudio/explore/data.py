"""The images an exploration looks at: a folder's images (at most ``limit``, a seeded subset when it
holds more), decoded once at the backbone's input size, with their classes when the folder is labelled.

A labelled folder (``DIR/<class>/...``, or ``DIR/train/<class>/...`` with an optional ``DIR/test``)
gives every one of its images, training and test alike, with its class; an unlabelled folder gives its
images (searched recursively) without classes. Row ``i`` of :attr:`ExploreSet.images`,
:attr:`~ExploreSet.paths` and :attr:`~ExploreSet.labels` is the same image everywhere downstream (the
map's coordinates, the CSV, the gallery's indices), so a window can link selections by row index.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from sslstudio.errors import ConfigError, DataError

#: Default most images in a map (the issue's figure).
DEFAULT_LIMIT = 10_000


@dataclass
class ExploreSet:
    """Decoded images of an exploration.

    Attributes:
        images: uint8 ``[N, S, S, 3]``.
        paths: the N source files, as strings, in row order.
        labels: int64 ``[N]`` indices into ``classes``, or ``None`` for an unlabelled folder.
        classes: class names (empty when unlabelled).
        source: the folder the images came from.
        found: images found in the folder before the limit (``found > N`` means a subset).
        skipped: ``(path, reason)`` of files that could not be decoded.
    """

    images: np.ndarray
    paths: list[str]
    labels: np.ndarray | None
    classes: list[str]
    source: str
    found: int
    skipped: list = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> str:
        """One line: how many images, from where, labelled or not."""
        subset = f" (a seeded subset of {self.found:,})" if self.found > len(self) else ""
        kind = f"{len(self.classes)} classes" if self.labelled else "unlabelled"
        return f"{len(self):,} images{subset} from {self.source}, {kind}"


def list_labelled(folder: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """Every image of a labelled folder (training and test), sorted by path: ``(paths, labels, classes)``."""
    from sslstudio.data import load_labelled

    split = load_labelled(folder)
    pairs = sorted((str(p), int(y)) for p, y in list(split.train) + list(split.test))
    return [p for p, _ in pairs], np.array([y for _, y in pairs], dtype=np.int64), list(split.classes)


def list_unlabelled(folder: str | os.PathLike) -> list[str]:
    """The images under ``folder`` (recursively), sorted."""
    from sslstudio.data import scan_folder

    return [str(p) for p in scan_folder(folder).files]


def choose_subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded random subset of ``limit`` of ``n`` items (all of them when ``n <= limit``)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(limit), replace=False))


def load_explore_set(data: str | None = None, labelled: str | None = None, image_size: int = 64,
                     limit: int | None = DEFAULT_LIMIT, seed: int = 0,
                     progress: Callable[[int, int], None] | None = None) -> ExploreSet:
    """The images to explore: the labelled folder's when one is given (coloured by class), else ``data``'s.

    ``limit`` keeps a seeded random subset (``seed``) when the folder holds more; ``progress(done, total)``
    follows the decoding. Raises :class:`~sslstudio.errors.DataError` (one sentence) for a missing or empty
    folder and :class:`~sslstudio.errors.ConfigError` when neither folder is given.
    """
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"--limit must be at least 1 image; got {limit}.")
    if labelled:
        paths, labels, classes = list_labelled(labelled)
        source = str(labelled)
    elif data:
        paths, labels, classes, source = list_unlabelled(data), None, [], str(data)
    else:
        raise ConfigError("give a folder of images to explore: --data (unlabelled) or --labelled.")
    keep = choose_subset(len(paths), limit, seed)
    chosen = [paths[i] for i in keep]
    decoded = _decode(chosen, image_size, progress)
    out_paths = [str(p) for p in decoded.paths]
    out_labels = None
    if labels is not None:
        by_path = {paths[i]: labels[i] for i in keep}
        out_labels = np.array([by_path[p] for p in out_paths], dtype=np.int64)
    return ExploreSet(decoded.arrays, out_paths, out_labels, classes, source, len(paths), list(decoded.skipped))


def _decode(paths: list[str], image_size: int, progress):
    from sslstudio.data import decode_images

    with warnings.catch_warnings():  # the skipped files are listed in ExploreSet.skipped
        warnings.simplefilter("ignore", UserWarning)
        decoded = decode_images(paths, image_size, progress=progress, workers=min(4, os.cpu_count() or 1))
    arrays = np.ascontiguousarray(decoded.arrays)
    decoded.arrays = arrays
    return decoded


def load_query_image(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """One image file decoded as the set is: uint8 ``[1, S, S, 3]``; :class:`DataError` if it cannot be read."""
    from sslstudio.data import BadImageError, load_rgb, to_square_array

    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"the query image {file} does not exist; check the path.")
    try:
        return np.array(to_square_array(load_rgb(file), image_size)[None])  # a writable copy
    except BadImageError as exc:
        raise DataError(f"the query image {file} cannot be used ({exc.reason}); choose another image.") from None


def find_path(paths: list[str], query: str | os.PathLike) -> int | None:
    """Row of ``query`` among ``paths`` (same file after resolving links), or ``None``."""
    target = Path(query).expanduser().resolve()
    for i, p in enumerate(paths):
        if Path(p).resolve() == target:
            return i
    return None


__all__ = ["DEFAULT_LIMIT", "ExploreSet", "choose_subset", "find_path", "list_labelled", "list_unlabelled",
           "load_explore_set", "load_query_image"]
