"""A list model of image files whose thumbnails load lazily, off the GUI thread.

The view asks :meth:`ThumbnailModel.data` only for the rows it paints, so only visible rows are
requested. Requests go through a small last-in-first-out queue without duplicates to one long
loader job (the page's :class:`~sslstudio.gui.workers.JobRunner`, slot "thumbnails"): the rows
scrolled to last load first, and requests that fell far behind are dropped (a row painted again is
requested again). Each new file list starts a new loader job, so the runner's stale-result rule
drops thumbnails of the previous list. Decoded thumbnails come back as :class:`QImage` (safe to
make off the GUI thread) and are kept in a bounded cache. With ``uniformItemSizes`` on the view,
100,000 rows scroll smoothly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QSize, Qt
from PySide6.QtGui import QColor, QImage, QImageReader, QPixmap

from sslstudio.engine.events import Cancelled, RunControl
from sslstudio.gui.workers import JobRunner

__all__ = ["ThumbnailModel", "ThumbnailQueue", "ThumbnailLoaded", "load_requested"]

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


@dataclass
class ThumbnailLoaded:
    """One loaded thumbnail (a null image when the file cannot be read)."""

    row: int
    image: QImage
    kind: str = "thumbnail"


class ThumbnailQueue:
    """Pending thumbnail requests: newest first, one per row, at most ``MAX_PENDING``. Thread-safe."""

    MAX_PENDING = 256

    def __init__(self) -> None:
        self._queue: OrderedDict[int, str] = OrderedDict()
        self._cond = threading.Condition()

    def put(self, row: int, path: str) -> None:
        with self._cond:
            self._queue[row] = path
            self._queue.move_to_end(row)
            while len(self._queue) > self.MAX_PENDING:
                self._queue.popitem(last=False)  # oldest requests: rows scrolled past long ago
            self._cond.notify_all()  # a superseded loader may be waiting too

    def clear(self) -> None:
        with self._cond:
            self._queue.clear()

    def wake(self) -> None:
        """Wake a waiting :meth:`take` so that it sees its control's cancellation at once."""
        with self._cond:
            self._cond.notify_all()

    def take(self, control: RunControl) -> tuple[int, str]:
        """The newest request; blocks until there is one. Raises ``Cancelled`` once ``control`` is."""
        with self._cond:
            while True:
                if control.cancelled:
                    raise Cancelled()
                if self._queue:
                    return self._queue.popitem(last=True)
                self._cond.wait(0.5)


def load_requested(queue: ThumbnailQueue, size: int, on_event, control: RunControl) -> None:
    """The loader job: load each request taken from ``queue`` until ``control`` is cancelled."""
    while True:
        row, path = queue.take(control)
        on_event(ThumbnailLoaded(row, load_thumbnail(path, size)))


class ThumbnailModel(QAbstractListModel):
    """Rows are image files; ``DecorationRole`` is the thumbnail (a placeholder until loaded)."""

    CACHE = 2000

    def __init__(self, parent: QObject | None = None, size: int = THUMB):
        super().__init__(parent)
        self._files: list[str] = []
        self._cache: OrderedDict[int, QPixmap] = OrderedDict()
        self.size = size
        placeholder = QPixmap(size, size)
        placeholder.fill(QColor(128, 128, 128, 60))
        self._placeholder = placeholder
        broken = QPixmap(size, size)
        broken.fill(QColor(200, 60, 60, 90))
        self._broken = broken
        self._queue = ThumbnailQueue()
        self.jobs = JobRunner(self)

    # -- model API ---------------------------------------------------------------------------
    def set_files(self, files: list, copy: bool = True) -> None:
        """Show ``files`` (paths). ``copy=False`` takes ownership of a list of ``str`` as it is
        (no per-file work in the GUI thread, which matters for 100,000 files)."""
        self.beginResetModel()
        self._files = [str(f) for f in files] if copy else files
        self._cache.clear()
        self._queue.clear()
        if self._files:  # a new loader: the old one's thumbnails are stale and never delivered
            self.jobs.start("thumbnails", load_requested, self._queue, self.size, on_event=self._on_loaded,
                            pass_control=True)
        else:
            self.jobs.cancel("thumbnails")
        self._queue.wake()  # the superseded loader stops now rather than at its next wait
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
            # the view asks only for rows it paints; the queue drops duplicates
            self._queue.put(row, self._files[row])
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

    def _on_loaded(self, loaded: ThumbnailLoaded) -> None:
        row, image = loaded.row, loaded.image
        self._cache[row] = QPixmap.fromImage(image) if not image.isNull() else self._broken
        while len(self._cache) > self.CACHE:
            old, _ = self._cache.popitem(last=False)
        idx = self.index(row)
        self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])

    def shutdown(self) -> None:
        """Stop the loader job and wait for its thread (call before the model goes away)."""
        self._queue.clear()
        for job in self.jobs.running():
            job.cancel()
        self._queue.wake()
        self.jobs.stop_all()
