"""Step 4, Fine-tune & compare: the comparison grid (initialisation x mode x layer) in the background,
live test-accuracy curves (one colour per initialisation) and a results table filled row by row."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from sslstudio.evaluation import compare
from sslstudio.gui.plots import PALETTE, LiveCurve, make_plot
from sslstudio.gui.workers import Job

__all__ = ["ComparePage"]


def _column(mode: str, layer: str) -> str:
    return f"head ({layer})" if mode == "head" else "all layers"


class ComparePage(QWidget):
    """Signals ``comparison_finished(rows)`` and ``comparison_failed(message)``."""

    comparison_finished = Signal(list)
    comparison_failed = Signal(str)

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.job: Job | None = None
        self.out_dir: Path | None = None
        self.rows: list[dict] = []
        self._curves: dict[tuple, LiveCurve] = {}
        self._colours: dict[str, str] = {}

        self.labelled = QLineEdit()
        self.labelled.setPlaceholderText("DIR/<class>/*.jpg or DIR/train/<class>/ (+ DIR/test/<class>/)")
        self.labelled.setToolTip("Folder of labelled images, one sub-folder per class")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.choose_labelled)
        lrow = QHBoxLayout()
        lrow.addWidget(self.labelled, 1)
        lrow.addWidget(browse)
        self.init_run = QComboBox()
        self.init_run.setToolTip("The pretrained run to compare (its backbone and image size are used)")
        self.baseline_random = QCheckBox("random")
        self.baseline_random.setChecked(True)
        self.baseline_random.setToolTip("A randomly initialised backbone")
        self.baseline_imagenet = QCheckBox("ImageNet")
        self.baseline_imagenet.setChecked(True)
        self.baseline_imagenet.setToolTip("torchvision's ImageNet weights (from the local cache or downloaded)")
        brow = QHBoxLayout()
        brow.addWidget(self.baseline_random)
        brow.addWidget(self.baseline_imagenet)
        brow.addStretch(1)
        self.mode_head = QCheckBox("head only (linear probe)")
        self.mode_head.setChecked(True)
        self.mode_head.setToolTip("Train a linear classifier on frozen features")
        self.mode_all = QCheckBox("all layers")
        self.mode_all.setChecked(True)
        self.mode_all.setToolTip("Fine-tune every layer")
        mrow = QHBoxLayout()
        mrow.addWidget(self.mode_head)
        mrow.addWidget(self.mode_all)
        mrow.addStretch(1)
        self.layers = QComboBox()
        self.layers.addItem("last stage", "last")
        self.layers.addItem("every stage", "all")
        self.layers.setToolTip("Which backbone stages the linear probes read")
        self.epochs_head = QSpinBox()
        self.epochs_head.setRange(1, 1000)
        self.epochs_head.setValue(10)
        self.epochs_head.setToolTip("Epochs of each head-only job")
        self.epochs_all = QSpinBox()
        self.epochs_all.setRange(1, 1000)
        self.epochs_all.setValue(10)
        self.epochs_all.setToolTip("Epochs of each all-layers job")
        form = QFormLayout()
        form.addRow("Labelled folder", lrow)
        form.addRow("Pretrained run", self.init_run)
        form.addRow("Baselines", brow)
        form.addRow("Modes", mrow)
        form.addRow("Probe layers", self.layers)
        form.addRow("Epochs (head)", self.epochs_head)
        form.addRow("Epochs (all)", self.epochs_all)
        self.run_button = QPushButton("Run comparison")
        self.run_button.setObjectName("primary")
        self.run_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        self.status = QLabel("Idle.")
        self.status.setWordWrap(True)
        box = QGroupBox("Comparison")
        bl = QVBoxLayout(box)
        bl.addLayout(form)
        bl.addLayout(buttons)
        bl.addWidget(self.status)

        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.plot = make_plot("Test accuracy per epoch", "epoch", "test accuracy")

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        title = QLabel("4 · Fine-tune & compare")
        title.setObjectName("pageTitle")
        ll.addWidget(title)
        ll.addWidget(box)
        ll.addWidget(QLabel("Results (test accuracy)"))
        ll.addWidget(self.table, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.plot)
        split.setSizes([560, 620])
        layout = QVBoxLayout(self)
        layout.addWidget(split)

        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.flush)
        self._timer.start()

    # -- inputs --------------------------------------------------------------------------------
    def choose_labelled(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the labelled folder", self.labelled.text())
        if folder:
            self.labelled.setText(folder)

    def set_runs(self, runs: list[dict]) -> None:
        current = self.init_run.currentData()
        self.init_run.clear()
        self.init_run.addItem("(none: baselines only)", "")
        for r in runs:
            if r["has_checkpoint"]:
                self.init_run.addItem(f"{r['name']} ({r['task']}, {r['arch']})", r["path"])
        i = self.init_run.findData(current) if current else (1 if self.init_run.count() > 1 else 0)
        self.init_run.setCurrentIndex(max(i, 0))

    def is_running(self) -> bool:
        return self.job is not None and self.job.is_running()

    # -- running -------------------------------------------------------------------------------
    def start(self, out: str | None = None) -> None:
        if self.is_running():
            return
        labelled = self.labelled.text().strip()
        if not labelled:
            self.status.setText("Choose a labelled folder first.")
            self.comparison_failed.emit("no labelled folder")
            return
        inits = [self.init_run.currentData()] if self.init_run.currentData() else []
        baselines = [b for b, box in (("random", self.baseline_random), ("imagenet", self.baseline_imagenet))
                     if box.isChecked()]
        modes = [m for m, box in (("head", self.mode_head), ("all", self.mode_all)) if box.isChecked()]
        pre = self.window_.pretrain_page
        self.out_dir = Path(out) if out else (self.window_.workspace / "compare" /
                                              datetime.now().strftime("%Y%m%d-%H%M%S"))
        self.rows = []
        self.table.clear()
        self.table.setRowCount(0)
        self.table.setColumnCount(0)
        for c in self._curves.values():
            self.plot.getPlotItem().removeItem(c.item)
        self._curves.clear()
        self._colours.clear()
        arch = None if inits else pre.arch.currentText()
        image_size = None if inits else pre.image_size()
        job = Job(compare, labelled, str(self.out_dir), inits, baselines=baselines, modes=modes,
                  layers=self.layers.currentData(), arch=arch, image_size=image_size,
                  epochs_head=self.epochs_head.value(), epochs_all=self.epochs_all.value(),
                  device=pre.device.currentData(), seed=pre.seed.value(), parent=self, name="sslstudio-compare")
        job.worker.event.connect(self.on_event)
        job.worker.finished.connect(self._on_finished)
        job.worker.failed.connect(self._on_failed)
        job.ended.connect(self._on_ended)
        self.job = job
        self.window_.track(job)
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.setText("Running…")
        job.start()

    def stop(self) -> None:
        if self.is_running():
            self.job.cancel()
            self.stop_button.setEnabled(False)
            self.status.setText("Stopping…")

    def on_event(self, ev) -> None:
        if ev.kind == "epoch" and ev.extra:
            key = (ev.extra.get("init"), ev.extra.get("mode"), ev.extra.get("layer"))
            curve = self._curves.get(key)
            if curve is None:
                init = str(key[0])
                colour = self._colours.setdefault(init, PALETTE[len(self._colours) % len(PALETTE)])
                curve = LiveCurve(self.plot.getPlotItem(), f"{Path(init).name} / {_column(key[1], key[2])}", colour,
                                  symbol="o" if key[1] == "head" else "t")
                if key[1] == "all":
                    pen = curve.item.opts["pen"]
                    pen.setStyle(Qt.PenStyle.DashLine)
                    curve.item.setPen(pen)
                self._curves[key] = curve
            curve.append(ev.epoch + 1, ev.val_metric)
            self.status.setText(f"{Path(str(key[0])).name} / {_column(key[1], key[2])}: epoch {ev.epoch + 1}/"
                                f"{ev.epochs}, test accuracy {ev.val_metric:.3f}" if ev.val_metric is not None
                                else f"epoch {ev.epoch + 1}/{ev.epochs}")
        elif ev.kind == "log":
            self.window_.log(ev.message, ev.level)
            self._read_results()

    def flush(self) -> None:
        for c in self._curves.values():
            c.flush()

    def _read_results(self) -> None:
        if self.out_dir is None:
            return
        path = self.out_dir / "results.json"
        if not path.is_file():
            return
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        rows = data.get("rows", data) if isinstance(data, dict) else data
        if isinstance(rows, list):
            self.set_rows(rows)

    def set_rows(self, rows: list[dict]) -> None:
        """Fill the table: rows = initialisations, columns = head (layer) probes and all layers."""
        self.rows = list(rows)
        inits, cols = [], []
        for r in rows:
            label = r.get("init_label") or r.get("init")
            if label not in inits:
                inits.append(label)
            col = _column(r.get("mode"), r.get("layer"))
            if col not in cols:
                cols.append(col)
        cols.sort(key=lambda c: (c == "all layers", c))
        self.table.setRowCount(len(inits))
        self.table.setColumnCount(len(cols))
        self.table.setVerticalHeaderLabels(inits)
        self.table.setHorizontalHeaderLabels(cols)
        for r in rows:
            i = inits.index(r.get("init_label") or r.get("init"))
            j = cols.index(_column(r.get("mode"), r.get("layer")))
            acc, err = r.get("test_accuracy"), r.get("error")
            if acc is not None:
                item = QTableWidgetItem(f"{100 * acc:.1f}%")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if err:
                    item.setToolTip(err)
            else:
                item = QTableWidgetItem(f"unavailable: {err}" if err else "—")
                item.setToolTip(err or "")
            self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()

    def _on_finished(self, rows: list) -> None:
        self.flush()
        self.set_rows(rows)
        done = sum(1 for r in rows if r.get("test_accuracy") is not None)
        self.status.setText(f"Done: {done} of {len(rows)} job(s) ran; results in {self.out_dir}.")
        self.comparison_finished.emit(rows)

    def _on_failed(self, message: str, details: str) -> None:
        self.status.setText(f"<span style='color:#d62728'>Failed: {message}</span>")
        self.window_.log(details or message, "error")
        self.window_.show_error("Comparison failed", message)
        self.comparison_failed.emit(message)

    def _on_ended(self) -> None:
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def shutdown(self) -> None:
        self._timer.stop()
        if self.job is not None:
            self.job.stop()
