"""Step 5, Export: write a run's backbone in the chosen formats and show how to load it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget)

from sslstudio.export import FORMATS, export_run
from sslstudio.export.snippet import default_export_dir
from sslstudio.export.snippet import load_snippet as export_snippet
from sslstudio.figures import size_text
from sslstudio.gui.workers import Job, JobRunner

__all__ = ["ExportPage"]

FORMAT_HELP = {"pt": "backbone.pt: a plain state dict (torchvision key names)",
               "safetensors": "backbone.safetensors: the same tensors, safe to load, metadata embedded",
               "torchscript": "backbone.torchscript.pt: a traced module, no Python class needed",
               "onnx": "backbone.onnx: for ONNX Runtime and other inference engines"}


def load_snippet(folder: str) -> str:
    return export_snippet(folder)


class ExportPage(QWidget):
    """Signals ``export_finished(paths)`` and ``export_failed(message)``."""

    export_finished = Signal(list)
    export_failed = Signal(str)

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.jobs = JobRunner(self, track=window.track)  # slot "export": one at a time
        self.run = QComboBox()
        self.run.setToolTip("The pretraining run whose backbone is exported")
        self.run.setMinimumContentsLength(40)
        self.run.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run.currentIndexChanged.connect(self._default_destination)
        self.format_boxes: dict[str, QCheckBox] = {}
        frow = QHBoxLayout()
        for fmt in FORMATS:
            box = QCheckBox(fmt)
            box.setChecked(fmt in ("pt", "safetensors"))
            box.setToolTip(FORMAT_HELP.get(fmt, fmt))
            self.format_boxes[fmt] = box
            frow.addWidget(box)
        frow.addStretch(1)
        self.destination = QLineEdit()
        self.destination.setToolTip("Folder the files are written to")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.choose_destination)
        drow = QHBoxLayout()
        drow.addWidget(self.destination, 1)
        drow.addWidget(browse)
        self.export_button = QPushButton("Export")
        self.export_button.setObjectName("primary")
        self.export_button.clicked.connect(self.start)
        form = QFormLayout()
        form.addRow("Run", self.run)
        form.addRow("Formats", frow)
        form.addRow("Destination", drow)
        self.status = QLabel("Choose a run, formats and a destination.")
        self.status.setWordWrap(True)
        box = QGroupBox("Export the backbone")
        bl = QVBoxLayout(box)
        bl.addLayout(form)
        row = QHBoxLayout()
        row.addWidget(self.export_button)
        row.addStretch(1)
        bl.addLayout(row)
        bl.addWidget(self.status)
        self.files = QListWidget()
        self.snippet = QPlainTextEdit()
        self.snippet.setReadOnly(True)
        self.snippet.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.snippet.setPlainText(load_snippet("path/to/export"))
        layout = QVBoxLayout(self)
        title = QLabel("5 · Export")
        title.setObjectName("pageTitle")
        layout.addWidget(title)
        layout.addWidget(box)
        layout.addWidget(QLabel("Files written"))
        layout.addWidget(self.files, 1)
        layout.addWidget(QLabel("Load it in Python"))
        layout.addWidget(self.snippet, 1)

    def set_runs(self, runs: list[dict]) -> None:
        current = self.run.currentData()
        self.run.blockSignals(True)
        self.run.clear()
        for r in runs:
            if r["has_checkpoint"]:
                self.run.addItem(f"{r['name']} ({r['task']}, {r['arch']}, {r['status']})", r["path"])
                self.run.setItemData(self.run.count() - 1, r["path"], Qt.ItemDataRole.ToolTipRole)
        i = self.run.findData(current) if current else 0
        self.run.setCurrentIndex(max(i, 0))
        self.run.blockSignals(False)
        self._default_destination()

    def _default_destination(self, *_args) -> None:
        path = self.run.currentData()
        if path and (not self.destination.text() or self.destination.isModified() is False):
            self.destination.setText(str(default_export_dir(self.window_.workspace, path)))

    def choose_destination(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to", self.destination.text())
        if folder:
            self.destination.setText(folder)
            self.destination.setModified(True)

    def formats(self) -> list[str]:
        return [f for f, box in self.format_boxes.items() if box.isChecked()]

    @property
    def job(self) -> Job | None:
        return self.jobs.get("export")

    def start(self) -> None:
        if self.jobs.is_running("export"):
            return
        run, out = self.run.currentData(), self.destination.text().strip()
        if not run:
            self._on_failed("There is no finished run to export yet; pretrain one first (step 3).", "")
            return
        if not out:
            self._on_failed("Choose a destination folder.", "")
            return
        self.files.clear()
        self.status.setText("Exporting…")
        self.export_button.setEnabled(False)
        self.jobs.start("export", export_run, run, out, self.formats(), on_result=self._on_finished,
                        on_error=self._on_failed, on_ended=lambda: self.export_button.setEnabled(True),
                        replace=False)

    def _on_finished(self, paths: list) -> None:
        paths = [str(p) for p in paths]
        for p in paths:
            size = Path(p).stat().st_size if Path(p).is_file() else 0
            self.files.addItem(f"{p}  ({size_text(size)})")
        out = self.destination.text().strip()
        self.snippet.setPlainText(load_snippet(out))
        self.status.setText(f"Wrote {len(paths)} file(s) to {out}.")
        self.export_finished.emit(paths)

    def _on_failed(self, message: str, details: str) -> None:
        self.status.setText(f"<span style='color:#d62728'>{message}</span>")
        self.window_.log(details or message, "error")
        self.export_failed.emit(message)

    def shutdown(self) -> None:
        self.jobs.stop_all()
