"""Decoded images kept on disk: a cache of ``.npy`` arrays opened as memory maps, and RAM budgets.

Decoding a folder of images is the slow part of starting a run. :func:`~sslstudio.data.decode.decode_folder`
with a ``cache_dir`` stores what it decoded in that folder, and a later call with the same folder and
settings opens the stored array read-only as a :class:`numpy.memmap` instead of decoding again. Each
entry is two files::

    decoded-<group>-<digest>.npy    the uint8 array [N, size, size, 3], written with open_memmap
    decoded-<group>-<digest>.json   the sidecar: kept files (relative to the root), skipped files
                                    with their reasons, the settings and the format version

``group`` hashes what is fixed for one folder and one set of settings (:data:`CACHE_FORMAT_VERSION`,
the resolved root, the size, the decode settings, the Pillow version); ``digest`` also hashes the
folder's contents, the sorted ``(relative path, size, mtime_ns)`` of its image files (from ``stat``,
nothing is read). Adding, removing or changing a file therefore gives a new digest, the folder is
decoded again, and the entries of the same group with another digest are deleted.

Both files are written under temporary names and moved into place with :func:`os.replace`, the array
first; an entry is used only when its sidecar matches the array (shape, byte size, key), so a
half-written or damaged entry is decoded again, never trusted.

Arrays that would not fit in RAM are decoded into a memory-mapped file in chunks, so the whole array
is never held in memory: in the cache, or, without a cache, in a temporary file
(:func:`tempfile.gettempdir`) that is removed as soon as it is mapped (POSIX) or when the array is
garbage-collected or the process exits (elsewhere).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslstudio import fileutil

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheKey",
    "MemmapWriter",
    "available_memory",
    "cache_entries",
    "cache_key",
    "clear_cache",
    "default_cache_dir",
    "ram_budget",
]

CACHE_FORMAT_VERSION = 1
"""Bumped whenever the stored files or the decoding change in a way that old entries must not be reused."""

PREFIX = "decoded-"
STALE_TEMP_S = 24 * 3600  # temporary files of a group older than this are leftovers of a crashed run


# -- memory -----------------------------------------------------------------------------------------
def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 memory limit (containers), or None when there is no limit."""
    try:
        with open("/sys/fs/cgroup/memory.max", "rb") as fh:
            limit = fh.read().strip()
        if limit == b"max":
            return None
        with open("/sys/fs/cgroup/memory.current", "rb") as fh:
            current = int(fh.read().strip())
        return max(0, int(limit) - current)
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes of memory available to this process now, or None when it cannot be found.

    ``MemAvailable`` of ``/proc/meminfo`` (capped by a cgroup v2 limit when there is one), else
    ``os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")``.
    """
    found = _meminfo_available()
    if found is None:
        try:
            found = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            found = None
        if found is not None and found <= 0:
            found = None
    cgroup = _cgroup_available()
    if cgroup is not None:
        found = cgroup if found is None else min(found, cgroup)
    return found


def ram_budget(max_ram_bytes: int | None = None) -> int | None:
    """The largest decoded array to keep in RAM: ``max_ram_bytes``, or half the available memory.

    Args:
        max_ram_bytes: An explicit budget in bytes (0: always use a memory-mapped file), or None
            for half of :func:`available_memory`.

    Returns:
        The budget in bytes, or None for no limit (the available memory is unknown).
    """
    if max_ram_bytes is not None:
        return max(0, int(max_ram_bytes))
    available = available_memory()
    return None if available is None else available // 2


def default_cache_dir() -> Path:
    """Where a decode cache goes by default: ``$SSLSTUDIO_CACHE_DIR``, else the user's cache folder.

    That is ``$XDG_CACHE_HOME/sslstudio/decoded`` (``~/.cache/sslstudio/decoded``) on Linux,
    ``~/Library/Caches/sslstudio/decoded`` on macOS and ``%LOCALAPPDATA%\\sslstudio\\decoded`` on
    Windows. Nothing is created here.
    """
    explicit = os.environ.get("SSLSTUDIO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sslstudio" / "decoded"


# -- keys -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheKey:
    """Names one cache entry.

    Attributes:
        group: Hash of the format version, the resolved root, the size and the settings (one
            folder, one set of settings); entries of the same group with another digest are stale.
        digest: Hash of the group and the folder's contents (relative paths, sizes, mtimes).
        meta: What the group hashes, as stored in the sidecar.
    """

    group: str
    digest: str
    meta: dict

    @property
    def stem(self) -> str:
        return f"{PREFIX}{self.group[:16]}-{self.digest[:24]}"


def _pillow_version() -> str:
    import PIL

    return str(getattr(PIL, "__version__", "?"))


def cache_key(root: str | os.PathLike[str], size: int, settings: dict[str, Any],
              contents: list[tuple[str, int, int]]) -> CacheKey:
    """Compute the key of a decoded folder.

    Args:
        root: The folder (resolved here, so a relative path and its absolute form agree).
        size: The side of the decoded squares.
        settings: The decode settings that change the pixels (``min_source_size``,
            ``small_policy``, ``max_pixels``); JSON-serialisable.
        contents: ``(relative path, size in bytes, mtime_ns)`` of every image file, sorted.

    Returns:
        The key; equal keys mean equal decoded arrays.
    """
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "root": os.fspath(Path(root).expanduser().resolve()),
        "size": int(size),
        "settings": dict(settings, pillow=_pillow_version()),
    }
    group = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    h = hashlib.sha256(group.encode())
    h.update(b"".join(os.fsencode(rel) + b"\0%d\0%d\0" % (int(nbytes), int(mtime)) for rel, nbytes, mtime in contents))
    return CacheKey(group=group, digest=h.hexdigest(), meta=meta)


# -- writing ----------------------------------------------------------------------------------------
def _unlink(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


_NO_FALLOCATE = {getattr(errno, name) for name in ("EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EINVAL") if hasattr(errno, name)}


def _reserve(path: str, nbytes: int) -> None:
    """Allocate the file's blocks now, so a full disk is an ``OSError`` here, not a crash (SIGBUS) later."""
    folder = os.path.dirname(path) or "."
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < nbytes:
        raise OSError(errno.ENOSPC, f"{nbytes / 2**20:,.0f} MiB are needed but only {free / 2**20:,.0f} MiB "
                                    f"are free in {folder}")
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno not in _NO_FALLOCATE:
            raise
    finally:
        os.close(fd)


def _shrink_npy(path: str, rows: int) -> None:
    """Rewrite an ``.npy`` header for its first ``rows`` rows and cut the file after them.

    The new header is padded to the old header's length, so the data does not move.
    """
    with open(path, "r+b") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            prefix = 10
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            prefix = 12
        offset = fh.tell()
        new_shape = (int(rows),) + tuple(shape[1:])
        header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": bool(fortran),
                       "shape": new_shape})
        room = offset - prefix
        if len(header) + 1 > room:  # cannot happen: the row count only gets shorter
            raise ValueError("the new .npy header does not fit")
        fh.seek(prefix)
        fh.write((header.ljust(room - 1) + "\n").encode("latin1"))
        fh.truncate(offset + int(np.prod(new_shape, dtype=np.int64)) * dtype.itemsize)


class MemmapWriter:
    """A ``uint8 [rows, size, size, 3]`` ``.npy`` file being filled through a memory map.

    Create it with :meth:`in_cache` or :meth:`temporary`, write rows into :attr:`array` (then
    :meth:`flush` now and then, so the written pages can leave memory), and end with :meth:`finish`
    (cut to the rows used, flushed to disk) or :meth:`abort` (removed).
    """

    def __init__(self, path: str, rows: int, size: int):
        from numpy.lib.format import open_memmap

        self.path = path
        self.rows = int(rows)
        self.size = int(size)
        self.array: np.memmap | None = None
        try:
            self.array = open_memmap(path, mode="w+", dtype=np.uint8, shape=(self.rows, self.size, self.size, 3))
            offset = int(self.array.offset)
            _reserve(path, offset + self.array.nbytes)
        except BaseException:
            self.abort()
            raise

    @classmethod
    def temporary(cls, rows: int, size: int, folder: str | None = None) -> "MemmapWriter":
        """A writer of a temporary file in ``folder`` (default :func:`tempfile.gettempdir`)."""
        # Private scratch (0o600, possibly in a shared /tmp), removed once mapped: not a result others read.
        fd, path = tempfile.mkstemp(prefix="sslstudio-decoded-", suffix=".npy", dir=folder)
        os.close(fd)
        return cls(path, rows, size)

    @classmethod
    def in_cache(cls, cache_dir: Path, key: CacheKey, rows: int, size: int) -> "MemmapWriter":
        """A writer of a temporary file inside ``cache_dir``, to become the entry of ``key``."""
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, path = fileutil.mkstemp(cache_dir, prefix=f"{key.stem}.", suffix=".tmp")  # umask applies, not 0o600
        os.close(fd)
        return cls(path, rows, size)

    def flush(self) -> None:
        if self.array is not None:
            self.array.flush()

    def finish(self, rows: int) -> None:
        """Keep the first ``rows`` rows, flush everything to disk and close the map."""
        if self.array is None:
            raise ValueError("this writer has already finished")
        self.array.flush()
        self.array = None  # unmapped: the file can be cut
        if rows != self.rows:
            _shrink_npy(self.path, rows)
        fileutil.fsync(self.path)

    def abort(self) -> None:
        """Close and remove the file (after an error or a cancel)."""
        self.array = None
        _unlink(self.path)

    def open_temporary(self) -> np.memmap:
        """Open a finished temporary file read-only and arrange for its removal.

        On POSIX the file is unlinked at once (the map keeps its data until it is closed); elsewhere
        it is removed when the array is garbage-collected, or at exit.
        """
        array = np.load(self.path, mmap_mode="r")
        try:
            os.unlink(self.path)
        except OSError:
            weakref.finalize(array, _unlink, self.path)
        return array


# -- the cache folder -------------------------------------------------------------------------------
class DecodeCache:
    """The entries of one cache folder (used by :func:`~sslstudio.data.decode.decode_folder`)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder).expanduser()

    def paths(self, key: CacheKey) -> tuple[Path, Path]:
        """The ``.npy`` and ``.json`` files of ``key``."""
        return self.folder / f"{key.stem}.npy", self.folder / f"{key.stem}.json"

    def load(self, key: CacheKey) -> tuple[np.memmap, dict] | None:
        """Open the entry of ``key`` read-only; None when there is none or it is damaged (then removed).

        A damaged entry (sidecar unreadable or not matching, array missing, truncated or of another
        shape) gives a :class:`UserWarning` and is deleted, so the caller decodes again.
        """
        npy, side = self.paths(key)
        if not side.is_file():
            return None  # not there (a lone .npy is a write that never finished; it is overwritten)
        try:
            with open(side, encoding="utf-8") as fh:
                info = json.load(fh)
            problem = _check_sidecar(info, key)
            if problem is None:
                expected = int(info["npy_bytes"])
                actual = os.path.getsize(npy)
                if actual != expected:
                    problem = f"the array file has {actual:,} bytes instead of {expected:,}"
            if problem is None:
                array = np.load(npy, mmap_mode="r")
                shape = tuple(int(v) for v in info["shape"])
                if not isinstance(array, np.memmap) or array.dtype != np.uint8 or array.shape != shape \
                        or not array.flags.c_contiguous:
                    problem = f"the array is {array.dtype} {array.shape} instead of uint8 {shape}"
                    del array
                else:
                    return array, info
        except (OSError, ValueError, TypeError, KeyError, EOFError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"The decode cache entry {npy} is damaged ({problem}); decoding the images again.",
                      UserWarning, stacklevel=3)
        _unlink(side)
        _unlink(npy)
        return None

    def discard(self, key: CacheKey) -> None:
        """Delete the entry of ``key`` (both files), if it is there."""
        for path in self.paths(key):
            _unlink(path)

    def commit(self, key: CacheKey, writer: MemmapWriter, rows: int, info: dict) -> Path:
        """Make a finished writer the entry of ``key``; delete the group's other (stale) entries.

        Args:
            key: The entry's key.
            writer: A writer from :meth:`MemmapWriter.in_cache`, already finished.
            rows: The rows it holds.
            info: The sidecar's content (kept and skipped files); the key, shape and sizes are added.

        Returns:
            The ``.npy`` file of the entry.
        """
        npy, side = self.paths(key)
        info = dict(info)
        info.update(key.meta)
        info.update({"key": key.digest, "group": key.group, "dtype": "uint8",
                     "shape": [int(rows), writer.size, writer.size, 3],
                     "npy_bytes": os.path.getsize(writer.path), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        fd, tmp_side = fileutil.mkstemp(self.folder, prefix=f"{key.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(info, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(writer.path, npy)
            os.replace(tmp_side, side)
        except BaseException:
            _unlink(tmp_side)
            raise
        fileutil.fsync(self.folder, directory=True)
        self.remove_stale(key)
        return npy

    def remove_stale(self, key: CacheKey) -> int:
        """Delete the entries of ``key``'s group with another digest (and old leftover temporary files)."""
        group_prefix = f"{PREFIX}{key.group[:16]}-"
        keep = key.stem
        removed = 0
        now = time.time()
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return 0
        for entry in entries:
            name = entry.name
            if not name.startswith(group_prefix) or name.startswith(keep + "."):
                continue
            if name.endswith(".tmp"):
                try:
                    if now - entry.stat().st_mtime < STALE_TEMP_S:
                        continue  # perhaps another process is writing it right now
                except OSError:
                    continue
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass  # in use (Windows) or already gone
        return removed


def _check_sidecar(info: Any, key: CacheKey) -> str | None:
    """Why a sidecar does not describe the entry of ``key``, or None when it does."""
    if not isinstance(info, dict):
        return "the sidecar is not a JSON object"
    if info.get("format_version") != CACHE_FORMAT_VERSION:
        return f"format version {info.get('format_version')!r} instead of {CACHE_FORMAT_VERSION}"
    if info.get("key") != key.digest:
        return "the sidecar belongs to another key"
    shape = info.get("shape")
    kept = info.get("kept")
    if not isinstance(shape, list) or len(shape) != 4 or not isinstance(kept, list) or shape[0] != len(kept):
        return "the sidecar's shape and file list disagree"
    if not isinstance(info.get("skipped"), list) or not isinstance(info.get("npy_bytes"), int):
        return "the sidecar is incomplete"
    return None


def cache_entries(cache_dir: str | os.PathLike[str]) -> list[dict]:
    """The sidecars of the entries in ``cache_dir`` (with ``"npy"``: the array's path), newest first."""
    folder = Path(cache_dir).expanduser()
    out = []
    for side in folder.glob(f"{PREFIX}*.json"):
        try:
            info = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict):
            info["npy"] = str(side.with_suffix(".npy"))
            out.append(info)
    return sorted(out, key=lambda i: str(i.get("created", "")), reverse=True)


def clear_cache(cache_dir: str | os.PathLike[str]) -> int:
    """Delete every entry (and leftover temporary file) of ``cache_dir``; return the files removed."""
    folder = Path(cache_dir).expanduser()
    removed = 0
    for path in list(folder.glob(f"{PREFIX}*")):
        if path.suffix in (".npy", ".json", ".tmp"):
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed
