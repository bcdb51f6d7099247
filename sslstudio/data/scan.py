"""Finding the image files inside a folder, recursively and fast."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sslstudio.data.images import IMAGE_EXTENSIONS
from sslstudio.errors import DataError

__all__ = ["ScanReport", "check_folder", "scan_folder", "walk_images"]

_PROGRESS_EVERY = 2000


@dataclass
class ScanReport:
    """What a folder scan found.

    Attributes:
        root: The folder that was scanned.
        files: Image files (by extension), sorted, found recursively.
        ignored: Number of other, non-hidden files seen.
    """

    root: Path
    files: list[Path] = field(default_factory=list)
    ignored: int = 0

    def summary(self) -> str:
        """Return a one-line description such as ``"1,204 images in /data (3 other files ignored)"``."""
        n = len(self.files)
        noun = "image" if n == 1 else "images"
        text = f"{n:,} {noun} in {self.root}"
        if self.ignored:
            other = "file" if self.ignored == 1 else "files"
            text += f" ({self.ignored:,} other {other} ignored)"
        return text


def check_folder(path: str | os.PathLike[str], what: str = "The folder") -> Path:
    """Check that ``path`` is an existing folder and return it as a :class:`Path`.

    Args:
        path: Folder to check.
        what: How to name the folder in the error sentence.

    Returns:
        The path, with ``~`` expanded.

    Raises:
        DataError: The path does not exist or is not a folder.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataError(f"{what} {folder} does not exist; check the path and choose an existing folder.")
    if not folder.is_dir():
        raise DataError(f"{what} {folder} is not a folder; choose the folder that contains the images.")
    return folder


def walk_images(
    root: str | os.PathLike[str],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[str], int]:
    """Walk ``root`` recursively and collect image file paths.

    Hidden files and folders (name starting with ``.``) are skipped. Folder
    symlinks are followed, but each real folder is visited only once, so
    symlink loops end. Folders that cannot be listed are skipped.

    Args:
        root: Folder to walk (must exist).
        progress: Called with the number of images found so far, every few
            thousand files and once at the end.

    Returns:
        The sorted image paths as strings, and the number of other files seen.
    """
    found: list[str] = []
    ignored = 0
    seen_dirs: set[tuple[int, int]] = set()
    root_str = os.fspath(root)
    try:
        st = os.stat(root_str)
        seen_dirs.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    stack = [root_str]
    next_report = _PROGRESS_EVERY
    while stack:
        current = stack.pop()
        try:
            entries = os.scandir(current)
        except OSError:
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        st = entry.stat()
                        key = (st.st_dev, st.st_ino)
                        if key in seen_dirs:
                            continue
                        seen_dirs.add(key)
                        stack.append(entry.path)
                        continue
                    is_file = entry.is_file()
                except OSError:
                    continue
                if not is_file:
                    continue
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    found.append(entry.path)
                    if progress is not None and len(found) >= next_report:
                        progress(len(found))
                        next_report += _PROGRESS_EVERY
                else:
                    ignored += 1
    found.sort()
    if progress is not None:
        progress(len(found))
    return found, ignored


def scan_folder(
    root: str | os.PathLike[str],
    progress: Callable[[int], None] | None = None,
) -> ScanReport:
    """Find all image files under ``root``.

    Args:
        root: Folder to scan recursively.
        progress: Optional callback receiving the number of images found so far.

    Returns:
        A :class:`ScanReport` with the sorted image files.

    Raises:
        DataError: The folder is missing, is not a folder, or holds no image
            files with an accepted extension.
    """
    folder = check_folder(root, "The image folder")
    files, ignored = walk_images(folder, progress)
    if not files:
        accepted = ", ".join(sorted(IMAGE_EXTENSIONS))
        other = f" (it holds {ignored:,} other files)" if ignored else ""
        raise DataError(
            f"No images with the accepted extensions ({accepted}) were found in {folder}{other}; "
            "choose a folder that contains image files (sub-folders are searched too)."
        )
    return ScanReport(root=folder, files=[Path(p) for p in files], ignored=ignored)
