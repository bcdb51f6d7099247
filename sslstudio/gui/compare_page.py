"""Step 4, Fine-tune & compare: the comparison (initialisation x mode x stage x label budget) in the
background, with progress and ETA; the notes the engine writes above a paper-style results table
(``51.3 ± 0.8`` over repeats, each initialisation's verdict against random init); tabs for the
label-efficiency curve, the per-stage chart, the per-epoch curves of all-layer fine-tuning and the
per-class view (per-class accuracy and confusion matrix of the selected cell).

Before a comparison the page checks whether ImageNet weights are on this machine for the compared
architecture (torchvision's file in the torch hub cache, or a weights file the user chose with
"Choose weights file…"); without them the ImageNet row is unchecked and says why. Every accuracy
chart draws the chance level (1 / number of classes) as a labelled dashed line.

The tables and files are the engine's: "Save…" copies the ``results.md`` / ``results.csv`` /
``results.json`` the engine wrote; this page only formats what it shows.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QFrame, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QPushButton, QScrollArea, QSizePolicy, QSpinBox, QSplitter, QTableWidget,
                               QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from sslstudio.engine.durations import in_words
from sslstudio.evaluation.compare import CompareSettings
from sslstudio.evaluation.report import curve_series, latest_results_for, normalise_result, stage_series
from sslstudio.evaluation.table import (budget_order, budget_text, cell_details, cell_text, mode_label,
                                        results_table, row_key, row_label)
from sslstudio.gui.panels import (HoldsSelection, add_init_item, check_only, checked_states, init_list, run_arch,
                                  run_choices, run_controls, settings_column, settings_form, split_page)
from sslstudio.gui.plots import (PALETTE, IntegerAxis, add_band, add_chance_line, apply_palette, make_plot,
                                 remove_band, set_tick_labels, styled_pen)
from sslstudio.gui.workers import Job, JobRunner
from sslstudio.settings import spin_range

__all__ = ["ComparePage", "belongs", "budgets_of", "describe_selection", "labelled_class_count", "parse_curve",
           "selection_of_result", "stage_names"]

DEFAULT_CURVE = "1, 5, 10, 20, 50, all"
#: The label-efficiency selector offers the probes first (the table's columns start with kNN).
CURVE_MODES = ("head", "knn", "all")
#: The QSettings key of the weights file chosen for the ImageNet baseline.
IMAGENET_WEIGHTS_KEY = "compare/imagenet_weights"
#: Verdict -> (tint of the cell, sign shown): tints are light enough for dark and light palettes.
VERDICT_TINT = {"ahead": "#2ca02c", "behind": "#d62728"}


# -- pure helpers (no widgets) ------------------------------------------------------------------
def compare(*args, **kwargs):
    """The engine's ``sslstudio.evaluation.compare`` (imported when a comparison starts)."""
    from sslstudio.evaluation import compare as engine_compare

    return engine_compare(*args, **kwargs)


def leave_headroom(item, ys, entries: int) -> None:
    """Set the y range of ``item`` so the data leaves room at the top for a legend of ``entries`` lines."""
    ys = [float(v) for v in ys if v is not None and math.isfinite(v)]
    if not ys:
        return
    lo, hi = min(ys), max(ys)
    span = max(hi - lo, abs(hi) * 0.1, 1e-3)
    top = hi + span * (0.15 + 0.14 * max(entries, 1))
    item.setYRange(lo - 0.08 * span, top, padding=0)


def stage_names(arch: str) -> list[str]:
    """The stages a frozen-feature probe can read for ``arch`` (without building the network)."""
    from sslstudio.models import arch_stages, resolve_arch

    try:
        resolve_arch(arch)
    except Exception:  # noqa: BLE001 - unknown arch: no stages to offer
        return []
    return arch_stages(arch)


def labelled_class_count(folder: str) -> int | None:
    """The number of class folders of a labelled folder (``DIR/train/<class>`` or ``DIR/<class>``, the
    engine's layouts), read from the folder names alone; None when it cannot be read. The engine's
    ``meta["classes"]`` replaces it once a comparison has results."""
    if not folder:
        return None
    root = Path(folder)
    root = root / "train" if (root / "train").is_dir() else root
    try:
        n = sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return None
    return n or None


def weights_file_stamp(path: str) -> tuple:
    """What tells a chosen weights file apart from its next version: ``(size, mtime)`` (``()`` if absent)."""
    try:
        st = Path(path).stat()
    except OSError:
        return ()
    return (st.st_size, st.st_mtime_ns)


def parse_curve(text: str) -> list[int | str]:
    """``"1, 5, 10, all"`` -> ``[1, 5, 10, "all"]`` (the engine's rule); raises ValueError."""
    from sslstudio.errors import ConfigError
    from sslstudio.evaluation.compare import parse_budgets

    try:
        return parse_budgets(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _fmt_seconds(s: float | None) -> str:
    return in_words(s)


def _tint(colour: str, alpha: int) -> QColor:
    c = QColor(colour)
    c.setAlpha(alpha)
    return c


# -- what a comparison compared (its "selection"): the page's checks, or a result's meta ----------------
def _init_key(init) -> str:
    """An initialisation as a selection names it: ``random`` / ``imagenet``, else the resolved path."""
    init = str(init)
    return init if init in ("random", "imagenet") else str(Path(init).resolve())


def _budget_value(text: str):
    """A budget as a selection's text (``"20"``, ``"25%"``, ``"all"``) -> the engine's value."""
    return int(text) if str(text).isdigit() else str(text)


def budgets_of(budget: dict) -> list[str]:
    """The label budgets that the page's :meth:`ComparePage.budget` asks for, as text, by the rule of the
    engine's plan (a curve's budgets, ``[N]``, ``["25%"]`` for a share, ``["all"]``). Raises ValueError for a
    curve that does not parse."""
    if "label_curve" in budget:
        values = list(budget["label_curve"])
    elif "per_class" in budget:
        values = [int(budget["per_class"])]
    elif "fraction" in budget:
        f = float(budget["fraction"])
        values = ["all"] if f == 1 else [f"{100 * f:g}%"]
    else:
        values = ["all"]
    return sorted(str(v) for v in values)


def selection_of_result(result: dict) -> dict | None:
    """What a comparison's results were for (initialisations, modes, stages, label budgets, head, kNN k/T,
    repeats, architecture), read from its ``meta`` (an old results file: from its rows); None when empty."""
    meta, rows = result.get("meta") or {}, result.get("rows") or []
    inits = [i.get("init") for i in meta.get("inits") or [] if isinstance(i, dict)] or [r.get("init") for r in rows]
    modes = meta.get("modes") or [r.get("mode") for r in rows]
    if not inits or not modes:
        return None
    sel: dict = {"inits": sorted({_init_key(i) for i in inits if i is not None}),
                 "modes": sorted({str(m) for m in modes if m})}
    if meta.get("arch"):
        sel["arch"] = str(meta["arch"])
    budgets = meta.get("budgets") or [r.get("per_class", "all") for r in rows]
    sel["budgets"] = sorted({str(b) for b in budgets})
    probes = {"head", "knn"} & set(sel["modes"])
    if probes:
        layers = meta.get("layers") or [r.get("layer") for r in rows if r.get("mode") != "all"]
        sel["layers"] = sorted({str(x) for x in layers if x})
    if "head" in sel["modes"]:
        head = meta.get("head") or next((r.get("head") for r in rows if r.get("head")), None)
        if head:
            sel["head"] = str(head)
    if "knn" in sel["modes"] and meta.get("knn_k") is not None and meta.get("knn_t") is not None:
        sel["knn"] = [int(meta["knn_k"]), round(float(meta["knn_t"]), 3)]
    repeats = meta.get("repeats")
    if isinstance(repeats, dict):
        probe_repeats = next((repeats[m] for m in ("head", "knn") if m in probes and m in repeats), None)
        if probe_repeats is not None:
            sel["repeats"] = int(probe_repeats)
        if "all" in sel["modes"] and repeats.get("all") is not None:
            sel["repeats_all"] = int(repeats["all"])
    return sel


def belongs(shown: dict | None, current: dict) -> bool:
    """Whether results made for the selection ``shown`` belong to the selection ``current`` (every setting
    ``shown`` names has the same value in ``current``; one it does not name, e.g. an old file's, is not judged)."""
    return shown is not None and all(current.get(k) == v for k, v in shown.items())


def describe_selection(sel: dict) -> str:
    """A selection in a few words: ``rotation-1, random · linear probe, kNN · layer4 · all labels``."""
    names = [i if i in ("random", "imagenet") else Path(i).name for i in sel.get("inits") or []]
    modes = [m for m in ("head", "knn", "all") if m in (sel.get("modes") or [])]
    parts = [", ".join(names) or "no initialisation", ", ".join(mode_label(m, sel.get("head")) for m in modes)
             or "no mode"]
    if sel.get("layers"):
        parts.append(", ".join(sel["layers"]))
    if sel.get("budgets"):
        values = sorted((_budget_value(b) for b in sel["budgets"]), key=budget_order)
        parts.append(budget_text(values[0]) if len(values) == 1 else
                     "labels per class " + ", ".join(str(v) for v in values))
    return " · ".join(parts)


class _Selector(QWidget):
    """A plot under a one-line row: a caption and a combo box choosing what the plot shows."""

    def __init__(self, caption: str, plot: QWidget, tip: str):
        super().__init__()
        self.combo = QComboBox()
        self.combo.setToolTip(tip)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self._choices: list[tuple[str, object]] = []
        row = QHBoxLayout()
        row.setContentsMargins(4, 2, 4, 0)
        row.addWidget(QLabel(caption))
        row.addWidget(self.combo)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(row)
        lay.addWidget(plot, 1)

    def set_choices(self, choices: list[tuple[str, object]]) -> None:
        """Offer ``(text, value)`` choices; keep the current one if it is still offered. Values stay Python
        objects on this side (never converted to a QVariant)."""
        if choices == self._choices:
            return
        current = self.value()
        self._choices = list(choices)
        self.combo.blockSignals(True)
        self.combo.clear()
        for text, _value in choices:
            self.combo.addItem(text)
        values = [v for _t, v in choices]
        self.combo.setCurrentIndex(values.index(current) if current in values else (0 if values else -1))
        self.combo.blockSignals(False)

    def value(self):
        """The chosen value (None when there is no choice)."""
        i = self.combo.currentIndex()
        return self._choices[i][1] if 0 <= i < len(self._choices) else None

    def select(self, value) -> bool:
        values = [v for _t, v in self._choices]
        if value in values:
            self.combo.setCurrentIndex(values.index(value))
            return True
        return False


class ComparePage(HoldsSelection, QWidget):
    """Signals ``comparison_finished(result)`` (the engine's dict), ``comparison_failed(message)``,
    ``row_added(row)``."""

    comparison_finished = Signal(object)
    comparison_failed = Signal(str)
    row_added = Signal(object)

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.jobs = JobRunner(self, track=window.track)  # slot "compare": one comparison at a time
        self.job: Job | None = None
        self.out_dir: Path | None = None
        self.result: dict = normalise_result({})
        self.rows: list[dict] = []
        self.columns: list[str] = []  # the table's column titles: "kNN layer4", "linear layer4", ..., "all layers"
        self._cell_rows: dict[tuple[int, int], dict] = {}
        self._colours: dict[str, str] = {}
        self._runs: list[dict] = []
        self._epoch_data: dict[tuple, tuple[list, list]] = {}
        self._epoch_items: dict[tuple, pg.PlotDataItem] = {}
        self._epoch_dirty = False
        self._plots_stale: set[str] = set()
        self.selected_row: dict | None = None
        self._folder_classes: int | None = None  # class folders of the labelled folder at the last start
        self._epoch_chance: float | None = None  # chance level the fine-tuning epoch events state, if any
        settings = getattr(window, "settings", None)  # the chosen file is kept under its own key, at once
        # a weights file chosen for the ImageNet baseline ("": torchvision's file in the local cache)
        self.imagenet_weights = str(settings.value(IMAGENET_WEIGHTS_KEY, "") or "") if settings is not None else ""
        self._imagenet_statuses: dict[tuple, tuple[bool, str]] = {}
        self._imagenet_key: tuple | None = None
        self._imagenet_auto_off = False  # unchecked by the availability check, not by the user
        # what the results on screen were made for (None: no results shown); a change of the checks that
        # makes them no longer belong to the selection clears them with a note (see _check_selection)
        self._shown_selection: dict | None = None
        self._hold = 0  # > 0 while several settings change at once: judged once, at the end
        self.restoring = False  # the window restores its state: opening a run leaves the results alone
        self.stale_note = ""  # the last "The results shown were for ..." note

        self._build_settings()
        self._build_results()
        split_page(self, self._settings_scroll, self._results, 670)

        self._update_budget()
        self._update_modes()
        self.set_stage_choices(stage_names("resnet18"))
        self.refresh_imagenet()
        self._watch_selection()
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.flush)
        self._timer.start()

    # -- building ------------------------------------------------------------------------------
    def _build_settings(self) -> None:
        self.labelled = QLineEdit()
        self.labelled.setPlaceholderText("DIR/<class>/*.jpg or DIR/train/<class>/")
        self.labelled.setToolTip("Folder of labelled images, one sub-folder per class "
                                 "(or DIR/train/<class>/ and DIR/test/<class>/)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.choose_labelled)
        self._browse_buttons = [browse]
        lrow = QHBoxLayout()
        lrow.addWidget(self.labelled, 1)
        lrow.addWidget(browse)
        self.test_folder = QLineEdit()
        self.test_folder.setPlaceholderText("optional (default: DIR/test/ or a 20% split)")
        self.test_folder.setToolTip("A separate folder of labelled test images, one sub-folder per class")
        tbrowse = QPushButton("Browse…")
        tbrowse.clicked.connect(self.choose_test)
        self._browse_buttons.append(tbrowse)
        trow = QHBoxLayout()
        trow.addWidget(self.test_folder, 1)
        trow.addWidget(tbrowse)

        self.inits = init_list("Initialisations to compare: finished runs of the workspace, ImageNet and random",
                               80, self._on_inits_changed)
        for label, key, tip in (("ImageNet", "imagenet", "torchvision's ImageNet weights (local cache)"),
                                ("random", "random", "A randomly initialised backbone")):
            self._add_init_item(label, key, tip, checked=True)
        self.imagenet_choose = QPushButton("Choose weights file…")
        self.imagenet_choose.setToolTip("Use ImageNet weights from a file of your own (.pth, .pt or .safetensors; "
                                        "read as plain tensors, never as a program)")
        self.imagenet_choose.clicked.connect(lambda: self.choose_imagenet_weights())
        self.imagenet_forget = QPushButton("Use the cache")
        self.imagenet_forget.setToolTip("Forget the chosen file: use torchvision's ImageNet file in the local cache")
        self.imagenet_forget.clicked.connect(lambda: self.set_imagenet_weights(""))
        self.imagenet_note = QLabel()
        self.imagenet_note.setWordWrap(True)
        irow = QHBoxLayout()
        irow.setContentsMargins(0, 0, 0, 0)
        irow.addWidget(self.imagenet_choose)
        irow.addWidget(self.imagenet_forget)
        irow.addStretch(1)

        # modes
        self.mode_head = QCheckBox("head (frozen)")
        self.mode_head.setChecked(True)
        self.mode_head.setToolTip("Train a classifier on frozen features of each checked stage")
        self.head_type = QComboBox()
        self.head_type.addItem("linear", "linear")
        self.head_type.addItem("MLP", "mlp")
        self.head_type.setToolTip("linear: logistic regression, its L2 strength chosen on the training images; "
                                  "MLP: one hidden layer")
        self.mode_knn = QCheckBox("kNN")
        self.mode_knn.setChecked(True)
        self.mode_knn.setToolTip("Weighted k-nearest-neighbour vote on frozen, normalised features")
        self.knn_k = QSpinBox()
        self.knn_k.setRange(*spin_range(CompareSettings, "knn_k"))
        self.knn_k.setValue(20)
        self.knn_k.setPrefix("k ")
        self.knn_k.setToolTip("Neighbours that vote (default 20)")
        self.knn_t = QDoubleSpinBox()
        self.knn_t.setDecimals(3)
        self.knn_t.setRange(*spin_range(CompareSettings, "knn_t", self.knn_t.decimals()))  # > 0: from 0.001
        self.knn_t.setSingleStep(0.01)
        self.knn_t.setValue(0.07)
        self.knn_t.setPrefix("T ")
        self.knn_t.setToolTip("Temperature of the vote weights exp(similarity / T) (default 0.07)")
        self.mode_all = QCheckBox("all layers")
        self.mode_all.setChecked(False)
        self.mode_all.setToolTip("Fine-tune every layer (slow: a training run per row)")
        self.epochs_all = QSpinBox()
        lo, hi = spin_range(CompareSettings, "epochs_all")
        self.epochs_all.setRange(lo - 1, hi)  # one below the declared minimum: "auto passes" (None)
        self.epochs_all.setSpecialValueText("auto passes")
        self.epochs_all.setValue(0)
        self.epochs_all.setSuffix(" passes")
        self.epochs_all.setToolTip("Passes over each label draw in all-layer fine-tuning. Auto: 15 passes and at "
                                   "least 100 steps, so that a few labels per class still train.")
        for box in (self.mode_head, self.mode_knn, self.mode_all):
            box.toggled.connect(self._update_modes)
        modes = QFormLayout()
        modes.setContentsMargins(0, 0, 0, 0)
        modes.addRow(self.mode_head, self.head_type)
        kt = QHBoxLayout()
        kt.addWidget(self.knn_k)
        kt.addWidget(self.knn_t)
        modes.addRow(self.mode_knn, kt)
        modes.addRow(self.mode_all, self.epochs_all)

        self.stages = QListWidget()
        self.stages.setFlow(QListWidget.Flow.TopToBottom)  # two stages a column, columns side by side
        self.stages.setWrapping(True)
        self.stages.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.stages.setSpacing(1)
        self.stages.setFixedHeight(52)
        self.stages.setToolTip("The backbone stages the head and kNN probes read (each one is a column)")
        self.stages_last = QPushButton("last")
        self.stages_last.setToolTip("Probe the last stage only")
        self.stages_last.clicked.connect(lambda: self.set_layers("last"))
        self.stages_all = QPushButton("all")
        self.stages_all.setToolTip("Probe every stage")
        self.stages_all.clicked.connect(lambda: self.set_layers("all"))
        for b in (self.stages_last, self.stages_all):
            b.setMaximumWidth(48)
        srow = QHBoxLayout()
        srow.addWidget(self.stages, 1)
        sb = QVBoxLayout()
        sb.setSpacing(2)
        sb.addWidget(self.stages_last)
        sb.addWidget(self.stages_all)
        srow.addLayout(sb)

        # label budget
        self.budget_kind = QComboBox()
        self.budget_kind.addItem("all labels", "all")
        self.budget_kind.addItem("images per class", "per_class")
        self.budget_kind.addItem("share of each class", "fraction")
        self.budget_kind.addItem("label-efficiency curve", "curve")
        self.budget_kind.setToolTip("How many labelled training images each class contributes; a curve repeats "
                                    "the comparison at several budgets")
        self.per_class = QSpinBox()
        self.per_class.setRange(*spin_range(CompareSettings, "per_class"))
        self.per_class.setValue(20)
        self.per_class.setSuffix(" / class")
        self.per_class.setToolTip("A seeded subset of N training images per class (a new draw per repeat)")
        self.fraction = QDoubleSpinBox()
        self.fraction.setDecimals(2)
        self.fraction.setRange(*spin_range(CompareSettings, "fraction", self.fraction.decimals()))  # > 0
        self.fraction.setSingleStep(0.05)
        self.fraction.setValue(0.25)
        self.fraction.setToolTip("A seeded share of each class's training images (at least one)")
        self.curve = QLineEdit(DEFAULT_CURVE)
        self.curve.setToolTip("Budgets of the label-efficiency curve: images per class, comma-separated; "
                              "'all' is every labelled image")
        self.budget_kind.currentIndexChanged.connect(self._update_budget)
        brow = QHBoxLayout()
        brow.addWidget(self.budget_kind)
        brow.addWidget(self.per_class, 1)
        brow.addWidget(self.fraction, 1)
        brow.addWidget(self.curve, 1)

        self.repeats = QSpinBox()
        self.repeats.setRange(*spin_range(CompareSettings, "repeats"))
        self.repeats.setValue(3)
        self.repeats.setToolTip("Label draws (seeds) per head / kNN row: the table shows mean ± std over them")
        self.repeats_all = QSpinBox()
        self.repeats_all.setRange(*spin_range(CompareSettings, "repeats_all"))
        self.repeats_all.setValue(1)
        self.repeats_all.setToolTip("Repeats of each all-layer fine-tuning row (one: the table shows a bootstrap "
                                    "interval over the test images instead of a std)")
        rrow = QHBoxLayout()
        rrow.addWidget(QLabel("head, kNN"))
        rrow.addWidget(self.repeats)
        rrow.addWidget(QLabel("all layers"))
        rrow.addWidget(self.repeats_all)
        rrow.addStretch(1)

        form = settings_form()
        form.addRow("Labelled", lrow)
        form.addRow("Test", trow)
        form.addRow("Initialisations", self.inits)
        form.addRow("", irow)
        form.addRow("", self.imagenet_note)
        form.addRow("Modes", modes)
        form.addRow("Stages", srow)
        form.addRow("Labels", brow)
        form.addRow("Repeats", rrow)

        controls = run_controls("Run comparison", "Stop", "Idle.", self.start, self.stop)
        self.run_button, self.stop_button, self.progress, self.status = controls
        self.progress.setFormat("%v of %m")
        self.progress.setToolTip("Rows (initialisation x mode x stage x budget) done")
        self._settings_scroll = settings_column("4 · Fine-tune & compare", "Comparison", form, controls)

    def _build_results(self) -> None:
        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.setTextFormat(Qt.TextFormat.RichText)
        self.notes.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notes.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.notes.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.notes.setToolTip("What a reader needs before believing a row (the engine's notes, also in results.md)")
        self.notes_scroll = QScrollArea()
        self.notes_scroll.setWidget(self.notes)
        self.notes_scroll.setWidgetResizable(True)
        self.notes_scroll.setFrameShape(QFrame.Shape.StyledPanel)
        self.notes_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.notes_scroll.setVisible(False)

        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.table.horizontalHeader().setStretchLastSection(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.verticalHeader().setMaximumWidth(190)
        self.table.verticalHeader().setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.currentCellChanged.connect(lambda r, c, *_: self.show_cell(r, c))
        self.table.cellDoubleClicked.connect(lambda r, c: self.show_cell(r, c, open_tab=True))
        copy_shortcut = QShortcut(QKeySequence.StandardKey.Copy, self.table)
        copy_shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        copy_shortcut.activated.connect(self.copy_table)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the table as shown, tab-separated (Ctrl+C in the table)")
        self.copy_button.clicked.connect(self.copy_table)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save the engine's results.md, results.csv or results.json of this comparison")
        self.save_button.clicked.connect(lambda: self.save_table())
        self.copy_button.setEnabled(False)
        self.save_button.setEnabled(False)
        self.table_caption = QLabel("Test accuracy (%): mean ± std over repeats; one repeat: [interval]")
        self.table_caption.setWordWrap(True)
        head = QHBoxLayout()
        head.addWidget(self.table_caption, 1)
        head.addWidget(self.copy_button)
        head.addWidget(self.save_button)

        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(4)
        tl.addWidget(self.notes_scroll)
        tl.addLayout(head)
        tl.addWidget(self.table, 1)

        # label-efficiency curve
        self.curve_plot = make_plot("Label efficiency", "labelled images per class (log scale)",
                                    "test accuracy (%)", legend="top-left")
        self.curve_plot.getPlotItem().setLogMode(x=True, y=False)
        self.curve_tab = _Selector("Shows:", self.curve_plot, "Which mode and stage the curve shows")
        self.curve_tab.combo.currentIndexChanged.connect(self._update_curve_plot)
        self._curve_chosen = False  # the user picked a curve: keep it; else show the preferred one
        self.curve_tab.combo.activated.connect(lambda _i: setattr(self, "_curve_chosen", True))
        self._curve_items: list = []
        # per-stage chart
        self.stage_plot = make_plot("Accuracy per stage", "stage", "test accuracy (%)", integer_x=True,
                                    legend="top-left")
        self._stage_axis: IntegerAxis = self.stage_plot.getPlotItem().getAxis("bottom")
        self.stage_tab = _Selector("Labels per class:", self.stage_plot, "Which label budget the chart shows")
        self.stage_tab.combo.currentIndexChanged.connect(self._update_stage_plot)
        self._stage_curves: dict[str, pg.PlotDataItem] = {}
        self._stage_extra: list = []
        # per-epoch curves of all-layer fine-tuning
        self.plot = make_plot("All-layer fine-tuning: test accuracy per epoch", "epoch", "test accuracy (%)",
                              integer_x=True, legend="bottom-right")
        self.epoch_tab = _Selector("Initialisation:", self.plot, "Whose fine-tuning curves the plot shows")
        self.epoch_tab.combo.currentIndexChanged.connect(self._redraw_epochs)
        # per-class view
        self.class_caption = QLabel("Select a cell of the table to see its per-class accuracy and confusion matrix.")
        self.class_caption.setWordWrap(True)
        self.class_plot = make_plot("Per-class test accuracy", "test accuracy (%)", "", legend="none")
        self._class_axis = self.class_plot.getPlotItem().getAxis("left")
        self._class_bars: pg.BarGraphItem | None = None
        self.confusion = QTableWidget(0, 0)
        self.confusion.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.confusion.setToolTip("Rows: true class; columns: predicted class (summed over repeats)")
        self.confusion.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion.horizontalHeader().setMinimumSectionSize(22)
        self.confusion.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        conf = QWidget()
        cl = QVBoxLayout(conf)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(QLabel("Confusion matrix (rows: true class, columns: predicted)"))
        cl.addWidget(self.confusion, 1)
        cs = QSplitter(Qt.Orientation.Horizontal)
        cs.addWidget(self.class_plot)
        cs.addWidget(conf)
        cs.setSizes([300, 320])
        self.class_tab = QWidget()
        ct = QVBoxLayout(self.class_tab)
        ct.setContentsMargins(4, 2, 4, 0)
        ct.addWidget(self.class_caption)
        ct.addWidget(cs, 1)

        self.tabs = QTabWidget()
        self.tabs.currentChanged.connect(lambda _i: self.flush())
        self.tabs.addTab(self.curve_tab, "Label curve")
        self.tabs.addTab(self.stage_tab, "Per stage")
        self.tabs.addTab(self.epoch_tab, "Per epoch")
        self.tabs.addTab(self.class_tab, "Per class")
        self.tabs.setTabToolTip(0, "Accuracy against labelled images per class, one line and band per initialisation")
        self.tabs.setTabToolTip(1, "Accuracy at each backbone stage")
        self.tabs.setTabToolTip(2, "Test accuracy per epoch of the all-layer fine-tuning jobs")
        self.tabs.setTabToolTip(3, "Per-class accuracy and confusion matrix of the selected cell")

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(top)
        right.addWidget(self.tabs)
        right.setSizes([330, 420])
        right.setChildrenCollapsible(False)
        self._results = right

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
        self.curve.setVisible(kind == "curve")

    def _update_modes(self) -> None:
        self.head_type.setEnabled(self.mode_head.isChecked())
        self.knn_k.setEnabled(self.mode_knn.isChecked())
        self.knn_t.setEnabled(self.mode_knn.isChecked())
        self.epochs_all.setEnabled(self.mode_all.isChecked())
        self.repeats_all.setEnabled(self.mode_all.isChecked())
        self.repeats.setEnabled(self.mode_head.isChecked() or self.mode_knn.isChecked())

    def modes(self) -> list[str]:
        return [m for m, box in (("head", self.mode_head), ("knn", self.mode_knn), ("all", self.mode_all))
                if box.isChecked()]

    def set_modes(self, modes: list[str]) -> None:
        with self._holding():
            for m, box in (("head", self.mode_head), ("knn", self.mode_knn), ("all", self.mode_all)):
                box.setChecked(m in modes)

    def budget(self) -> dict:
        """``{"per_class": N}``, ``{"fraction": f}``, ``{"label_curve": [...]}`` or ``{}`` (every label).

        Raises ValueError for a curve that does not parse."""
        kind = self.budget_kind.currentData()
        if kind == "per_class":
            return {"per_class": self.per_class.value()}
        if kind == "fraction":
            return {"fraction": float(self.fraction.value())}
        if kind == "curve":
            return {"label_curve": parse_curve(self.curve.text())}
        return {}

    def set_budget(self, per_class: int | None = None, fraction: float | None = None,
                   curve: list | str | None = None) -> None:
        with self._holding():
            self._set_budget(per_class, fraction, curve)

    def _set_budget(self, per_class, fraction, curve) -> None:
        if curve is not None:
            self.budget_kind.setCurrentIndex(self.budget_kind.findData("curve"))
            self.curve.setText(curve if isinstance(curve, str) else ", ".join(str(b) for b in curve))
        elif per_class is not None:
            self.budget_kind.setCurrentIndex(self.budget_kind.findData("per_class"))
            self.per_class.setValue(int(per_class))
        elif fraction is not None:
            self.budget_kind.setCurrentIndex(self.budget_kind.findData("fraction"))
            self.fraction.setValue(float(fraction))
        else:
            self.budget_kind.setCurrentIndex(self.budget_kind.findData("all"))

    def _add_init_item(self, label: str, key: str, tip: str, checked: bool, row: int | None = None) -> None:
        add_init_item(self.inits, label, key, tip, checked, row)

    # -- persistence ---------------------------------------------------------------------------
    def values(self) -> dict:
        """The page's settings, for QSettings; :meth:`state` adds what depends on the runs and the results."""
        return {"labelled": self.labelled.text(), "test": self.test_folder.text(),
                "budget_kind": self.budget_kind.currentIndex(), "per_class": self.per_class.value(),
                "fraction": self.fraction.value(), "curve": self.curve.text(),
                "mode_head": self.mode_head.isChecked(), "mode_knn": self.mode_knn.isChecked(),
                "mode_all": self.mode_all.isChecked(), "head": self.head_type.currentData(),
                "knn_k": self.knn_k.value(), "knn_t": self.knn_t.value(), "epochs_all": self.epochs_all.value(),
                "repeats": self.repeats.value(), "repeats_all": self.repeats_all.value()}

    def set_values(self, values: dict) -> None:
        def head(v):
            i = self.head_type.findData(v)
            if i >= 0:
                self.head_type.setCurrentIndex(i)

        setters = {"labelled": self.labelled.setText, "test": self.test_folder.setText,
                   "budget_kind": self.budget_kind.setCurrentIndex, "per_class": self.per_class.setValue,
                   "fraction": self.fraction.setValue, "curve": self.curve.setText,
                   "mode_head": self.mode_head.setChecked, "mode_knn": self.mode_knn.setChecked,
                   "mode_all": self.mode_all.setChecked, "head": head, "knn_k": self.knn_k.setValue,
                   "knn_t": self.knn_t.setValue, "epochs_all": self.epochs_all.setValue,
                   "repeats": self.repeats.setValue, "repeats_all": self.repeats_all.setValue}
        with self._holding():
            for key, value in values.items():
                if key in setters and value is not None:
                    try:
                        setters[key](value)
                    except (TypeError, ValueError):
                        pass  # a setting from another version: keep the default

    def set_runs(self, runs: list[dict]) -> None:
        """Offer every finished run of the workspace (the newest checked by default) plus the baselines."""
        self._runs = list(runs)
        previous = checked_states(self.inits)
        baselines = {k: previous.get(k, Qt.CheckState.Checked) for k in ("imagenet", "random")}
        self.inits.blockSignals(True)
        self.inits.clear()
        for label, key, tip, checked in run_choices(runs, previous):
            self._add_init_item(label, key, tip, checked)
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
        check_only(self.inits, keys)
        self._on_inits_changed()

    def arch(self) -> str:
        """The backbone compared: that of the first checked run, else the pretraining page's."""
        arch = run_arch(self._runs, self.checked_inits())
        return self.window_.pretrain_page.arch.currentText() if arch is None else arch

    def _on_inits_changed(self, *_args) -> None:
        with self._holding():
            stages = stage_names(self.arch())
            if stages != self._stage_list():
                self.set_stage_choices(stages)
            self.refresh_imagenet()

    # -- the ImageNet baseline -----------------------------------------------------------------
    def _imagenet_item(self) -> QListWidgetItem | None:
        for i in range(self.inits.count()):
            if self.inits.item(i).data(Qt.ItemDataRole.UserRole) == "imagenet":
                return self.inits.item(i)
        return None

    def imagenet_status(self) -> tuple[bool, str]:
        """``(available, reason)`` of ImageNet weights for the compared architecture: torchvision's file in
        the local cache, or the chosen weights file (the engine's :func:`imagenet_weights_status`; a file is
        read once per version)."""
        from sslstudio.models.weights import imagenet_weights_status

        key = (self.arch(), self.imagenet_weights, weights_file_stamp(self.imagenet_weights)
               if self.imagenet_weights else ())
        if key not in self._imagenet_statuses:
            if len(self._imagenet_statuses) > 16:
                self._imagenet_statuses.clear()
            self._imagenet_statuses[key] = imagenet_weights_status(key[0], self.imagenet_weights or None)
        return self._imagenet_statuses[key]

    def _imagenet_tooltip(self, arch: str, available: bool, reason: str) -> str:
        from sslstudio.models.weights import imagenet_checkpoint_path, imagenet_url

        if self.imagenet_weights:
            head = f"ImageNet weights from the chosen file {self.imagenet_weights}"
            return head + ("." if available else f": {reason}. Choose another file, or “Use the cache”.")
        try:
            path, url = imagenet_checkpoint_path(arch), imagenet_url(arch)
        except Exception:  # noqa: BLE001 - an architecture without published ImageNet weights
            return f"torchvision publishes no ImageNet weights for {arch}; choose a weights file of your own."
        if available:
            return f"torchvision's ImageNet weights for {arch}: {path}"
        return (f"torchvision's ImageNet weights for {arch} ({path.name}) are not in {path.parent}. Put the file "
                f"there (it is published at {url}), or choose a weights file of your own with “Choose weights "
                "file…”. Checked anyway, the comparison tries to download them.")

    def refresh_imagenet(self, check: bool = False) -> tuple[bool, str]:
        """Check whether ImageNet weights are available for the compared architecture and show it: the
        ImageNet row's text carries the reason when they are not, and the row is unchecked (once per
        architecture and file: a user may check it again, and the comparison then tries a download).
        ``check``: check the row when the weights are available (after a file was chosen)."""
        available, reason = self.imagenet_status()
        arch = self.arch()
        key = (arch, self.imagenet_weights)
        changed = key != self._imagenet_key
        self._imagenet_key = key
        item = self._imagenet_item()
        if item is not None:
            self.inits.blockSignals(True)
            if self.imagenet_weights:  # the list is narrow: the file (or its problem) is named under it
                item.setText("ImageNet — your file" if available else "ImageNet — file not usable")
            else:
                item.setText("ImageNet" if available else f"ImageNet — {reason}")
            item.setToolTip(self._imagenet_tooltip(arch, available, reason))
            item.setForeground(self.palette().color(self.palette().ColorRole.Text if available
                                                    else self.palette().ColorRole.PlaceholderText))
            on = item.checkState() == Qt.CheckState.Checked
            if not available and on and changed:
                item.setCheckState(Qt.CheckState.Unchecked)
                self._imagenet_auto_off = True
            elif available and not on and (check or (changed and self._imagenet_auto_off)):
                item.setCheckState(Qt.CheckState.Checked)
                self._imagenet_auto_off = False
            self.inits.blockSignals(False)
        note = f"ImageNet weights: {reason}." if self.imagenet_weights else ""
        self.imagenet_note.setText(note)
        self.imagenet_note.setToolTip(self.imagenet_weights)
        self.imagenet_note.setVisible(bool(note))
        self.imagenet_forget.setVisible(bool(self.imagenet_weights))
        return available, reason

    def set_imagenet_weights(self, path: str, check: bool = True) -> tuple[bool, str]:
        """Use the weights file ``path`` for the ImageNet baseline (``""``: torchvision's file in the cache);
        the choice is written to QSettings at once. ``check``: check the ImageNet row if the file fits."""
        self.imagenet_weights = str(path or "")
        available, reason = self.refresh_imagenet(check=check)
        settings = getattr(self.window_, "settings", None)
        if settings is not None:  # kept at once, not only when the window closes
            settings.setValue(IMAGENET_WEIGHTS_KEY, self.imagenet_weights)
        if check and self.imagenet_weights and not available:
            self.status.setText(f"ImageNet baseline: {reason}; choose another file.")
        return available, reason

    def choose_imagenet_weights(self, path: str | None = None) -> tuple[bool, str] | None:
        """Ask for an ImageNet weights file (or take ``path``) and use it for the ImageNet baseline."""
        if path is None:
            start = str(Path(self.imagenet_weights).parent) if self.imagenet_weights else str(Path.home())
            path, _ = QFileDialog.getOpenFileName(self, "Choose ImageNet weights", start,
                                                  "Weights (*.pth *.pt *.safetensors);;All files (*)")
            if not path:
                return None
        return self.set_imagenet_weights(str(path))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self._on_inits_changed()  # the architecture may have changed on the pretraining page: stages, ImageNet

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
        with self._holding():
            for i in range(self.stages.count()):
                item = self.stages.item(i)
                item.setCheckState(Qt.CheckState.Checked if item.text() in keep else Qt.CheckState.Unchecked)

    def is_running(self) -> bool:
        return self.job is not None and self.job.is_running()

    # -- the selection and the results on screen ---------------------------------------------
    def selection(self) -> dict:
        """What a comparison started now would compare: the checked initialisations (resolved paths),
        modes, stages, label budgets, head, kNN k/T, repeats, architecture, folders and weights file
        (budgets None when the curve does not parse). Only the settings of the checked modes count."""
        modes = self.modes()
        try:
            budgets = budgets_of(self.budget())
        except ValueError:
            budgets = None
        keys = self.checked_inits()
        sel: dict = {"inits": sorted({_init_key(k) for k in keys}), "modes": sorted(modes), "arch": self.arch(),
                     "budgets": budgets, "labelled": self.labelled.text().strip(),
                     "test": self.test_folder.text().strip()}
        if {"head", "knn"} & set(modes):
            sel["layers"] = sorted(self.layers())
            sel["repeats"] = self.repeats.value()
        if "head" in modes:
            sel["head"] = self.head_type.currentData()
        if "knn" in modes:
            sel["knn"] = [self.knn_k.value(), round(float(self.knn_t.value()), 3)]
        if "all" in modes:
            sel["repeats_all"] = self.repeats_all.value()
        if "imagenet" in keys and self.imagenet_weights:
            sel["weights"] = self.imagenet_weights
        return sel

    @property
    def shown_selection(self) -> dict | None:
        """What the results on screen were made for (None when no results are shown)."""
        return self._shown_selection

    def _watch_selection(self) -> None:
        """Judge the results on screen again whenever a setting they depend on changes."""
        check = self._check_selection
        self.stages.itemChanged.connect(check)
        for box in (self.mode_head, self.mode_knn, self.mode_all):
            box.toggled.connect(check)
        for combo in (self.budget_kind, self.head_type):
            combo.currentIndexChanged.connect(check)
        for spin in (self.per_class, self.fraction, self.knn_k, self.knn_t, self.repeats, self.repeats_all):
            spin.valueChanged.connect(check)
        for field in (self.curve, self.labelled, self.test_folder):
            field.textChanged.connect(check)

    def _check_selection(self, *_args) -> None:
        """Clear the results on screen, with a note, when they no longer belong to the selection."""
        if self._hold or self._shown_selection is None or self.is_running():
            return
        if not belongs(self._shown_selection, self.selection()):
            self.clear_stale(f"The results shown were for {describe_selection(self._shown_selection)}; "
                             "run the comparison for the current selection.")

    def clear_stale(self, note: str) -> None:
        """Clear the results and say, in one line, whose they were."""
        self.clear_results()
        self.out_dir = None
        self.stale_note = note
        self.status.setText(note)

    def _inputs(self) -> list[QWidget]:
        """Every widget of the comparison's settings (disabled while a comparison runs)."""
        return [self.labelled, self.test_folder, *self._browse_buttons, self.inits, self.imagenet_choose,
                self.imagenet_forget, self.mode_head, self.head_type, self.mode_knn, self.knn_k, self.knn_t,
                self.mode_all, self.epochs_all, self.stages, self.stages_last, self.stages_all, self.budget_kind,
                self.per_class, self.fraction, self.curve, self.repeats, self.repeats_all]

    def _set_inputs_enabled(self, on: bool) -> None:
        for w in self._inputs():
            w.setEnabled(on)
        if on:
            self._update_modes()

    def apply_selection(self, sel: dict) -> None:
        """Check what ``sel`` (a :func:`selection_of_result`) names: initialisations, modes, stages, budgets,
        head, kNN k/T and repeats (settings it does not name are left as they are)."""
        with self._holding():
            wanted = set(sel.get("inits") or [])
            keys = [self.inits.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.inits.count())]
            offered = {_init_key(k) for k in keys}
            for init in sorted(wanted - offered):  # compared then, not a finished run of the workspace now
                self._add_init_item(f"{Path(init).name}  (not a finished run here)", init,
                                    f"{init}: compared before, but not a finished run of this workspace now",
                                    checked=True, row=max(self.inits.count() - 2, 0))
                keys.append(init)
            self._check_inits_exactly([k for k in keys if _init_key(k) in wanted])
            self.set_modes(list(sel.get("modes") or []))
            budgets = sorted((_budget_value(b) for b in sel.get("budgets") or ["all"]), key=budget_order)
            if len(budgets) > 1:
                self.set_budget(curve=budgets)
            elif isinstance(budgets[0], int):
                self.set_budget(per_class=budgets[0])
            elif str(budgets[0]).endswith("%"):
                self.set_budget(fraction=float(str(budgets[0])[:-1]) / 100)
            else:
                self.set_budget()
            if sel.get("layers"):
                self.set_layers(list(sel["layers"]))
            if sel.get("head"):
                i = self.head_type.findData(sel["head"])
                if i >= 0:
                    self.head_type.setCurrentIndex(i)
            if sel.get("knn"):
                self.knn_k.setValue(int(sel["knn"][0]))
                self.knn_t.setValue(float(sel["knn"][1]))
            if sel.get("repeats") is not None:
                self.repeats.setValue(int(sel["repeats"]))
            if sel.get("repeats_all") is not None:
                self.repeats_all.setValue(int(sel["repeats_all"]))

    def _check_inits_exactly(self, keys: list[str]) -> None:
        """Check exactly ``keys``, also ImageNet when it is unavailable (the user had checked it): the
        availability check unchecks it once per architecture, so the architecture is settled first."""
        self.set_checked_inits(keys)
        self.refresh_imagenet()
        self.set_checked_inits(keys)

    def show_results(self, folder: Path, result, apply: bool = False, selection: dict | None = None) -> bool:
        """Show the comparison ``result`` of ``folder`` if it belongs to the selection (``apply``: check
        what it compared first); else clear the results with a note. ``selection``: what it was made for
        (default: read from its meta)."""
        folder = Path(folder)
        result = normalise_result(result)
        sel = selection if isinstance(selection, dict) else selection_of_result(result)
        with self._holding():
            if apply and sel is not None:
                self.apply_selection(sel)
            if sel is None or not belongs(sel, self.selection()):
                what = describe_selection(sel) if sel else "another selection"
                self.clear_stale(f"The results of {folder.name} were for {what}; "
                                 "run the comparison for the current selection.")
                return False
            self.clear_results()
            self.out_dir = folder
            self.set_result(result)
            self._shown_selection = sel
            self.stale_note = ""
            self.progress.setRange(0, max(len(self.rows), 1))
            self.progress.setValue(len(self.rows))
        return True

    def _epochs_from_rows(self) -> None:
        """The per-epoch curves of all-layer fine-tuning from the rows' ``history`` (its first repeat)."""
        for r in self.rows:
            history = r.get("history") or []
            if r.get("mode") != "all" or not history:
                continue
            key = (str(r.get("init")), row_label(r), str(r.get("layer")), r.get("per_class", "all"), 0)
            ys = [100 * float(h[2]) if len(h) > 2 and h[2] is not None else np.nan for h in history]
            self._epoch_data[key] = (list(range(1, len(ys) + 1)), ys)
            self._colour(key[0])
        self._epoch_dirty = bool(self._epoch_data)

    # -- the page's state across sessions --------------------------------------------------------
    def state(self) -> dict:
        """:meth:`values` plus what depends on the runs and the results: the checked initialisations and
        stages, the results folder shown and what it was for, the open tab and each chart's choice."""
        curve = self.curve_tab.value() if self._curve_chosen else None
        return {**self.values(), "inits": self.checked_inits(), "layers": self.layers(),
                "results": str(self.out_dir) if self._shown_selection is not None and self.out_dir else "",
                "shown": self._shown_selection, "tab": self.tabs.currentIndex(),
                "epoch_init": self.epoch_tab.value(), "curve_choice": list(curve) if curve else None,
                "stage_budget": self.stage_tab.value()}

    def restore_state(self, state: dict) -> None:
        """Put the page back as :meth:`state` saved it (after the runs are offered): the checks exactly, and
        the results when their folder is still there and they belong to the checks."""
        with self._holding():
            self.set_values(state)
            if isinstance(state.get("inits"), list):
                self._check_inits_exactly([str(k) for k in state["inits"]])
            if isinstance(state.get("layers"), list):
                self.set_layers([str(x) for x in state["layers"]])
            self.clear_results()
            folder = str(state.get("results") or "")
            if folder:
                self._restore_results(Path(folder), state.get("shown"))
        self._restore_choices(state)

    def _restore_results(self, folder: Path, shown) -> None:
        try:
            result = normalise_result(json.loads((folder / "results.json").read_text()))
        except (OSError, ValueError):
            self.status.setText(f"The results shown last time ({folder}) are no longer there.")
            return
        if self.show_results(folder, result, selection=shown):
            done = sum(1 for r in self.rows if r.get("test_accuracy") is not None)
            self.status.setText(f"Results of {folder.name}: {done} of {len(self.rows)} row(s).")

    def _restore_choices(self, state: dict) -> None:
        """The open tab and what each chart shows."""
        if self._shown_selection is not None:
            self._redraw_epochs()
            if state.get("epoch_init") is not None:
                self.epoch_tab.select(state["epoch_init"])
            self._update_curve_choices()
            choice = state.get("curve_choice")
            if isinstance(choice, list) and self.curve_tab.select(tuple(choice)):
                self._curve_chosen = True
            self._update_stage_choices()
            if state.get("stage_budget") is not None:
                self.stage_tab.select(state["stage_budget"])
            self._refresh_plots()
        tab = state.get("tab")
        if isinstance(tab, int) and 0 <= tab < self.tabs.count():
            self.tabs.setCurrentIndex(tab)

    # -- running -------------------------------------------------------------------------------
    def compare_kwargs(self) -> dict:
        """The keyword arguments of ``compare`` the settings give (raises ValueError on a bad curve)."""
        keys = self.checked_inits()
        inits = [k for k in keys if k not in ("imagenet", "random")]
        pre = self.window_.pretrain_page
        modes = self.modes()
        kwargs = dict(test=self.test_folder.text().strip() or None,
                      baselines=[k for k in ("imagenet", "random") if k in keys], modes=modes,
                      layers=self.layers(), arch=self.arch(), image_size=None if inits else pre.image_size(),
                      head=self.head_type.currentData(), knn_k=self.knn_k.value(), knn_t=float(self.knn_t.value()),
                      repeats=self.repeats.value(), repeats_all=self.repeats_all.value(),
                      epochs_all=self.epochs_all.value() or None, device=pre.device.currentData(),
                      seed=pre.seed.value())
        if "imagenet" in keys and self.imagenet_weights:
            kwargs["weights"] = self.imagenet_weights
        kwargs.update(self.budget())
        return {"inits": inits, **kwargs}

    def start(self, out: str | None = None) -> None:
        if self.is_running():
            return
        labelled = self.labelled.text().strip()
        self.refresh_imagenet()  # before the settings are read: what is checked is what runs
        if not labelled:
            self.status.setText("Choose a labelled folder first.")
            self.comparison_failed.emit("no labelled folder")
            return
        try:
            kwargs = self.compare_kwargs()
        except ValueError as exc:
            self.status.setText(f"Label curve: {exc}.")
            self.comparison_failed.emit(str(exc))
            return
        modes = kwargs["modes"]
        needs_stage = any(m in modes for m in ("head", "knn"))
        if not self.checked_inits() or not modes or (needs_stage and not kwargs["layers"]):
            self.status.setText("Check at least one initialisation, one mode and (for head or kNN) one stage.")
            self.comparison_failed.emit("nothing to compare")
            return
        self.out_dir = Path(out) if out else (self.window_.workspace / "compare" /
                                              datetime.now().strftime("%Y%m%d-%H%M%S"))
        self.clear_results()
        self._folder_classes = labelled_class_count(labelled)  # the chance line until the engine's classes
        self._shown_selection = self.selection()  # the rows that arrive belong to this selection
        self.stale_note = ""
        inits = kwargs.pop("inits")
        self.job = self.jobs.start("compare", compare, labelled, str(self.out_dir), inits, kwargs=kwargs,
                                   on_event=self.on_event, on_result=self._on_finished, on_error=self._on_failed,
                                   on_cancelled=self._on_cancelled, on_ended=self._on_ended, pass_control=True,
                                   replace=False)
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._set_inputs_enabled(False)  # the running comparison has read them: they stay as shown
        self.progress.setRange(0, 0)  # busy until the first progress event tells the total
        self.status.setText("Running…")

    def stop(self) -> None:
        if self.is_running():
            self.job.cancel()
            self.stop_button.setEnabled(False)
            self.status.setText("Stopping…")

    def clear_results(self) -> None:
        self._shown_selection = None
        self.result = normalise_result({})
        self.rows = []
        self.selected_row = None
        self.table.clear()
        self.table.setRowCount(0)
        self.table.setColumnCount(0)
        self.columns = []
        self._cell_rows = {}
        self._epoch_data.clear()
        for item in self._epoch_items.values():
            self.plot.getPlotItem().removeItem(item)
        self._epoch_items.clear()
        if self.plot.getPlotItem().legend is not None:
            self.plot.getPlotItem().legend.clear()
        self.epoch_tab.set_choices([])
        self._epoch_dirty = True  # its title and chance line go too
        for plot in (self.curve_plot, self.stage_plot, self.plot):  # hidden charts are redrawn only when shown
            add_chance_line(plot, None)
        self._epoch_chance = None
        self._folder_classes = None
        self._colours.clear()
        self._set_notes([])
        self._refresh_plots()
        self.show_row(None)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.copy_button.setEnabled(False)
        self.save_button.setEnabled(False)

    def chance_level(self) -> float | None:
        """The downstream chance level, 1 / number of classes of the labelled folder (a fraction): the
        engine's class list once there are results, else what the fine-tuning events or the finished rows
        say, else the class folders counted when the comparison started; None when unknown."""
        n = len(self.result["meta"].get("classes") or [])
        if not n and self._epoch_chance:
            return float(self._epoch_chance)
        for r in self.rows if not n else ():
            n = len(r.get("confusion") or r.get("per_class_accuracy") or [])
            if n:
                break
        n = n or self._folder_classes or 0
        return 1.0 / n if n > 0 else None

    def _chance_percent(self, drawn: bool = True) -> float | None:
        """The chance level in percent when the plot shows data (``drawn``), else None (no line)."""
        chance = self.chance_level() if drawn else None
        return None if chance is None else 100.0 * chance

    def _colour(self, init: str) -> str:
        return self._colours.setdefault(str(init), PALETTE[len(self._colours) % len(PALETTE)])

    def on_event(self, ev) -> None:
        kind = getattr(ev, "kind", None)
        if kind == "epoch" and ev.extra:
            x = ev.extra
            key = (str(x.get("init")), row_label(x),
                   str(x.get("layer")), x.get("per_class", "all"), int(x.get("repeat", 0) or 0))
            xs, ys = self._epoch_data.setdefault(key, ([], []))
            if getattr(ev, "chance", None):
                self._epoch_chance = float(ev.chance)
            xs.append(ev.epoch + 1)
            ys.append(np.nan if ev.val_metric is None else 100 * ev.val_metric)
            self._epoch_dirty = True
            self._colour(key[0])
            acc = f", test accuracy {100 * ev.val_metric:.1f} %" if ev.val_metric is not None else ""
            self.status.setText(f"{key[1]} / all layers / {budget_text(x.get('per_class', 'all'))}: "
                                f"epoch {ev.epoch + 1} of {ev.epochs}{acc}")
        elif kind == "progress":
            self.show_progress(ev)
        elif kind == "row":
            self.add_row(ev.row)
            if self.progress.maximum() == 0 and ev.total:
                self.progress.setRange(0, ev.total)
                self.progress.setValue(ev.index)
        elif kind == "log":
            self.window_.log(ev.message, ev.level)

    def show_progress(self, ev) -> None:
        total = max(int(ev.total or 0), 0)
        self.progress.setRange(0, total)
        self.progress.setValue(min(int(ev.done), total) if total else 0)
        eta = _fmt_seconds(ev.eta_s)
        parts = [ev.message or "Running", f"{ev.done} of {ev.total}" if total else ""]
        if eta:
            parts.append(f"about {eta} left")
        elif ev.elapsed_s:
            parts.append(f"{_fmt_seconds(ev.elapsed_s)} so far")
        self.status.setText(" · ".join(p for p in parts if p))

    def add_row(self, row: dict) -> None:
        """Put one finished row into the table and the charts (as the engine's row events arrive)."""
        self.rows.append(dict(row))
        self.result["rows"] = self.rows
        self._fill_table()
        self._plots_stale = {"curve", "stage"}  # redrawn by the next flush (a burst of rows: one redraw)
        self.row_added.emit(dict(row))

    def flush(self) -> None:
        """Redraw what changed since the last call (the ~10 Hz timer calls it): the visible chart only;
        a hidden one is redrawn when its tab is opened. Plot items are costly to create (and PySide6
        6.12.0 lost references to None with each), so charts are not redrawn per event."""
        current = self.tabs.currentWidget()
        if "curve" in self._plots_stale and current is self.curve_tab:
            self._plots_stale.discard("curve")
            self._update_curve_choices()
            self._update_curve_plot()
        if "stage" in self._plots_stale and current is self.stage_tab:
            self._plots_stale.discard("stage")
            self._update_stage_choices()
            self._update_stage_plot()
        if self._epoch_dirty and current is self.epoch_tab:
            self._epoch_dirty = False
            self._redraw_epochs()

    def set_result(self, result) -> None:
        """Show a whole result (the engine's dict, or an old list of rows)."""
        self.result = normalise_result(result)
        self.rows = list(self.result["rows"])
        self.result["rows"] = self.rows
        self._set_notes(self.result["notes"])
        self._fill_table()
        if not self._epoch_data:  # results read from a file: the per-epoch curves are the rows' histories
            self._epochs_from_rows()
        self._epoch_dirty = self._epoch_dirty or bool(self._epoch_data)  # its chance line may change
        self._refresh_plots()
        if self.selected_row is not None:
            key = row_key(self.selected_row)
            self.show_row(next((r for r in self.rows if row_key(r) == key), None))

    def set_rows(self, rows: list[dict]) -> None:
        """Fill the table from rows alone (no notes, no paired differences)."""
        self.set_result({"rows": list(rows)})

    def _set_notes(self, notes: list[str]) -> None:
        import html

        if not notes:
            self.notes.setText("")
            self.notes_scroll.setVisible(False)
            return
        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        self.notes.setText(f"<b>Before you believe a row</b><ul style='margin-left:-18px'>{items}</ul>")
        self.notes_scroll.setVisible(True)
        # as tall as the text at this width, up to a limit (the rest scrolls)
        width = max(self.notes_scroll.viewport().width(), 300)
        height = self.notes.heightForWidth(width - 8)
        self.notes_scroll.setMaximumHeight(min(max(height, 40) + 8, 150))
        self.notes_scroll.setMinimumHeight(min(max(height, 40) + 8, 90))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if self.result.get("notes"):
            QTimer.singleShot(0, lambda: self._set_notes(self.result["notes"]))

    # -- the table -----------------------------------------------------------------------------
    def _fill_table(self) -> None:
        """Show the engine's results table (:func:`results_table`, the one ``results.md`` writes): every
        budget in one grid, a cell's difference to random init on a second line, tinted by its verdict."""
        table = results_table(self.result, self._stage_list())
        several = len(table.budgets) > 1
        self._cell_rows = {}
        self.columns = [c.title for c in table.columns]
        self.table.blockSignals(True)
        self.table.clearSpans()
        self.table.clearContents()
        self.table.setRowCount(len(table.rows))
        self.table.setColumnCount(len(table.columns))
        self.table.setVerticalHeaderLabels([f"{r.label} · {budget_text(r.budget)}" if several else r.label
                                            for r in table.rows])
        self.table.setHorizontalHeaderLabels([t.replace(" ", "\n", 1) for t in self.columns])
        for j, title in enumerate(self.columns):
            self.table.horizontalHeaderItem(j).setToolTip(title)
        muted = self.palette().color(self.palette().ColorRole.PlaceholderText)
        spans = [(i, r.error) for i, r in enumerate(table.rows) if r.error]  # no cell ran, for one reason
        for i, trow in enumerate(table.rows):
            for j, cell in enumerate(trow.cells):
                if cell is None or (i, trow.error) in spans:
                    continue
                item = QTableWidgetItem(f"{cell.text}\n{cell.difference}" if cell.difference else cell.text)
                self._cell_rows[(i, j)] = cell.row
                details = cell_details(cell.row, cell.paired)
                if cell.row.get("per_class_accuracy"):
                    details += "\nselect the cell and open “Per class” for per-class accuracy and the confusion matrix"
                item.setToolTip(details)
                if cell.available:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                    tint = VERDICT_TINT.get(cell.verdict)
                    if tint:
                        item.setBackground(_tint(tint, 60))
                else:
                    item.setForeground(muted)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        for j in range(self.table.columnCount()):
            self.table.setColumnWidth(j, min(max(self.table.columnWidth(j), 70), 150))
        for i, error in spans:  # after the widths: a wide cell must not widen its first column
            item = QTableWidgetItem(f"unavailable: {error}")
            item.setToolTip(error)
            item.setForeground(muted)
            self.table.setItem(i, 0, item)
            if len(table.columns) > 1:
                self.table.setSpan(i, 0, 1, len(table.columns))
        self.table.resizeRowsToContents()
        for i, trow in enumerate(table.rows):
            self.table.verticalHeaderItem(i).setToolTip(f"{trow.label}, {budget_text(trow.budget)}")
        self.table.blockSignals(False)
        self.copy_button.setEnabled(bool(self.rows))
        self.save_button.setEnabled(bool(self.rows))

    def cell_row(self, i: int, j: int) -> dict | None:
        """The engine's row behind table cell (i, j)."""
        return self._cell_rows.get((i, j))

    def show_cell(self, i: int, j: int, open_tab: bool = False) -> None:
        row = self.cell_row(i, j) if i >= 0 and j >= 0 else None
        if row is None:
            return
        self.show_row(row)
        if open_tab:
            self.tabs.setCurrentWidget(self.class_tab)

    # -- plots ---------------------------------------------------------------------------------
    def _refresh_plots(self) -> None:
        """Mark the charts for redrawing and redraw the visible one now."""
        self._plots_stale = {"curve", "stage"}
        self.flush()

    def _update_curve_choices(self) -> None:
        table = results_table(self.result, self._stage_list())
        # the probes first, the last stage first: it is what a reader looks for
        def order(c):
            return (CURVE_MODES.index(c.mode) if c.mode in CURVE_MODES else 9, c.layer != self._last_layer())
        choices = [(mode_label(c.mode, table.head) + (f" ({c.layer})" if c.layer else ""), (c.mode, c.layer))
                   for c in sorted(table.columns, key=order)]
        self.curve_tab.set_choices(choices)
        if not self._curve_chosen and choices:
            self.curve_tab.combo.blockSignals(True)
            self.curve_tab.combo.setCurrentIndex(0)
            self.curve_tab.combo.blockSignals(False)

    def _last_layer(self) -> str:
        layers = [r.get("layer") for r in self.rows if r.get("mode") != "all"]
        order = self._stage_list()
        known = [x for x in layers if x in order]
        return max(known, key=order.index) if known else (layers[-1] if layers else "")

    def _update_curve_plot(self, *_args) -> None:
        item = self.curve_plot.getPlotItem()
        for it in self._curve_items:
            if isinstance(it, pg.FillBetweenItem):
                remove_band(item, it)
            else:
                item.removeItem(it)
        self._curve_items.clear()
        if item.legend is not None:
            item.legend.clear()
        combo = self.curve_tab.value()
        series = curve_series(self.result).get(tuple(combo), {}) if combo is not None else {}
        ticks: dict[float, str] = {}
        ys = []
        for label, s in series.items():
            init = next((str(r.get("init")) for r in self.rows if row_label(r) == label), label)
            colour = self._colour(init)
            band = add_band(item, s["x"], s["lo"], s["hi"], colour)
            line = item.plot(s["x"], s["y"], pen=styled_pen(colour), name=label, symbol="o",
                             symbolSize=7, symbolBrush=colour, symbolPen=None)
            self._curve_items += [band, line]
            ys += s["lo"] + s["hi"]
            for x, b in zip(s["x"], s["budget"]):
                ticks[x] = str(b) if b not in (None, "all") else "all"
        shown = []  # tick labels closer than ~0.15 decades overlap: "all" wins, else the first one
        for x, t in sorted(ticks.items()):
            if shown and math.log10(x) - shown[-1][0] < 0.15:
                if t == "all":
                    shown[-1] = (math.log10(x), t)
                continue
            shown.append((math.log10(x), t))
        set_tick_labels(item.getAxis("bottom"), shown)
        combo = self.curve_tab.combo.currentText()
        title = f"Label efficiency — {combo}" if combo else "Label efficiency"
        # a long title widens the plot's layout for good (pyqtgraph keeps the label's width): the hint
        # for a single budget goes into the tooltip instead
        self.curve_plot.setToolTip("One label budget: choose a label-efficiency curve under Labels to draw a curve."
                                   if len(ticks) == 1 else "")
        item.setTitle(title)
        if ticks:
            lo, hi = math.log10(min(ticks)), math.log10(max(ticks))
            pad = max(0.08 * (hi - lo), 0.1)
            item.getViewBox().enableAutoRange(x=False)
            item.setXRange(lo - pad, hi + pad, padding=0)
            # again once the widget has its final size (a range set on a tab not yet laid out was lost)
            QTimer.singleShot(0, lambda: item.setXRange(lo - pad, hi + pad, padding=0))
        chance = self._chance_percent(bool(series))
        add_chance_line(item, chance)
        leave_headroom(item, ys + ([chance] if chance is not None else []), len(series))
        apply_palette(self.curve_plot)

    def _update_stage_choices(self) -> None:
        budgets = sorted({r.get("per_class", "all") for r in self.rows}, key=budget_order, reverse=True)
        self.stage_tab.set_choices([(budget_text(b), b) for b in budgets])

    def stage_series(self, budget=None) -> tuple[list[str], dict[str, list[float | None]]]:
        """Stages (x) and, per "initialisation · mode" line, the test accuracy (fraction) at each stage,
        for one label budget (default: the selector's, else the largest); the engine's :func:`stage_series`."""
        if budget is None:
            budget = self.stage_tab.value()
        stages, self._series_rows = stage_series(self.rows, budget, self._stage_list())
        return stages, {name: [None if r is None else r.get("test_accuracy") for r in rows]
                        for name, rows in self._series_rows.items()}

    def _update_stage_plot(self, *_args) -> None:
        item = self.stage_plot.getPlotItem()
        for curve in list(self._stage_curves.values()) + self._stage_extra:
            item.removeItem(curve)
        self._stage_curves.clear()
        self._stage_extra = []
        if item.legend is not None:
            item.legend.clear()
        stages, series = self.stage_series()
        self._stage_axis.set_labels({k + 1: s for k, s in enumerate(stages)})
        styles = {"head": ("solid", "o"), "knn": ("dash", "s"), "all": ("dot", "t")}
        ys_all = []
        for name, values in series.items():
            if all(v is None for v in values):
                continue  # unavailable everywhere: the table says why
            rows = self._series_rows[name]
            first = next(r for r in rows if r is not None)
            style, symbol = styles.get(first.get("mode"), ("solid", "o"))
            colour = self._colour(str(first.get("init")))
            xs = np.arange(1, len(stages) + 1, dtype=float)
            ys = np.array([np.nan if v is None else 100 * v for v in values], dtype=float)
            curve = item.plot(xs, ys, pen=styled_pen(colour, style), name=name, symbol=symbol, symbolSize=8,
                              symbolBrush=colour, symbolPen=None, connect="finite")
            self._stage_curves[name] = curve
            ok = [k for k, r in enumerate(rows) if r is not None and r.get("ci_low") is not None
                  and r.get("test_accuracy") is not None]
            if ok:
                lo = np.array([100 * (rows[k]["test_accuracy"] - rows[k]["ci_low"]) for k in ok])
                hi = np.array([100 * (rows[k]["ci_high"] - rows[k]["test_accuracy"]) for k in ok])
                bars = pg.ErrorBarItem(x=xs[ok], y=ys[ok], top=hi, bottom=lo, beam=0.08, pen=styled_pen(colour,
                                                                                                          width=1.2))
                item.addItem(bars)
                self._stage_extra.append(bars)
                ys_all += list(ys[ok] - lo) + list(ys[ok] + hi)
            ys_all += [v for v in ys if np.isfinite(v)]
        if stages:
            item.setXRange(0.7, len(stages) + 0.3, padding=0)
        chance = self._chance_percent(bool(self._stage_curves))
        add_chance_line(item, chance)
        leave_headroom(item, ys_all + ([chance] if chance is not None else []), len(self._stage_curves))
        apply_palette(self.stage_plot)

    def _redraw_epochs(self, *_args) -> None:
        """The per-epoch curves of the selected initialisation (one line per budget and repeat)."""
        inits = []
        for key in self._epoch_data:
            if (key[1], key[0]) not in inits:
                inits.append((key[1], key[0]))
        self.epoch_tab.set_choices(inits)
        chosen = self.epoch_tab.value()
        item = self.plot.getPlotItem()
        wanted = [k for k in self._epoch_data if k[0] == chosen]
        for k in list(self._epoch_items):
            if k not in wanted:
                item.removeItem(self._epoch_items.pop(k))
        budgets = sorted({k[3] for k in wanted}, key=budget_order)
        styles = ("solid", "dash", "dot", "dashdot")
        rebuilt = False
        for k in sorted(wanted, key=lambda k: (budgets.index(k[3]), k[4])):
            xs, ys = self._epoch_data[k]
            curve = self._epoch_items.get(k)
            if curve is None:
                colour = PALETTE[budgets.index(k[3]) % len(PALETTE)]
                name = budget_text(k[3]) + f" · repeat {k[4] + 1}"
                curve = item.plot([], [], pen=styled_pen(colour, styles[k[4] % len(styles)]), name=name,
                                  symbol="o", symbolSize=5, symbolBrush=colour, symbolPen=None)
                self._epoch_items[k] = curve
                rebuilt = True
            curve.setData(np.asarray(xs, float), np.asarray(ys, float), connect="finite")
        item.setTitle(f"All-layer fine-tuning: {self.epoch_tab.combo.currentText()}"
                      if wanted else "All-layer fine-tuning: test accuracy per epoch")
        chance = self._chance_percent(bool(wanted))
        add_chance_line(item, chance)
        leave_headroom(item, [v for k in wanted for v in self._epoch_data[k][1]]
                       + ([chance] if chance is not None else []), len(wanted))
        if rebuilt:
            apply_palette(self.plot)

    # -- per-class view ------------------------------------------------------------------------
    def show_row(self, row: dict | None) -> None:
        """Per-class accuracy bars and the confusion matrix of ``row`` (None clears the view)."""
        self.selected_row = row
        item = self.class_plot.getPlotItem()
        if self._class_bars is not None:
            item.removeItem(self._class_bars)
            self._class_bars = None
        self.confusion.clear()
        self.confusion.setRowCount(0)
        self.confusion.setColumnCount(0)
        add_chance_line(item, None)
        if row is None:
            self.class_caption.setText("Select a cell of the table to see its per-class accuracy and "
                                       "confusion matrix.")
            set_tick_labels(self._class_axis, [])
            return
        classes = list(self.result["meta"].get("classes") or [])
        per = row.get("per_class_accuracy") or {}
        if not classes:
            classes = list(per)
        where = f"{row_label(row)} — {mode_label(row)}" + (f" at {row.get('layer')}" if row.get("mode") != "all"
                                                        else "") + f", {budget_text(row.get('per_class', 'all'))}"
        if not per and not row.get("confusion"):
            self.class_caption.setText(f"{where}: no per-class results in this row.")
            set_tick_labels(self._class_axis, [])
            return
        self.class_caption.setText(f"{where}: {cell_text(row)} % overall")
        names = [c for c in classes if c in per] or list(per)
        n = len(names)
        # horizontal bars, the first class on top
        ys = np.arange(n, 0, -1, dtype=float)
        widths = np.array([0.0 if per[c] is None else 100 * float(per[c]) for c in names])  # None: no test image
        colour = self._colour(str(row.get("init")))
        self._class_bars = pg.BarGraphItem(x0=np.zeros(n), y=ys, height=0.7, width=widths,
                                           brush=_tint(colour, 200), pen=pg.mkPen(None))
        item.addItem(self._class_bars)
        set_tick_labels(self._class_axis, [(float(y), name) for y, name in zip(ys, names)])
        item.setXRange(0, 100, padding=0.02)
        chance = add_chance_line(item, 100.0 / len(classes) if classes else None, vertical=True)
        top = max(0.9, 0.08 * (n + 1)) if chance is not None else 0.0  # room above the bars for its label
        item.setYRange(0.4, n + 0.6 + top, padding=0)
        confusion = row.get("confusion") or []
        if confusion:
            k = len(confusion)
            labels = classes if len(classes) == k else [str(i) for i in range(k)]
            self.confusion.setRowCount(k)
            self.confusion.setColumnCount(k)
            self.confusion.setHorizontalHeaderLabels([name[:3] for name in labels])
            self.confusion.setVerticalHeaderLabels(labels)
            for j, name in enumerate(labels):
                self.confusion.horizontalHeaderItem(j).setToolTip(f"predicted {name}")
            hl = self.palette().color(self.palette().ColorRole.Highlight)
            for i, counts in enumerate(confusion):
                total = sum(counts) or 1
                for j, v in enumerate(counts):
                    cell = QTableWidgetItem(str(int(v)))
                    cell.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                    share = v / total
                    if share >= 0.05:  # the diagonal in the highlight colour, confusions in red
                        c = QColor(hl) if i == j else QColor("#d62728")
                        c.setAlpha(int(40 + 160 * share))
                        cell.setBackground(c)
                    cell.setToolTip(f"true {labels[i]}, predicted {labels[j]}: {int(v)} "
                                    f"({100 * share:.0f} % of {labels[i]})")
                    self.confusion.setItem(i, j, cell)
        apply_palette(self.class_plot)

    # -- copy / save ---------------------------------------------------------------------------
    def copy_table(self) -> str:
        """Copy the results table to the clipboard, tab-separated; returns the text."""
        text = results_table(self.result, self._stage_list()).text()
        QGuiApplication.clipboard().setText(text)
        self.window_.statusBar().showMessage("Results table copied (tab-separated).", 5000)
        return text

    def save_table(self, path: str | None = None) -> Path | None:
        """Save the engine's results file (``results.md``, ``.csv`` or ``.json`` by the suffix of ``path``;
        asks for the file when ``path`` is None)."""
        if path is None:
            start = str((self.out_dir or self.window_.workspace) / "results.md")
            path, _ = QFileDialog.getSaveFileName(self, "Save the results", start,
                                                  "Markdown (*.md);;CSV (*.csv);;JSON (*.json)")
            if not path:
                return None
        path = Path(path)
        suffix = {".markdown": ".md"}.get(path.suffix.lower(), path.suffix.lower())
        source = (self.out_dir / f"results{suffix}") if self.out_dir else None
        if source is None or not source.is_file():
            message = (f"No results{suffix} from the engine for this comparison"
                       + (f" in {self.out_dir}" if self.out_dir else "") + "; save as .md, .csv or .json.")
            self.window_.statusBar().showMessage(message, 8000)
            self.status.setText(message)
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() != path.resolve():
            tmp = path.with_name(path.name + ".part")
            shutil.copyfile(source, tmp)
            tmp.replace(path)  # atomic: a failed copy never leaves half a file behind
        self.window_.statusBar().showMessage(f"Saved {path}", 5000)
        return path

    def show_results_for_run(self, run: str) -> str | None:
        """Show the newest comparison of the workspace that used ``run``, with the checks set to what it
        compared (so the results on screen belong to the selection on screen); returns its folder, or
        None (no such comparison, a comparison running, or the window restoring its state)."""
        if self.is_running() or self.restoring:
            return None
        found = latest_results_for(self.window_.workspace / "compare", run)
        if found is None:
            return None
        folder, result = found
        if not self.show_results(folder, result, apply=True):
            return None
        self.status.setText(f"Results of {folder.name} (a comparison that used {Path(run).name}).")
        return str(folder)

    def _on_finished(self, result) -> None:
        self.flush()
        result = normalise_result(result)
        self.set_result(result)
        rows = result["rows"]
        done = sum(1 for r in rows if r.get("test_accuracy") is not None)
        self.progress.setRange(0, max(len(rows), 1))
        self.progress.setValue(len(rows))
        secs = _fmt_seconds(result["meta"].get("time_s"))
        self.status.setText(f"Done: {done} of {len(rows)} row(s) ran" + (f" in {secs}" if secs else "")
                            + (f"; results in {self.out_dir}." if self.out_dir else "."))
        self.comparison_finished.emit(result)

    def _on_failed(self, message: str, details: str) -> None:
        from sslstudio.gui.window import window_words

        message = window_words(message)
        self.status.setText(f"<span style='color:#d62728'>Failed: {message}</span>")
        self.progress.setRange(0, 1)
        self.window_.log(details or message, "error")
        self.window_.show_error("Comparison failed", message)
        self.comparison_failed.emit(message)

    def _on_cancelled(self) -> None:
        self.progress.setRange(0, max(self.progress.maximum(), 1))
        self.status.setText(f"Stopped: {len(self.rows)} row(s) finished before the stop (kept in the table).")

    def _on_ended(self) -> None:
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self._set_inputs_enabled(True)

    def shutdown(self) -> None:
        self._timer.stop()
        self.jobs.stop_all()
