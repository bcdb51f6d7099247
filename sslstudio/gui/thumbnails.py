"""A list model of image files whose thumbnails load lazily, off the GUI thread.

The view asks :meth:`ThumbnailModel.data` only for the rows it paints, so only visible rows are
requested. Requests go to one loader thread through a small last-in-first-out queue without
duplicates: the rows scrolled to last load first, and requests that fell far behind are dropped
(a row painted again is requested again). Decoded thumbnails
come back as :class:`QImage` (safe to make off the GUI thread) and are kept in a bounded cache.
With ``uniformItemSizes`` on the view, 100,000 rows scroll smoothly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QSize, Qt, QThread, Signal, Slot
from PySide6.QtGui import QColor, QImage, QImageReader, QPixmap

__all__ = ["ThumbnailModel", "ThumbnailLoader"]

THUMB = 96


def load_thumbnail(path: str, size: int = THUMB) -> QImage:
    """Read ``path`` scaled to fit ``size`` (JPEG readers decode at reduced size directly)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    src = reader.size()
    if src.isValid() and (src.width() > size or src.height() > size):
        reader.setScaledSize(src.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    if image.isNull():
        return QImage()
    if image.width() > size or image.height() > size:
        image = image.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
    return image


class ThumbnailLoader(QObject):
    """Loads requested thumbnails in its own thread; ``loaded(row, generation, image)`` per file."""

    loaded = Signal(int, int, QImage)

    MAX_PENDING = 256

    def __init__(self, size: int = THUMB):
        super().__init__()
        self.size = size
        self._queue: OrderedDict[int, tuple[int, str]] = OrderedDict()
        self._cond = threading.Condition()
        self._stop = False

    def request(self, row: int, generation: int, path: str) -> None:
        with self._cond:
            self._queue[row] = (generation, path)
            self._queue.move_to_end(row)
            while len(self._queue) > self.MAX_PENDING:
                self._queue.popitem(last=False)  # oldest requests: rows scrolled past long ago
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._queue.clear()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify()

    @Slot()
    def run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait(0.5)
                if self._stop:
                    return
                row, (generation, path) = self._queue.popitem(last=True)  # newest first
            self.loaded.emit(row, generation, load_thumbnail(path, self.size))


class ThumbnailModel(QAbstractListModel):
    """Rows are image files; ``DecorationRole`` is the thumbnail (a placeholder until loaded)."""

    CACHE = 2000

    def __init__(self, parent: QObject | None = None, size: int = THUMB):
        super().__init__(parent)
        self._files: list[str] = []
        self._cache: OrderedDict[int, QPixmap] = OrderedDict()
        self._generation = 0
        self.size = size
        placeholder = QPixmap(size, size)
        placeholder.fill(QColor(128, 128, 128, 60))
        self._placeholder = placeholder
        broken = QPixmap(size, size)
        broken.fill(QColor(200, 60, 60, 90))
        self._broken = broken
        self._loader = ThumbnailLoader(size)
        self._thread = QThread()
        self._thread.setObjectName("sslstudio-thumbnails")
        self._loader.moveToThread(self._thread)
        self._thread.started.connect(self._loader.run)
        self._loader.loaded.connect(self._on_loaded)
        self._thread.start()

    # -- model API ---------------------------------------------------------------------------
    def set_files(self, files: list, copy: bool = True) -> None:
        """Show ``files`` (paths). ``copy=False`` takes ownership of a list of ``str`` as it is
        (no per-file work in the GUI thread, which matters for 100,000 files)."""
        self.beginResetModel()
        self._files = [str(f) for f in files] if copy else files
        self._cache.clear()
        self._generation += 1
        self._loader.clear()
        self.endResetModel()

    def files(self) -> list[str]:
        return self._files

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self._files)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = index.row()
        if role == Qt.ItemDataRole.DecorationRole:
            pix = self._cache.get(row)
            if pix is not None:
                self._cache.move_to_end(row)
                return pix
            # the view asks only for rows it paints; the loader drops duplicates
            self._loader.request(row, self._generation, self._files[row])
            return self._placeholder
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._files[row]
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(self._files[row]).name
        if role == Qt.ItemDataRole.SizeHintRole:
            return QSize(self.size + 16, self.size + 28)
        return None

    def loaded_count(self) -> int:
        return len(self._cache)

    @Slot(int, int, QImage)
    def _on_loaded(self, row: int, generation: int, image: QImage) -> None:
        if generation != self._generation or row >= len(self._files):
            return
        self._cache[row] = QPixmap.fromImage(image) if not image.isNull() else self._broken
        while len(self._cache) > self.CACHE:
            old, _ = self._cache.popitem(last=False)
        idx = self.index(row)
        self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])

    def shutdown(self) -> None:
        """Stop the loader thread and wait for it (call before the model goes away)."""
        if self._thread.isRunning():
            self._loader.stop()
            self._thread.quit()
            self._thread.wait()
