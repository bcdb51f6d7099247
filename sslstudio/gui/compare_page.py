"""Step 4, Fine-tune & compare: the comparison grid (initialisation x mode x stage) in the background,
live test-accuracy curves (one colour per initialisation), a results table filled row by row from the
engine's row events, and a per-stage accuracy chart of the head-only probes."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QPushButton, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from sslstudio.evaluation import compare
from sslstudio.gui.plots import PALETTE, LiveCurve, apply_palette, make_plot
from sslstudio.gui.workers import Job

__all__ = ["ComparePage", "stage_names", "table_text", "write_table"]

ALL_LAYERS = "all layers"


def _column(mode: str, layer: str) -> str:
    return f"head ({layer})" if mode == "head" else ALL_LAYERS


def _short_label(init: str) -> str:
    return init if init in ("random", "imagenet") else Path(init).name


def leave_headroom(item, ys, entries: int) -> None:
    """Set the y range of ``item`` so the data leaves room at the top for a legend of ``entries`` lines."""
    import math

    ys = [float(v) for v in ys if v is not None and math.isfinite(v)]
    if not ys:
        return
    lo, hi = min(ys), max(ys)
    span = max(hi - lo, abs(hi) * 0.1, 1e-3)
    top = hi + span * (0.15 + 0.14 * max(entries, 1))
    item.setYRange(lo - 0.08 * span, top, padding=0)


def stage_names(arch: str) -> list[str]:
    """The stages a head-only probe can read for ``arch`` (without building the network)."""
    from sslstudio.models import backbones

    try:
        tv = backbones.resolve_arch(arch)
    except Exception:  # noqa: BLE001 - unknown arch: no stages to offer
        return []
    if tv.startswith("resnet"):
        return list(backbones._RESNET_STAGES)
    if tv == "alexnet":
        return list(backbones._ALEXNET_STAGE_END)
    if tv == "vgg16":
        return list(backbones._VGG16_STAGE_END)
    return backbones.build_backbone(arch).stage_names()


def table_grid(rows: list[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    """Initialisation labels, column names (head probes by stage, then all layers) and cells."""
    inits, cols, cells = [], [], {}
    for r in rows:
        label = r.get("init_label") or r.get("init")
        if label not in inits:
            inits.append(label)
        col = _column(r.get("mode"), r.get("layer"))
        if col not in cols:
            cols.append(col)
        cells[(label, col)] = r
    cols.sort(key=lambda c: c == ALL_LAYERS)  # stable: stages keep their order, all layers last
    return inits, cols, cells


def _cell_text(row: dict | None, percent_sign: bool = True) -> str:
    if row is None:
        return ""
    if row.get("test_accuracy") is not None:
        return f"{100 * row['test_accuracy']:.1f}" + ("%" if percent_sign else "")
    return f"unavailable: {row['error']}" if row.get("error") else "—"


def table_text(rows: list[dict], sep: str = "\t") -> str:
    """The results table as text: a header line, then one line per initialisation (accuracy in %)."""
    inits, cols, cells = table_grid(rows)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator="\n")
    writer.writerow(["initialisation"] + cols)
    for init in inits:
        writer.writerow([init] + [_cell_text(cells.get((init, c)), percent_sign=False) for c in cols])
    return out.getvalue()


def table_markdown(rows: list[dict]) -> str:
    inits, cols, cells = table_grid(rows)
    lines = ["| initialisation | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for init in inits:
        texts = [_cell_text(cells.get((init, c)), percent_sign=False).replace("|", "/") for c in cols]
        lines.append(f"| {init} | " + " | ".join(texts) + " |")
    return "Test top-1 accuracy (%).\n\n" + "\n".join(lines) + "\n"


def write_table(rows: list[dict], path: str | Path) -> Path:
    """Write the results table to ``path``: Markdown for ``.md``, otherwise CSV."""
    path = Path(path)
    text = table_markdown(rows) if path.suffix.lower() in (".md", ".markdown") else table_text(rows, sep=",")
    path.write_text(text, encoding="utf-8")
    return path


def latest_results_for(workspace: Path, run: str) -> tuple[Path, list[dict]] | None:
    """The newest comparison under ``<workspace>/compare`` that used ``run``: (folder, rows)."""
    root = Path(workspace) / "compare"
    if not root.is_dir():
        return None
    target = Path(run).resolve()
    folders = sorted((p for p in root.iterdir() if (p / "results.json").is_file()),
                     key=lambda p: (p / "results.json").stat().st_mtime, reverse=True)
    for folder in folders:
        try:
            rows = json.loads((folder / "results.json").read_text())
        except (OSError, ValueError):
            continue
        rows = rows.get("rows", []) if isinstance(rows, dict) else rows
        for r in rows if isinstance(rows, list) else []:
            init = r.get("init")
            if init not in (None, "random", "imagenet") and Path(init).resolve() == target:
                return folder, rows
    return None


class ComparePage(QWidget):
    """Signals ``comparison_finished(rows)``, ``comparison_failed(message)`` and ``row_added(row)``."""

    comparison_finished = Signal(list)
    comparison_failed = Signal(str)
    row_added = Signal(dict)

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.job: Job | None = None
        self.out_dir: Path | None = None
        self.rows: list[dict] = []
        self.columns: list[str] = []  # the table's columns: head (stage) ..., all layers
        self._curves: dict[tuple, LiveCurve] = {}
        self._colours: dict[str, str] = {}
        self._runs: list[dict] = []

        self.labelled = QLineEdit()
        self.labelled.setPlaceholderText("DIR/<class>/*.jpg or DIR/train/<class>/ (+ DIR/test/<class>/)")
        self.labelled.setToolTip("Folder of labelled images, one sub-folder per class")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.choose_labelled)
        lrow = QHBoxLayout()
        lrow.addWidget(self.labelled, 1)
        lrow.addWidget(browse)
        self.test_folder = QLineEdit()
        self.test_folder.setPlaceholderText("optional: DIR/<class>/ (default: DIR/test/ or a 20% split)")
        self.test_folder.setToolTip("A separate folder of labelled test images, one sub-folder per class")
        tbrowse = QPushButton("Browse…")
        tbrowse.clicked.connect(self.choose_test)
        trow = QHBoxLayout()
        trow.addWidget(self.test_folder, 1)
        trow.addWidget(tbrowse)

        self.budget_kind = QComboBox()
        self.budget_kind.addItem("all labels", "all")
        self.budget_kind.addItem("images per class", "per_class")
        self.budget_kind.addItem("share of each class", "fraction")
        self.budget_kind.setToolTip("How many labelled training images each class contributes")
        self.budget_kind.setMinimumContentsLength(16)
        self.per_class = QSpinBox()
        self.per_class.setRange(1, 100_000)
        self.per_class.setValue(20)
        self.per_class.setSuffix(" per class")
        self.per_class.setToolTip("A seeded subset of N training images per class")
        self.fraction = QDoubleSpinBox()
        self.fraction.setRange(0.01, 1.0)
        self.fraction.setSingleStep(0.05)
        self.fraction.setDecimals(2)
        self.fraction.setValue(0.25)
        self.fraction.setToolTip("A seeded share of each class's training images (at least one)")
        self.budget_kind.currentIndexChanged.connect(self._update_budget)
        brow = QHBoxLayout()
        brow.addWidget(self.budget_kind)
        brow.addWidget(self.per_class)
        brow.addWidget(self.fraction)
        brow.addStretch(1)

        self.inits = QListWidget()
        self.inits.setToolTip("Initialisations to compare: finished runs of the workspace, ImageNet and random")
        self.inits.itemChanged.connect(self._on_inits_changed)
        self.inits.setMinimumHeight(60)
        self.inits.setMaximumHeight(84)
        for label, key, tip in (("ImageNet", "imagenet", "torchvision's ImageNet weights (local cache)"),
                                ("random", "random", "A randomly initialised backbone")):
            self._add_init_item(label, key, tip, checked=True)

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
        self.stages = QListWidget()
        self.stages.setFlow(QListWidget.Flow.LeftToRight)
        self.stages.setWrapping(True)
        self.stages.setMaximumHeight(40)
        self.stages.setToolTip("The backbone stages the head-only probes read (each one is a column)")
        self.stages_last = QPushButton("last")
        self.stages_last.setToolTip("Probe the last stage only")
        self.stages_last.clicked.connect(lambda: self.set_layers("last"))
        self.stages_all = QPushButton("all")
        self.stages_all.setToolTip("Probe every stage")
        self.stages_all.clicked.connect(lambda: self.set_layers("all"))
        srow = QHBoxLayout()
        srow.addWidget(self.stages, 1)
        sb = QVBoxLayout()
        sb.addWidget(self.stages_last)
        sb.addWidget(self.stages_all)
        srow.addLayout(sb)
        self.epochs_head = QSpinBox()
        self.epochs_head.setRange(1, 1000)
        self.epochs_head.setValue(10)
        self.epochs_head.setToolTip("Epochs of each head-only job")
        self.epochs_all = QSpinBox()
        self.epochs_all.setRange(1, 1000)
        self.epochs_all.setValue(10)
        self.epochs_all.setToolTip("Epochs of each all-layers job")
        erow = QHBoxLayout()
        erow.addWidget(QLabel("head"))
        erow.addWidget(self.epochs_head)
        erow.addWidget(QLabel("all layers"))
        erow.addWidget(self.epochs_all)
        erow.addStretch(1)
        form = QFormLayout()
        form.addRow("Labelled folder", lrow)
        form.addRow("Test folder", trow)
        form.addRow("Label budget", brow)
        form.addRow("Initialisations", self.inits)
        form.addRow("Modes", mrow)
        form.addRow("Probe stages", srow)
        form.addRow("Epochs", erow)
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
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.verticalHeader().setMaximumWidth(170)
        self.table.verticalHeader().setTextElideMode(Qt.TextElideMode.ElideMiddle)
        copy_shortcut = QShortcut(QKeySequence.StandardKey.Copy, self.table)
        copy_shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        copy_shortcut.activated.connect(self.copy_table)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the table, tab-separated (Ctrl+C in the table)")
        self.copy_button.clicked.connect(self.copy_table)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save the table as CSV or Markdown")
        self.save_button.clicked.connect(self.save_table)
        trow2 = QHBoxLayout()
        trow2.addWidget(QLabel("Results (test accuracy)"))
        trow2.addStretch(1)
        trow2.addWidget(self.copy_button)
        trow2.addWidget(self.save_button)
        self.copy_button.setEnabled(False)
        self.save_button.setEnabled(False)

        self.plot = make_plot("Test accuracy per epoch", "epoch", "test accuracy", integer_x=True,
                              legend="top-right")
        self.stage_plot = make_plot("Head-only accuracy per stage", "stage", "test accuracy", integer_x=True,
                                    legend="top-left")
        self._stage_axis = self.stage_plot.getPlotItem().getAxis("bottom")
        self._stage_curves: dict[str, pg.PlotDataItem] = {}

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        title = QLabel("4 · Fine-tune & compare")
        title.setObjectName("pageTitle")
        ll.addWidget(title)
        ll.addWidget(box)
        ll.addLayout(trow2)
        ll.addWidget(self.table, 1)
        plots = QSplitter(Qt.Orientation.Vertical)
        plots.addWidget(self.plot)
        plots.addWidget(self.stage_plot)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(plots)
        split.setSizes([660, 500])
        layout = QVBoxLayout(self)
        layout.addWidget(split)

        self._update_budget()
        self.set_stage_choices(stage_names("resnet18"))
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.flush)
        self._timer.start()

    # -- inputs --------------------------------------------------------------------------------
    def choose_labelled(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the labelled folder", self.labelled.text())
        if folder:
            self.labelled.setText(folder)

    def choose_test(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the test folder",
                                                  self.test_folder.text() or self.labelled.text())
        if folder:
            self.test_folder.setText(folder)

    def _update_budget(self) -> None:
        kind = self.budget_kind.currentData()
        self.per_class.setVisible(kind == "per_class")
        self.fraction.setVisible(kind == "fraction")

    def budget(self) -> dict:
        """``{"per_class": N}``, ``{"fraction": f}`` or ``{}`` (every label)."""
        kind = self.budget_kind.currentData()
        if kind == "per_class":
            return {"per_class": self.per_class.value()}
        if kind == "fraction":
            return {"fraction": float(self.fraction.value())}
        return {}

    def set_budget(self, per_class: int | None = None, fraction: float | None = None) -> None:
        if per_class is not None:
            self.budget_kind.setCurrentIndex(self.budget_kind.findData("per_class"))
            self.per_class.setValue(int(per_class))
        elif fraction is not None:
            self.budget_kind.setCurrentIndex(self.budget_kind.findData("fraction"))
            self.fraction.setValue(float(fraction))
        else:
            self.budget_kind.setCurrentIndex(self.budget_kind.findData("all"))

    def _add_init_item(self, label: str, key: str, tip: str, checked: bool, row: int | None = None) -> None:
        item = QListWidgetItem(label)
        item.setData(Qt.ItemDataRole.UserRole, key)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        item.setToolTip(tip)
        self.inits.blockSignals(True)
        if row is None:
            self.inits.addItem(item)
        else:
            self.inits.insertItem(row, item)
        self.inits.blockSignals(False)

    # -- persistence ---------------------------------------------------------------------------
    def values(self) -> dict:
        """The page's settings, for QSettings (initialisations and stages depend on the runs: not kept)."""
        return {"labelled": self.labelled.text(), "test": self.test_folder.text(),
                "budget_kind": self.budget_kind.currentIndex(), "per_class": self.per_class.value(),
                "fraction": self.fraction.value(), "mode_head": self.mode_head.isChecked(),
                "mode_all": self.mode_all.isChecked(), "epochs_head": self.epochs_head.value(),
                "epochs_all": self.epochs_all.value()}

    def set_values(self, values: dict) -> None:
        setters = {"labelled": self.labelled.setText, "test": self.test_folder.setText,
                   "budget_kind": self.budget_kind.setCurrentIndex, "per_class": self.per_class.setValue,
                   "fraction": self.fraction.setValue, "mode_head": self.mode_head.setChecked,
                   "mode_all": self.mode_all.setChecked, "epochs_head": self.epochs_head.setValue,
                   "epochs_all": self.epochs_all.setValue}
        for key, value in values.items():
            if key in setters:
                setters[key](value)

    def set_runs(self, runs: list[dict]) -> None:
        """Offer every finished run of the workspace (the newest checked by default) plus the baselines."""
        self._runs = list(runs)
        previous = {self.inits.item(i).data(Qt.ItemDataRole.UserRole): self.inits.item(i).checkState()
                    for i in range(self.inits.count())}
        baselines = {k: previous.get(k, Qt.CheckState.Checked) for k in ("imagenet", "random")}
        self.inits.blockSignals(True)
        self.inits.clear()
        finished = [r for r in runs if r["has_checkpoint"] and r["status"] == "finished"]
        for k, r in enumerate(finished):
            if r["path"] in previous:
                checked = previous[r["path"]] == Qt.CheckState.Checked
            else:
                checked = k == 0 and not any(previous.get(x["path"]) == Qt.CheckState.Checked for x in finished)
            self._add_init_item(f"{r['name']}  ({r['task']}, {r['arch']})", r["path"], r["path"], checked)
        self._add_init_item("ImageNet", "imagenet", "torchvision's ImageNet weights (local cache)",
                            baselines["imagenet"] == Qt.CheckState.Checked)
        self._add_init_item("random", "random", "A randomly initialised backbone",
                            baselines["random"] == Qt.CheckState.Checked)
        self.inits.blockSignals(False)
        self._on_inits_changed()

    def checked_inits(self) -> list[str]:
        return [self.inits.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.inits.count())
                if self.inits.item(i).checkState() == Qt.CheckState.Checked]

    def set_checked_inits(self, keys: list[str]) -> None:
        keys = [str(k) for k in keys]
        self.inits.blockSignals(True)
        for i in range(self.inits.count()):
            item = self.inits.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.data(Qt.ItemDataRole.UserRole) in keys
                               else Qt.CheckState.Unchecked)
        self.inits.blockSignals(False)
        self._on_inits_changed()

    def arch(self) -> str:
        """The backbone compared: that of the first checked run, else the pretraining page's."""
        by_path = {r["path"]: r for r in self._runs}
        for key in self.checked_inits():
            if key in by_path and by_path[key].get("arch") not in (None, "?"):
                return by_path[key]["arch"]
        return self.window_.pretrain_page.arch.currentText()

    def _on_inits_changed(self, *_args) -> None:
        stages = stage_names(self.arch())
        if stages != self._stage_list():
            self.set_stage_choices(stages)

    def _stage_list(self) -> list[str]:
        return [self.stages.item(i).text() for i in range(self.stages.count())]

    def set_stage_choices(self, stages: list[str]) -> None:
        checked = set(self.layers())
        self.stages.clear()
        for k, s in enumerate(stages):
            item = QListWidgetItem(s)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            on = s in checked if checked & set(stages) else k == len(stages) - 1
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            self.stages.addItem(item)

    def layers(self) -> list[str]:
        """The checked probe stages (what ``compare(layers=...)`` gets)."""
        return [self.stages.item(i).text() for i in range(self.stages.count())
                if self.stages.item(i).checkState() == Qt.CheckState.Checked]

    def set_layers(self, layers: str | list[str]) -> None:
        """``"last"``, ``"all"`` or a list of stage names."""
        names = self._stage_list()
        if layers == "last":
            keep = set(names[-1:])
        elif layers == "all":
            keep = set(names)
        else:
            keep = set(layers)
        for i in range(self.stages.count()):
            item = self.stages.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in keep else Qt.CheckState.Unchecked)

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
        keys = self.checked_inits()
        inits = [k for k in keys if k not in ("imagenet", "random")]
        baselines = [k for k in ("imagenet", "random") if k in keys]
        modes = [m for m, box in (("head", self.mode_head), ("all", self.mode_all)) if box.isChecked()]
        layers = self.layers()
        if not keys or not modes or ("head" in modes and not layers):
            self.status.setText("Check at least one initialisation, one mode and (for head only) one stage.")
            self.comparison_failed.emit("nothing to compare")
            return
        pre = self.window_.pretrain_page
        self.out_dir = Path(out) if out else (self.window_.workspace / "compare" /
                                              datetime.now().strftime("%Y%m%d-%H%M%S"))
        self.clear_results()
        arch = self.arch()
        image_size = None if inits else pre.image_size()
        test = self.test_folder.text().strip() or None
        job = Job(compare, labelled, str(self.out_dir), inits, test=test, baselines=baselines, modes=modes,
                  layers=layers, arch=arch, image_size=image_size, **self.budget(),
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

    def clear_results(self) -> None:
        self.rows = []
        self.table.clear()
        self.table.setRowCount(0)
        self.table.setColumnCount(0)
        for c in self._curves.values():
            self.plot.getPlotItem().removeItem(c.item)
        self._curves.clear()
        self._colours.clear()
        self._update_stage_plot()
        self.copy_button.setEnabled(False)
        self.save_button.setEnabled(False)

    def _colour(self, init: str) -> str:
        return self._colours.setdefault(str(init), PALETTE[len(self._colours) % len(PALETTE)])

    def on_event(self, ev) -> None:
        if ev.kind == "epoch" and ev.extra:
            key = (ev.extra.get("init"), ev.extra.get("mode"), ev.extra.get("layer"))
            curve = self._curves.get(key)
            if curve is None:
                init = str(key[0])
                first = not any(k[0] == key[0] for k in self._curves)
                # one legend entry per initialisation (its colour); the stages are in the chart below
                curve = LiveCurve(self.plot.getPlotItem(), _short_label(init) if first else None,
                                  self._colour(init), symbol="o" if key[1] == "head" else "t")
                if key[1] == "all":
                    pen = curve.item.opts["pen"]
                    pen.setStyle(Qt.PenStyle.DashLine)
                    curve.item.setPen(pen)
                self._curves[key] = curve
            curve.append(ev.epoch + 1, ev.val_metric)
            self.status.setText(f"{Path(str(key[0])).name} / {_column(key[1], key[2])}: epoch {ev.epoch + 1}/"
                                f"{ev.epochs}, test accuracy {ev.val_metric:.3f}" if ev.val_metric is not None
                                else f"epoch {ev.epoch + 1}/{ev.epochs}")
        elif ev.kind == "row":
            self.add_row(ev.row)
            self.status.setText(f"{ev.index} of {ev.total} job(s) done.")
        elif ev.kind == "log":
            self.window_.log(ev.message, ev.level)

    def add_row(self, row: dict) -> None:
        """Put one finished row into the table and the per-stage chart."""
        self.rows.append(dict(row))
        self.set_rows(self.rows)
        self.row_added.emit(dict(row))

    def flush(self) -> None:
        dirty = any(c._dirty for c in self._curves.values())
        for c in self._curves.values():
            c.flush()
        if dirty:
            ys = [v for c in self._curves.values() for v in c.buffer.y]
            leave_headroom(self.plot.getPlotItem(), ys, len(self._colours))

    def set_rows(self, rows: list[dict]) -> None:
        """Fill the table: rows = initialisations, columns = head (stage) probes and all layers."""
        self.rows = list(rows)
        inits, cols, cells = table_grid(self.rows)
        self.columns = cols
        self.table.clearSpans()
        self.table.clearContents()
        self.table.setRowCount(len(inits))
        self.table.setColumnCount(len(cols))
        self.table.setVerticalHeaderLabels(inits)
        # two-line headers keep the columns narrow: "head" over the stage
        self.table.setHorizontalHeaderLabels([c[len("head ("):-1].join(("head\n", "")) if c != ALL_LAYERS
                                              else "all\nlayers" for c in cols])
        for j, c in enumerate(cols):
            self.table.horizontalHeaderItem(j).setToolTip(c)
        spans = []
        for i, label in enumerate(inits):  # a row unavailable everywhere, for one reason: one wide cell
            row_cells = [r for r in (cells.get((label, c)) for c in cols) if r is not None]
            errors = {r.get("error") for r in row_cells}
            if (len(cols) > 1 and row_cells and all(r.get("test_accuracy") is None for r in row_cells)
                    and len(errors) == 1 and None not in errors):
                spans.append((i, row_cells[0]))
                for c in cols:
                    cells.pop((label, c), None)
        for (label, col), r in cells.items():
            i, j = inits.index(label), cols.index(col)
            acc, err = r.get("test_accuracy"), r.get("error")
            item = QTableWidgetItem(_cell_text(r))
            if acc is not None:
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if err:
                    item.setToolTip(err)
            else:
                item.setToolTip(err or "")
                item.setForeground(self.palette().color(self.palette().ColorRole.PlaceholderText))
            self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        for j in range(self.table.columnCount()):
            self.table.setColumnWidth(j, min(max(self.table.columnWidth(j), 62), 130))
        for i, r in spans:  # after the widths: a wide cell must not widen its first column
            item = QTableWidgetItem(_cell_text(r))
            item.setToolTip(r.get("error") or "")
            item.setForeground(self.palette().color(self.palette().ColorRole.PlaceholderText))
            self.table.setItem(i, 0, item)
            self.table.setSpan(i, 0, 1, len(cols))
        self.table.resizeRowsToContents()
        for i, label in enumerate(inits):
            self.table.verticalHeaderItem(i).setToolTip(label)
        self.copy_button.setEnabled(bool(self.rows))
        self.save_button.setEnabled(bool(self.rows))
        self._update_stage_plot()

    # -- per-stage chart -----------------------------------------------------------------------
    def stage_series(self) -> tuple[list[str], dict[str, list[float | None]]]:
        """Stages (x) and, per initialisation, the head-only test accuracy at each stage."""
        stages = []
        for r in self.rows:
            if r.get("mode") == "head" and r.get("layer") not in stages:
                stages.append(r.get("layer"))
        order = self._stage_list()
        stages.sort(key=lambda s: order.index(s) if s in order else len(order))
        series: dict[str, list[float | None]] = {}
        for r in self.rows:
            if r.get("mode") != "head":
                continue
            label = r.get("init_label") or r.get("init")
            values = series.setdefault(label, [None] * len(stages))
            values[stages.index(r.get("layer"))] = r.get("test_accuracy")
        return stages, series

    def _update_stage_plot(self) -> None:
        item = self.stage_plot.getPlotItem()
        for curve in self._stage_curves.values():
            item.removeItem(curve)
        self._stage_curves.clear()
        if item.legend is not None:
            item.legend.clear()
        stages, series = self.stage_series()
        self._stage_axis.set_labels({k + 1: s for k, s in enumerate(stages)})
        by_label = {(r.get("init_label") or r.get("init")): str(r.get("init")) for r in self.rows}
        for label, values in series.items():
            ys = [float("nan") if v is None else 100 * v for v in values]
            if all(v is None for v in values):
                continue  # unavailable everywhere: the table says why
            colour = self._colour(by_label.get(label, label))
            curve = item.plot(list(range(1, len(stages) + 1)), ys, pen=pg.mkPen(colour, width=2), name=label,
                              symbol="o", symbolSize=8, symbolBrush=colour, symbolPen=None, connect="finite")
            self._stage_curves[label] = curve
        if stages:
            item.setXRange(0.7, len(stages) + 0.3, padding=0)
        leave_headroom(item, [100 * v for vals in series.values() for v in vals if v is not None],
                       len(self._stage_curves))
        item.setLabel("left", "test accuracy (%)")
        apply_palette(self.stage_plot)

    # -- copy / save ---------------------------------------------------------------------------
    def copy_table(self) -> str:
        """Copy the results table to the clipboard, tab-separated; returns the text."""
        text = table_text(self.rows)
        QGuiApplication.clipboard().setText(text)
        self.window_.statusBar().showMessage("Results table copied (tab-separated).", 5000)
        return text

    def save_table(self, path: str | None = None) -> Path | None:
        """Save the table as CSV or Markdown (asks for the file when ``path`` is None)."""
        if path is None:
            start = str((self.out_dir or self.window_.workspace) / "results.csv")
            path, _ = QFileDialog.getSaveFileName(self, "Save the results table", start,
                                                  "CSV (*.csv);;Markdown (*.md)")
            if not path:
                return None
        written = write_table(self.rows, path)
        self.window_.statusBar().showMessage(f"Saved {written}", 5000)
        return written

    def show_results_for_run(self, run: str) -> str | None:
        """Show the newest comparison of the workspace that used ``run``; returns its folder."""
        if self.is_running():
            return None
        found = latest_results_for(self.window_.workspace, run)
        if found is None:
            return None
        folder, rows = found
        self.clear_results()
        self.out_dir = folder
        self.set_rows(rows)
        self.status.setText(f"Results of {folder.name} (a comparison that used {Path(run).name}).")
        return str(folder)

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
