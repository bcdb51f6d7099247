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

from sslstudio.data.cache import DecodeCache, MemmapWriter, cache_key, ram_budget
from sslstudio.data.images import MAX_PIXELS, UNREADABLE, BadImageError, is_readable, load_rgb, to_square_array
from sslstudio.data.scan import ScanReport, scan_folder
from sslstudio.errors import ConfigError, DataError

__all__ = ["SMALL_POLICIES", "DecodedImages", "decode_folder", "decode_images", "format_counts"]

CHUNK_BYTES = 32 << 20
"""Rows decoded into a memory-mapped file are written (and flushed) in chunks of about this size."""

SMALL_POLICIES = ("upscale", "skip")
"""Accepted values of ``small_policy``."""

_REASON_ORDER = ("truncated", "not an image", "corrupt", UNREADABLE, "empty file", "decompression bomb", "too small")


@dataclass
class DecodedImages:
    """Square images decoded from files.

    Attributes:
        arrays: ``uint8`` array of shape ``(N, size, size, 3)``: an ordinary (writable) array in
            RAM, or a read-only :class:`numpy.memmap` when it comes from the decode cache or was
            too large for the RAM budget (then backed by a temporary file).
        paths: The N source files, in the same order as ``arrays``.
        skipped: ``(path, reason)`` for every file that was not used.
        size: Side of each square in pixels.
        cache_path: The ``.npy`` file of the decode cache holding ``arrays``, or None.
        from_cache: True when ``arrays`` was opened from the cache without decoding anything.
    """

    arrays: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    size: int = 0
    cache_path: Path | None = None
    from_cache: bool = False

    @property
    def storage(self) -> str:
        """Where the pixels are: ``"memory"``, ``"cache"`` or ``"temporary file"``."""
        if self.cache_path is not None:
            return "cache"
        return "temporary file" if isinstance(self.arrays, np.memmap) else "memory"

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


def _decode_into(
    path_list: list[Path],
    size: int,
    settings: dict[str, Any],
    workers: int,
    progress: Callable[[int, int], None] | None,
    out: np.ndarray,
    flush: Callable[[], None] | None = None,
) -> tuple[list[int], list[tuple[int, str]]]:
    """Decode ``path_list`` into the first rows of ``out``; return the positions of the kept files
    and ``(position, reason)`` of the skipped ones.

    With ``flush`` (``out`` is a memory map), rows are gathered in a small buffer and written to
    ``out`` a chunk at a time, each chunk followed by ``flush()``, so the written pages can leave
    memory and the whole array is never held in RAM.
    """
    total = len(path_list)
    kept: list[int] = []
    skipped: list[tuple[int, str]] = []
    every = max(1, total // 100)
    decode = functools.partial(_decode_one, size=size, **settings)
    chunk = max(1, min(total, CHUNK_BYTES // (size * size * 3))) if flush is not None else 0
    buffer = np.empty((chunk, size, size, 3), dtype=np.uint8) if chunk else None
    pending = written = 0
    for done, result in enumerate(_results(path_list, int(workers), decode), start=1):
        if isinstance(result, str):
            skipped.append((done - 1, result))
        else:
            if buffer is None:
                out[len(kept)] = result
            else:
                buffer[pending] = result
                pending += 1
            kept.append(done - 1)
        if buffer is not None and pending and (pending == chunk or done == total):
            out[written : written + pending] = buffer[:pending]
            written += pending
            pending = 0
            flush()
        if progress is not None and (done % every == 0 or done == total):
            progress(done, total)
    return kept, skipped


def _complain(result: DecodedImages, total: int, folder: str) -> None:
    """Raise :class:`DataError` when nothing was kept; warn once about the skipped files."""
    counts = format_counts(result.skipped_counts())
    if not result.paths:
        hint = "Check that the files open in an image viewer, or choose another folder"
        if UNREADABLE in result.skipped_counts():
            hint = ("Check the files' permissions (the user running sslstudio must be allowed to read them) "
                    "and that they open in an image viewer, or choose another folder")
        if "too small" in result.skipped_counts():
            hint += ', lower the minimum source size, or keep small images with small_policy="upscale"'
        raise DataError(f"None of the {total:,} image files in {folder} could be read: {counts}. {hint}.")
    if result.skipped:
        warnings.warn(
            f"Skipped {len(result.skipped):,} of {total:,} image files in {folder}: {counts}.",
            UserWarning,
            stacklevel=3,
        )


def _settings(min_source_size: int | None, small_policy: str, max_pixels: int | None) -> dict[str, Any]:
    return {"min_source_size": min_source_size, "small_policy": small_policy, "max_pixels": max_pixels}


def _in_memory(path_list: list[Path], size: int, settings: dict[str, Any], workers: int,
               progress: Callable[[int, int], None] | None) -> DecodedImages:
    arrays = np.empty((len(path_list), size, size, 3), dtype=np.uint8)
    kept, skipped = _decode_into(path_list, size, settings, workers, progress, arrays)
    if len(kept) != len(path_list):
        arrays = arrays[: len(kept)].copy()
    return _result(arrays, path_list, kept, skipped, size)


def _result(arrays: np.ndarray, path_list: list[Path], kept: list[int], skipped: list[tuple[int, str]], size: int,
            **extra: Any) -> DecodedImages:
    return DecodedImages(arrays=arrays, paths=[path_list[i] for i in kept],
                         skipped=[(path_list[i], reason) for i, reason in skipped], size=size, **extra)


def _into_writer(writer: MemmapWriter, path_list: list[Path], size: int, settings: dict[str, Any], workers: int,
                 progress: Callable[[int, int], None] | None) -> tuple[list[int], list[tuple[int, str]]]:
    """Decode into ``writer`` and finish it (an empty result is aborted); abort on any error."""
    try:
        kept, skipped = _decode_into(path_list, size, settings, workers, progress, writer.array, writer.flush)
        if kept:
            writer.finish(len(kept))
        else:
            writer.abort()
    except BaseException:
        writer.abort()
        raise
    return kept, skipped


def decode_images(
    paths: Iterable[str | os.PathLike[str]],
    size: int,
    *,
    min_source_size: int | None = None,
    small_policy: str = "upscale",
    progress: Callable[[int, int], None] | None = None,
    workers: int = 0,
    max_pixels: int | None = None,
    max_ram_bytes: int | None = None,
) -> DecodedImages:
    """Decode image files into ``size x size`` RGB squares.

    Each file is read with :func:`~sslstudio.data.images.load_rgb` and cut
    with :func:`~sslstudio.data.images.to_square_array`. Unusable files are
    skipped with their reason, and one :class:`UserWarning` summarises them.

    An array larger than the RAM budget is decoded, in chunks, into a
    temporary memory-mapped file (in :func:`tempfile.gettempdir`; removed when
    the array is no longer used, at the latest when the process exits), and
    ``arrays`` is then a read-only :class:`numpy.memmap`.

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
        max_ram_bytes: RAM budget for the array in bytes; None: half the
            available memory (no limit when that is unknown), 0: always a
            memory-mapped file. See :func:`~sslstudio.data.cache.ram_budget`.

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
    settings = _settings(min_source_size, small_policy, max_pixels)
    result = _decode_within_budget(path_list, size, settings, int(workers), progress, max_ram_bytes)
    _complain(result, total, _common_folder(path_list))
    return result


def _decode_within_budget(path_list: list[Path], size: int, settings: dict[str, Any], workers: int,
                          progress: Callable[[int, int], None] | None,
                          max_ram_bytes: int | None) -> DecodedImages:
    """Decode in RAM, or into a temporary memory-mapped file when the array exceeds the budget."""
    budget = ram_budget(max_ram_bytes)
    need = len(path_list) * size * size * 3
    if budget is None or need <= budget:
        return _in_memory(path_list, size, settings, workers, progress)
    try:
        writer = MemmapWriter.temporary(len(path_list), size)
    except OSError as exc:
        warnings.warn(f"The decoded images ({need / 2**20:,.0f} MiB) exceed the memory budget "
                      f"({budget / 2**20:,.0f} MiB), but no temporary file can be written "
                      f"({exc.strerror or exc}); decoding in memory.", UserWarning, stacklevel=3)
        return _in_memory(path_list, size, settings, workers, progress)
    try:
        kept, skipped = _into_writer(writer, path_list, size, settings, workers, progress)
    except OSError as exc:  # the disk failed while writing (full, removed...)
        warnings.warn(f"Writing the decoded images to {writer.path} failed ({exc.strerror or exc}); "
                      "decoding in memory.", UserWarning, stacklevel=3)
        return _in_memory(path_list, size, settings, workers, progress)
    arrays = writer.open_temporary() if kept else np.empty((0, size, size, 3), dtype=np.uint8)
    return _result(arrays, path_list, kept, skipped, size)


def _relative_paths(files: list[Path], root: str) -> list[str]:
    """``files`` relative to ``root`` (they all lie under it, as a scan found them)."""
    prefix = root if root.endswith(os.sep) else root + os.sep
    cut = len(prefix)
    out = []
    for f in files:
        text = os.fspath(f)
        out.append(text[cut:] if text.startswith(prefix) else os.path.relpath(text, root))
    return out


def _key_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as they change the pixels (defaults spelled out, no-op values dropped)."""
    skip = settings["small_policy"] == "skip"
    min_size = settings["min_source_size"]
    max_pixels = settings["max_pixels"]
    return {
        "min_source_size": int(min_size) if skip and min_size is not None else None,
        "small_policy": settings["small_policy"],
        "max_pixels": int(MAX_PIXELS if max_pixels is None else max_pixels),
    }


def decode_folder(
    root: str | os.PathLike[str],
    size: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    min_source_size: int | None = None,
    small_policy: str = "upscale",
    max_pixels: int | None = None,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    max_ram_bytes: int | None = None,
) -> DecodedImages:
    """Scan ``root`` for image files and decode them all, through the decode cache when given one.

    Without ``cache_dir`` this is :func:`decode_images` on the scanned files.

    With ``cache_dir``, the images are decoded (in chunks, never all in RAM) into a ``.npy`` file
    in that folder, with a JSON sidecar; a later call with the same folder contents and settings
    opens it read-only as a :class:`numpy.memmap` without decoding anything (``from_cache`` is
    True). The key hashes the cache format version, the resolved root, ``size``, the decode
    settings and the sorted ``(relative path, size, mtime_ns)`` of the image files, so any added,
    removed or changed file means decoding again (and the outdated entry of the same folder and
    settings is deleted). See :mod:`sslstudio.data.cache`. A damaged entry gives a warning and is
    decoded again; a cache folder that cannot be written gives a warning and the images are decoded
    without it. Files skipped as unreadable (no read permission) are checked again on a cache hit: a
    permission change leaves the key alone, so once one of them can be read the entry is decoded again.

    Args:
        root: Folder to scan recursively (see :func:`~sslstudio.data.scan.scan_folder`).
        size: Side of the output squares in pixels.
        cache_dir: Folder of the decode cache (created when missing), or None for no cache.
        min_source_size: See :func:`decode_images`.
        small_policy: See :func:`decode_images`.
        max_pixels: See :func:`decode_images`.
        workers: Decoding threads (see :func:`decode_images`); not part of the key.
        progress: ``progress(done, total)`` while decoding; once ``(N, N)`` on a cache hit.
        max_ram_bytes: RAM budget without a cache (see :func:`decode_images`).

    Returns:
        The decoded images.

    Raises:
        DataError: The folder is missing or empty, or no image could be used.
        ConfigError: A setting is out of range.
    """
    _check_settings(size, min_source_size, small_policy, workers)
    size = int(size)
    options = dict(min_source_size=min_source_size, small_policy=small_policy, max_pixels=max_pixels,
                   workers=workers, progress=progress, max_ram_bytes=max_ram_bytes)
    if cache_dir is None:
        return decode_images(scan_folder(root).files, size, **options)
    report = scan_folder(root, stat=True)
    settings = _settings(min_source_size, small_policy, max_pixels)
    result = _decode_cached(report, size, Path(cache_dir).expanduser(), settings, int(workers), progress,
                            max_ram_bytes)
    _complain(result, len(report.files), os.fspath(report.root))
    return result


def _readable_again(skipped: list[tuple[Path, str]]) -> bool:
    """Whether a file skipped for lack of permission can now be read."""
    return any(reason == UNREADABLE and is_readable(path) for path, reason in skipped)


def _decode_cached(report: ScanReport, size: int, cache_dir: Path, settings: dict[str, Any], workers: int,
                   progress: Callable[[int, int], None] | None, max_ram_bytes: int | None) -> DecodedImages:
    files = report.files
    total = len(files)
    rels = _relative_paths(files, os.fspath(report.root))
    stats = report.stats or []
    key = cache_key(report.root, size, _key_settings(settings),
                    [(rel, nbytes, mtime) for rel, (nbytes, mtime) in zip(rels, stats)])
    cache = DecodeCache(cache_dir)
    npy, _ = cache.paths(key)

    found = cache.load(key)
    if found is not None:
        arrays, info = found
        by_rel = dict(zip(rels, files))
        try:
            kept = [by_rel[rel] for rel in info["kept"]]
            skipped = [(by_rel[rel], str(reason)) for rel, reason in info["skipped"]]
            if len(kept) + len(skipped) != total:
                raise ValueError("the sidecar does not list every file")
        except (KeyError, TypeError, ValueError) as exc:
            warnings.warn(f"The decode cache entry {npy} is damaged ({exc}); decoding the images again.",
                          UserWarning, stacklevel=3)
            del arrays
            cache.discard(key)
            found = None
        else:
            if _readable_again(skipped):  # a permission change keeps the key: decode again, not "unreadable"
                del arrays
                found = None
                cache.discard(key)
        if found is not None:
            if progress is not None:
                progress(total, total)
            return DecodedImages(arrays=arrays, paths=kept, skipped=skipped, size=size, cache_path=npy,
                                 from_cache=True)

    def without_cache(why: str, exc: OSError) -> DecodedImages:
        warnings.warn(f"The decode cache folder {cache_dir} {why} ({exc.strerror or exc}); "
                      "decoding the images without the cache.", UserWarning, stacklevel=4)
        return _decode_within_budget(files, size, settings, workers, progress, max_ram_bytes)

    try:
        writer = MemmapWriter.in_cache(cache_dir, key, total, size)
    except OSError as exc:
        return without_cache("cannot be written", exc)
    try:
        kept, skipped = _into_writer(writer, files, size, settings, workers, progress)
    except OSError as exc:
        return without_cache("could not be written to", exc)
    if not kept:
        return _result(np.empty((0, size, size, 3), dtype=np.uint8), files, kept, skipped, size)
    info = {"files": total, "kept": [rels[i] for i in kept], "skipped": [[rels[i], reason] for i, reason in skipped]}
    try:
        npy = cache.commit(key, writer, len(kept), info)
        arrays = np.load(npy, mmap_mode="r")
    except OSError as exc:
        warnings.warn(f"The decoded images could not be stored in the cache folder {cache_dir} "
                      f"({exc.strerror or exc}); they are used without the cache.", UserWarning, stacklevel=3)
        if os.path.exists(writer.path):
            return _result(writer.open_temporary(), files, kept, skipped, size)
        return _decode_within_budget(files, size, settings, workers, None, max_ram_bytes)
    return _result(arrays, files, kept, skipped, size, cache_path=npy)

