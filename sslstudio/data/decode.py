"""Decoding many image files into one array of equally sized squares."""

from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sslstudio.data.images import BadImageError, load_rgb, to_square_array
from sslstudio.data.scan import scan_folder
from sslstudio.errors import ConfigError, DataError

__all__ = ["SMALL_POLICIES", "DecodedImages", "decode_folder", "decode_images", "format_counts"]

SMALL_POLICIES = ("upscale", "skip")
"""Accepted values of ``small_policy``."""

_REASON_ORDER = ("truncated", "not an image", "corrupt", "empty file", "decompression bomb", "too small")


@dataclass
class DecodedImages:
    """Square images decoded from files.

    Attributes:
        arrays: ``uint8`` array of shape ``(N, size, size, 3)``.
        paths: The N source files, in the same order as ``arrays``.
        skipped: ``(path, reason)`` for every file that was not used.
        size: Side of each square in pixels.
    """

    arrays: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    size: int = 0

    def skipped_counts(self) -> dict[str, int]:
        """Return how many files were skipped for each reason."""
        return dict(Counter(reason for _, reason in self.skipped))

    def __len__(self) -> int:
        """Return the number of decoded images."""
        return len(self.paths)


def format_counts(counts: dict[str, int]) -> str:
    """Write reason counts as text, most common first: ``"3 truncated, 2 not an image"``.

    Args:
        counts: Mapping of reason to count.

    Returns:
        The comma-separated description.
    """

    def key(item: tuple[str, int]) -> tuple[int, int, str]:
        reason, n = item
        rank = _REASON_ORDER.index(reason) if reason in _REASON_ORDER else len(_REASON_ORDER)
        return (-n, rank, reason)

    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=key))


def _common_folder(paths: list[Path]) -> str:
    """Return the deepest folder containing all ``paths`` (for messages)."""
    try:
        return os.path.commonpath([os.fspath(p.parent) for p in paths])
    except ValueError:
        return str(paths[0].parent)


def _decode_one(
    path: Path, size: int, min_source_size: int | None, small_policy: str, max_pixels: int | None
) -> np.ndarray | str:
    """Decode one file; return the square array, or the reason it was skipped."""
    try:
        img = load_rgb(path, max_pixels=max_pixels)
    except BadImageError as exc:
        return exc.reason
    if min_source_size is not None and min(img.size) < min_source_size and small_policy == "skip":
        return "too small"
    return to_square_array(img, size)


def _results(paths: list[Path], workers: int, decode: Callable[[Path], np.ndarray | str]) -> Iterator[np.ndarray | str]:
    """Yield ``decode(path)`` in input order, with a thread pool when ``workers > 0``."""
    if workers <= 0:
        for path in paths:
            yield decode(path)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunk = max(16, workers * 8)
        for start in range(0, len(paths), chunk):
            yield from pool.map(decode, paths[start : start + chunk])


def _check_settings(size: int, min_source_size: int | None, small_policy: str, workers: int) -> None:
    """Raise :class:`ConfigError` for settings that cannot work."""
    if int(size) < 1:
        raise ConfigError(f"The image size must be at least 1 pixel, but {size} was given.")
    if small_policy not in SMALL_POLICIES:
        raise ConfigError(
            f"The policy for small images must be one of {', '.join(SMALL_POLICIES)}, but {small_policy!r} was given."
        )
    if min_source_size is not None and int(min_source_size) < 1:
        raise ConfigError(f"The minimum source size must be at least 1 pixel, but {min_source_size} was given.")
    if int(workers) < 0:
        raise ConfigError(f"The number of decoding workers cannot be negative, but {workers} was given.")


def decode_images(
    paths: Iterable[str | os.PathLike[str]],
    size: int,
    *,
    min_source_size: int | None = None,
    small_policy: str = "upscale",
    progress: Callable[[int, int], None] | None = None,
    workers: int = 0,
    max_pixels: int | None = None,
) -> DecodedImages:
    """Decode image files into ``size x size`` RGB squares.

    Each file is read with :func:`~sslstudio.data.images.load_rgb` and cut
    with :func:`~sslstudio.data.images.to_square_array`. Unusable files are
    skipped with their reason, and one :class:`UserWarning` summarises them.

    Args:
        paths: Image files, decoded in this order.
        size: Side of the output squares in pixels.
        min_source_size: Sources whose shorter side is below this are "small".
        small_policy: ``"upscale"`` keeps small sources (resized up);
            ``"skip"`` skips them with the reason ``"too small"``.
        progress: Called as ``progress(done, total)`` periodically and at the end.
        workers: Number of decoding threads; 0 decodes in the calling thread.
            The output order is the input order either way.
        max_pixels: Largest accepted source pixel count (see
            :func:`~sslstudio.data.images.load_rgb`); larger files are skipped
            as "decompression bomb".

    Returns:
        The decoded images.

    Raises:
        ConfigError: A setting is out of range.
        DataError: No file is given, or none of them could be used.
    """
    path_list = [Path(p) for p in paths]
    _check_settings(size, min_source_size, small_policy, workers)
    size = int(size)
    total = len(path_list)
    if total == 0:
        raise DataError("No image files were given to decode; choose a folder that contains images.")

    arrays = np.empty((total, size, size, 3), dtype=np.uint8)
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    every = max(1, total // 100)
    decode = functools.partial(
        _decode_one, size=size, min_source_size=min_source_size, small_policy=small_policy, max_pixels=max_pixels
    )
    for done, (path, result) in enumerate(zip(path_list, _results(path_list, int(workers), decode)), start=1):
        if isinstance(result, str):
            skipped.append((path, result))
        else:
            arrays[len(kept)] = result
            kept.append(path)
        if progress is not None and (done % every == 0 or done == total):
            progress(done, total)

    result = DecodedImages(
        arrays=arrays if len(kept) == total else arrays[: len(kept)].copy(),
        paths=kept,
        skipped=skipped,
        size=size,
    )
    counts = format_counts(result.skipped_counts())
    folder = _common_folder(path_list)
    if not kept:
        hint = "Check that the files open in an image viewer, or choose another folder"
        if "too small" in result.skipped_counts():
            hint += ', lower the minimum source size, or keep small images with small_policy="upscale"'
        raise DataError(f"None of the {total:,} image files in {folder} could be read: {counts}. {hint}.")
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped):,} of {total:,} image files in {folder}: {counts}.",
            UserWarning,
            stacklevel=2,
        )
    return result


def decode_folder(root: str | os.PathLike[str], size: int, **kwargs: Any) -> DecodedImages:
    """Scan ``root`` for image files and decode them all.

    Args:
        root: Folder to scan recursively (see :func:`~sslstudio.data.scan.scan_folder`).
        size: Side of the output squares in pixels.
        **kwargs: Passed on to :func:`decode_images`.

    Returns:
        The decoded images.

    Raises:
        DataError: The folder is missing or empty, or no image could be used.
        ConfigError: A setting is out of range.
    """
    report = scan_folder(root)
    return decode_images(report.files, size, **kwargs)
