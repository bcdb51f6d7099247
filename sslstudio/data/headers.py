"""A quick look at every image file of a folder: sizes and unreadable files, from the headers only.

Reading a header is much cheaper than decoding, so a window can show the size range and the files
that will be skipped (with their reasons) right after a scan. Files that are damaged further in
(a truncated JPEG, say) pass this check; decoding finds them when training starts, and the run's
``summary.json`` lists them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from sslstudio.data.images import MAX_PIXELS

__all__ = ["InspectReport", "inspect_images"]

PROGRESS_EVERY = 256


@dataclass
class InspectReport:
    """Sizes of the readable files and the unreadable ones with their reasons."""

    widths: np.ndarray
    heights: np.ndarray
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def readable(self) -> int:
        return int(len(self.widths))

    def size_range(self) -> str:
        """``"64x64"`` or ``"32x24 to 500x375 (median 64x64)"`` (shortest and longest side by pixel count)."""
        if not self.readable:
            return "no readable image"
        area = self.widths.astype(np.int64) * self.heights
        lo, hi = int(np.argmin(area)), int(np.argmax(area))
        small, large = f"{self.widths[lo]}x{self.heights[lo]}", f"{self.widths[hi]}x{self.heights[hi]}"
        if small == large:
            return small
        return f"{small} to {large} (median {int(np.median(self.widths))}x{int(np.median(self.heights))})"

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, reason in self.unreadable:
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def _header_size(path: Path, max_pixels: int) -> tuple[int, int]:
    if os.path.getsize(path) == 0:
        raise ValueError("empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ValueError("decompression bomb") from None
        except UnidentifiedImageError:
            raise ValueError("not an image") from None
        except (OSError, SyntaxError, ValueError):
            raise ValueError("corrupt") from None
    if width * height > max_pixels:
        raise ValueError("decompression bomb")
    return width, height


def inspect_images(paths: Sequence[os.PathLike | str], progress: Callable[[int, int], None] | None = None,
                   max_pixels: int | None = None) -> InspectReport:
    """Read the header of every file: sizes of the readable ones, reasons for the others.

    Args:
        paths: Image files (e.g. ``ScanReport.files``).
        progress: Called as ``progress(done, total)`` every few hundred files.
        max_pixels: Pixel count above which a file counts as a decompression bomb.
    """
    limit = int(max_pixels or MAX_PIXELS)
    widths, heights, bad = [], [], []
    total = len(paths)
    for k, path in enumerate(paths, start=1):
        try:
            w, h = _header_size(Path(path), limit)
            widths.append(w)
            heights.append(h)
        except (ValueError, OSError) as exc:
            bad.append((Path(path), str(exc) if isinstance(exc, ValueError) else "unreadable"))
        if progress is not None and (k % PROGRESS_EVERY == 0 or k == total):
            progress(k, total)
    return InspectReport(np.asarray(widths, dtype=np.int64), np.asarray(heights, dtype=np.int64), bad)
