"""Step 1, Data: choose the folder of unlabelled images, scan it in the background, see thumbnails."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QHeaderView,
                               QLabel, QListView, QProgressBar, QPushButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from sslstudio.data import inspect_images, scan_folder
from sslstudio.gui.thumbnails import ThumbnailModel
from sslstudio.gui.workers import Job, JobRunner

__all__ = ["DataPage"]

MAX_RECENT = 8


def scan_for_page(folder: str, progress=None) -> tuple:
    """The page's background scan: :func:`scan_folder` plus the paths as text for the list model.

    Everything proportional to the number of files happens here, in the worker thread, so that the
    GUI thread only swaps lists when 100,000 files arrive (turning 100,000 paths into text takes a
    tenth of a second, too long for the event loop).
    """
    report = scan_folder(folder, progress)
    return report, [os.fspath(f) for f in report.files]


class DataPage(QWidget):
    """Signals ``scan_finished(report)`` (a :class:`~sslstudio.data.ScanReport`) and ``scan_failed(message)``."""

    scan_started = Signal(str)
    scan_finished = Signal(object)
    scan_failed = Signal(str)
    inspect_finished = Signal(object)  # an InspectReport: sizes and unreadable files

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.folder: str | None = None
        self.report = None
        self.inspection = None
        self.jobs = JobRunner(self, track=window.track)  # slots "scan" and "inspect"
        self.setAcceptDrops(True)

        self.choose_button = QPushButton("Choose folder…")
        self.choose_button.setToolTip("Choose the folder of unlabelled images (Ctrl+O). "
                                      "You can also drop a folder onto this page.")
        self.choose_button.clicked.connect(self.choose_folder)
        self.recent = QComboBox()
        self.recent.setMinimumContentsLength(30)
        self.recent.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.recent.setToolTip("Recently used folders")
        self.recent.activated.connect(self._on_recent)
        top = QHBoxLayout()
        top.addWidget(self.choose_button)
        top.addWidget(QLabel("Recent:"))
        top.addWidget(self.recent, 1)

        self.path_label = QLabel("No folder chosen yet. Choose a folder of images, or drop one here.")
        self.path_label.setWordWrap(True)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.progress.hide()
        self.summary_label = QLabel("")
        self.summary_label.setObjectName("summary")
        self.summary_label.setWordWrap(True)
        self.check_label = QLabel("")
        self.check_label.setWordWrap(True)
        self.skipped_button = QPushButton("Show unreadable files…")
        self.skipped_button.setToolTip("The files that will be skipped, with the reason for each")
        self.skipped_button.clicked.connect(self.show_skipped)
        self.skipped_button.hide()
        check_row = QHBoxLayout()
        check_row.addWidget(self.check_label, 1)
        check_row.addWidget(self.skipped_button)

        self.model = ThumbnailModel(self)
        self.view = QListView()
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setUniformItemSizes(True)  # O(1) layout: smooth with 100,000 rows
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setBatchSize(500)
        self.view.setIconSize(QSize(self.model.size, self.model.size))
        self.view.setGridSize(QSize(self.model.size + 20, self.model.size + 30))
        self.view.setSpacing(2)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.view.setModel(self.model)

        layout = QVBoxLayout(self)
        title = QLabel("1 · Unlabelled images")
        title.setObjectName("pageTitle")
        layout.addWidget(title)
        layout.addLayout(top)
        layout.addWidget(self.path_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.summary_label)
        layout.addLayout(check_row)
        layout.addWidget(self.view, 1)
        self.load_recent()

    # -- recent folders ------------------------------------------------------------------------
    def recent_folders(self) -> list[str]:
        value = self.window_.settings.value("data/recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def load_recent(self) -> None:
        self.recent.clear()
        for folder in self.recent_folders():
            self.recent.addItem(folder, folder)
        self.recent.setCurrentIndex(-1)
        self.recent.setPlaceholderText("(none)" if not self.recent.count() else "choose a recent folder")

    def _remember(self, folder: str) -> None:
        items = [folder] + [f for f in self.recent_folders() if f != folder]
        self.window_.settings.setValue("data/recent", items[:MAX_RECENT])
        self.load_recent()

    def _on_recent(self, index: int) -> None:
        folder = self.recent.itemData(index)
        if folder:
            self.set_folder(folder)

    # -- choosing ------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        start = self.folder or (self.recent_folders() or [str(Path.home())])[0]
        folder = QFileDialog.getExistingDirectory(self, "Choose the folder of unlabelled images", start)
        if folder:
            self.set_folder(folder)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self._dropped_folder(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt API
        folder = self._dropped_folder(event.mimeData())
        if folder:
            event.acceptProposedAction()
            self.set_folder(folder)

    @staticmethod
    def _dropped_folder(mime) -> str | None:
        if not mime.hasUrls():
            return None
        for url in mime.urls():
            if url.isLocalFile():
                path = Path(url.toLocalFile())
                if path.is_dir():
                    return str(path)
                if path.is_file():
                    return str(path.parent)
        return None

    def set_folder(self, folder: str) -> None:
        """Scan ``folder`` in the background (what the button, the recent list and a drop call)."""
        folder = str(Path(folder).expanduser())
        self.jobs.cancel("inspect")  # the old folder's check; the old scan is superseded below
        self.folder = folder
        self.report = None
        self.inspection = None
        self.check_label.setText("")
        self.skipped_button.hide()
        self.model.set_files([])
        self.path_label.setText(folder)
        self.summary_label.setText("Scanning…")
        self.progress.show()
        # a running scan of another folder is cancelled (at its next progress report) and superseded
        self.jobs.start("scan", scan_for_page, folder, on_progress=self._on_progress, on_result=self._on_scanned,
                        on_error=self._on_failed, on_ended=self.progress.hide)
        self.scan_started.emit(folder)

    def restore_folder(self, folder: str) -> bool:
        """Open again the folder of the last session (scanned again: its files may have changed); says so
        when it is no longer there. Returns whether a scan started."""
        if Path(folder).expanduser().is_dir():
            self.set_folder(folder)
            return True
        self.path_label.setText(f"The folder of the last session, {folder}, is no longer there. Choose a folder "
                                "of images, or drop one here.")
        return False

    @property
    def job(self) -> Job | None:
        """The current (newest) scan."""
        return self.jobs.get("scan")

    def _on_progress(self, done: int, total: int) -> None:
        self.summary_label.setText(f"Scanning… {done:,} images found so far")

    def _on_scanned(self, result) -> None:
        report, paths = result
        self.report = report
        self._remember(self.folder)
        self.model.set_files(paths, copy=False)  # the worker's list of str, handed over
        fmt = ", ".join(f"{n:,} {ext}" for ext, n in report.formats.items())
        text = f"<b>{len(report.files):,}</b> images"
        if fmt:
            text += f" ({fmt})"
        if report.ignored:
            text += f"; {report.ignored:,} other files ignored"
        if not report.files:
            text += " — this folder holds no images; choose another one."
        self.summary_label.setText(text)
        self.scan_finished.emit(report)
        if report.files:
            self._start_inspection(report.files)

    # -- sizes and unreadable files (headers only, in the background) -------------------------
    def _start_inspection(self, files) -> None:
        self.check_label.setText("Checking image sizes…")
        self.jobs.start("inspect", inspect_images, files, on_progress=self._on_inspect_progress,
                        on_result=self._on_inspected, on_error=self._on_inspect_failed)

    def _on_inspect_progress(self, done: int, total: int) -> None:
        self.check_label.setText(f"Checking image sizes… {done:,} / {total:,}")

    def _on_inspected(self, inspection) -> None:
        self.inspection = inspection
        text = f"Sizes: {inspection.size_range()}."
        if inspection.unreadable:
            reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(inspection.reasons().items()))
            text += (f" <span style='color:#d62728'>{len(inspection.unreadable):,} file(s) cannot be read and "
                     f"will be skipped ({reasons}).</span>")
            self.skipped_button.show()
        self.check_label.setText(text)
        self.inspect_finished.emit(inspection)

    def _on_inspect_failed(self, message: str, details: str) -> None:
        self.check_label.setText(f"Could not check the images: {message}")

    def skipped_dialog(self) -> QDialog:
        """A dialog listing the unreadable files and why (built, not shown)."""
        dialog = QDialog(self)
        dialog.setWindowTitle("Files that will be skipped")
        rows = self.inspection.unreadable if self.inspection else []
        table = QTableWidget(len(rows), 2, dialog)
        table.setObjectName("skippedTable")
        table.setHorizontalHeaderLabels(["File", "Reason"])
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        table.verticalHeader().hide()
        for i, (path, reason) in enumerate(rows):
            table.setItem(i, 0, QTableWidgetItem(str(path)))
            table.setItem(i, 1, QTableWidgetItem(reason))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=dialog)
        buttons.rejected.connect(dialog.reject)
        layout = QVBoxLayout(dialog)
        layout.addWidget(QLabel(f"{len(rows):,} file(s) in {self.folder} cannot be read. Damage further inside a "
                                "file (a truncated JPEG) is found when training decodes it; the run's "
                                "summary.json lists those too."))
        layout.addWidget(table, 1)
        layout.addWidget(buttons)
        dialog.resize(720, 400)
        return dialog

    def show_skipped(self) -> None:
        self.skipped_dialog().show()

    def _on_failed(self, message: str, details: str) -> None:
        self.summary_label.setText(f"<span style='color:#d62728'>{message}</span>")
        self.window_.log(details or message, "warning")
        self.scan_failed.emit(message)

    def image_count(self) -> int:
        return len(self.report.files) if self.report else 0

    def shutdown(self) -> None:
        self.jobs.stop_all()
        self.model.shutdown()
