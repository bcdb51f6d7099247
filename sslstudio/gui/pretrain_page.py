"""Step 3, Pretrain: settings, Start / Pause / Resume / Stop, live plots, a log and the run list."""

from __future__ import annotations

import html
import time
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QFileDialog, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel, QMessageBox,
                               QPlainTextEdit, QProgressBar, QPushButton, QSplitter, QTreeWidget, QTreeWidgetItem,
                               QVBoxLayout, QWidget)

from sslstudio.data.cache import default_cache_dir
from sslstudio.engine import verdict
from sslstudio.engine.durations import clock
from sslstudio.engine.estimate import cpu_recipe, estimate_minutes, has_gpu, paper_recipe, recipe_text
from sslstudio.engine.pretrain import PretrainConfig, pretrain
from sslstudio.engine.pretrain import resume_config as engine_resume_config
from sslstudio.errors import ConfigError
from sslstudio.figures import metric_text, sig3
from sslstudio.gui.config_form import ConfigForm
from sslstudio.gui.plots import (PALETTE, LiveCurve, add_chance_line, legend_below, make_plot, reference_line,
                                 set_reference_line, stage_curve)
from sslstudio.gui.workers import Job, JobRunner
from sslstudio.models import list_archs
from sslstudio.runs import RunDir, new_run_path
from sslstudio.runs import list_runs as runs_in
from sslstudio.tasks import get_task
from sslstudio.tasks.contrastive import COLLAPSE_FRACTION, spread_text

__all__ = ["PretrainPage", "list_runs", "format_duration"]

#: The time estimate starts once the settings have not changed for this long.
ESTIMATE_DELAY_MS = 1000


def format_duration(seconds: float | None) -> str:
    """``m:ss`` / ``h:mm:ss`` (the engine's :func:`~sslstudio.engine.durations.clock`)."""
    return clock(seconds)


def list_runs(workspace: Path) -> list[dict]:
    """Runs under ``<workspace>/runs`` (:func:`sslstudio.runs.list_runs`)."""
    return runs_in(Path(workspace) / "runs")


def resume_config(path: str | Path, device: str | None = None, workers: int | None = None) -> PretrainConfig:
    """The config that continues the run in ``path`` from its last checkpoint: the run's own settings
    (decided by the engine's :func:`sslstudio.engine.resume_config`), optionally on another device or
    with other loader workers."""
    return engine_resume_config(path, device=device, workers=workers)


def _devices() -> list[tuple[str, str]]:
    """The device combo's ``(text, value)`` items: auto, cpu and each GPU found, with its name."""
    items = [("auto", "auto"), ("cpu", "cpu")]
    try:
        import torch

        for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            items.append((f"cuda:{i} ({torch.cuda.get_device_name(i)})", f"cuda:{i}"))
    except Exception:  # noqa: BLE001 - no GPU information: auto and cpu remain
        pass
    return items


class PretrainPage(QWidget):
    """Signals ``run_started(run_dir)``, ``run_finished(summary)`` and ``run_failed(message)``."""

    run_started = Signal(str)
    run_finished = Signal(dict)
    run_failed = Signal(str)
    runs_changed = Signal()
    checkpoint_saved = Signal(str)
    run_opened = Signal(str)

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.jobs = JobRunner(self, track=window.track)  # slot "pretrain": one run at a time
        self.job: Job | None = None
        self.run_dir: str | None = None
        self.shown_run: str | None = None
        self._last_step = None

        # -- settings: generated from PretrainConfig's declaration -----------------------------------
        self.monitor_browse = QPushButton("Browse…")
        self.monitor_browse.setToolTip("Choose the labelled folder of the kNN monitor")
        self.monitor_browse.clicked.connect(self.choose_monitor_folder)
        self.form = ConfigForm(PretrainConfig, choices={"arch": list_archs(), "device": _devices()},
                               beside={"monitor_labelled": self.monitor_browse})
        self.form.layout().setContentsMargins(0, 0, 0, 0)
        self.form.layout().setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        w = self.form.widget  # the widgets other pages, the tests and the session read by name
        self.arch, self.image_size_box, self.epochs, self.batch_size, self.lr = (
            w("arch"), w("image_size"), w("epochs"), w("batch_size"), w("lr"))
        self.device, self.precision, self.seed, self.workers, self.compile = (
            w("device"), w("precision"), w("seed"), w("workers"), w("compile"))
        self.monitor_folder, self.monitor_every = w("monitor_labelled"), w("monitor_every")
        self.arch.setMinimumContentsLength(14)
        self.monitor_folder.setClearButtonEnabled(True)
        self.monitor_folder.setPlaceholderText("off (optional labelled folder)")
        self.monitor_folder.textEdited.connect(self._monitor_edited)
        self.monitor_folder.textChanged.connect(lambda _t: self._update_knn_visibility())
        self._monitor_follow = True  # the field follows step 4's labelled folder until the user edits it

        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start pretraining (Ctrl+R)")
        self.start_button.setObjectName("primary")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current step; the last checkpoint is kept (Esc)")
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.resume_button, self.stop_button):
            buttons.addWidget(b)

        settings_box = QGroupBox("Pretraining")
        sl = QVBoxLayout(settings_box)
        sl.addWidget(self.form)
        sl.addWidget(self._make_recipe_box())
        self.estimate_label = QLabel("")
        self.estimate_label.setObjectName("estimate")
        self.estimate_label.setToolTip("Measured from a few timed training steps of these settings on this "
                                       "machine, extrapolated to the whole run (decoding and the kNN monitor "
                                       "not counted)")
        sl.addWidget(self.estimate_label)
        sl.addLayout(buttons)

        # -- run list ---------------------------------------------------------------------------
        self.runs = QTreeWidget()
        self.runs.setHeaderLabels(["Task", "Backbone", "Date", "Status", "Metric"])
        self.runs.setRootIsDecorated(False)
        self.runs.setAlternatingRowColors(True)
        header = self.runs.header()
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(40)
        self.runs.currentItemChanged.connect(lambda *_a: self._update_run_buttons())
        self.runs.itemDoubleClicked.connect(lambda item, _col: self.open_run(item.data(0, Qt.ItemDataRole.UserRole)))
        self.open_button = QPushButton("Show plots")
        self.open_button.setToolTip("Show the curves of the selected run and its latest comparison results "
                                    "(also: double-click)")
        self.open_button.clicked.connect(self._open_selected)
        self.resume_run_button = QPushButton("Resume run")
        self.resume_run_button.setToolTip("Continue the selected interrupted run from its last checkpoint, "
                                          "with its own settings")
        self.resume_run_button.setEnabled(False)
        self.resume_run_button.clicked.connect(self._resume_selected)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_runs)
        runs_box = QGroupBox("Runs in the workspace")
        rl = QVBoxLayout(runs_box)
        rl.addWidget(self.runs, 1)
        rb = QHBoxLayout()
        rb.addWidget(self.open_button)
        rb.addWidget(self.resume_run_button)
        rb.addWidget(refresh)
        rb.addStretch(1)
        rl.addLayout(rb)

        left = QWidget()
        left_l = QVBoxLayout(left)
        left_l.setContentsMargins(0, 0, 0, 0)
        title = QLabel("3 · Pretrain")
        title.setObjectName("pageTitle")
        left_l.addWidget(title)
        left_l.addWidget(settings_box)
        left_l.addWidget(runs_box, 1)

        # -- progress, plots, log ---------------------------------------------------------------
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("Idle.")
        self.status.setWordWrap(True)
        self.loss_plot = make_plot("Loss per step", "step", "loss", integer_x=True, legend="top-right")
        self.metric_plot = make_plot("Pretext metric per epoch", "epoch", "accuracy (%)", integer_x=True,
                                     legend="bottom-right")
        self._metric_name = "accuracy"  # the plot shows accuracies in percent (as the tables), PSNR in dB
        loss_item, metric_item = self.loss_plot.getPlotItem(), self.metric_plot.getPlotItem()
        self.loss_raw = LiveCurve(loss_item, "loss", PALETTE[0], width=1, alpha=110)
        self.loss_smooth = LiveCurve(loss_item, "smoothed", PALETTE[0], width=2.5, smoothed=True)
        self.metric_train = LiveCurve(metric_item, "train", PALETTE[1], symbol="o")
        self.metric_val = LiveCurve(metric_item, "held-out", PALETTE[2], symbol="s")
        self.curves = [self.loss_raw, self.loss_smooth, self.metric_train, self.metric_val]
        self.knn_plot = make_plot("kNN accuracy per epoch", "epoch", "kNN accuracy (%)", integer_x=True,
                                  legend="none")
        legend_below(self.knn_plot, columns=2)  # eight names would cover the curves inside the plot
        self.knn_plot.setToolTip("kNN accuracy of each stage's frozen features on the monitor's labelled "
                                 "folder; dashed: the same for a randomly initialised backbone")
        self.knn_curves: dict[str, LiveCurve] = {}  # stage -> accuracy per epoch
        self.knn_random: dict[str, object] = {}  # stage -> dashed random-init line
        self._knn_random_values: dict[str, float] = {}
        self._knn_epochs = 1
        self.spread_plot = make_plot("Projection spread", "epoch", "spread", integer_x=True, legend="none")
        legend_below(self.spread_plot, columns=2)  # the curve runs near the top, the floor's label at the foot
        self.spread_plot.setToolTip("Two-view tasks: the per-dimension standard deviation of the L2-normalised "
                                    "projections, averaged over the dimensions (SimSiam's collapse check). Well "
                                    "spread outputs sit near 1/sqrt(d); near zero every image maps to one point.")
        spread_item = self.spread_plot.getPlotItem()
        self.spread_curve = LiveCurve(spread_item, "spread", PALETTE[3], symbol="o")
        self.spread_healthy = reference_line(spread_item, "well spread", 2)  # 1/sqrt(d): in the tooltip
        self._spread_epochs = 1
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText("Log")
        right = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.progress)
        tl.addWidget(self.status)
        plots_row = QHBoxLayout()
        plots_row.setContentsMargins(0, 0, 0, 0)
        plots_row.addWidget(self.loss_plot, 1)
        plots_row.addWidget(self.knn_plot, 1)
        tl.addLayout(plots_row, 3)  # the kNN plot's legend takes a row of its own
        metric_row = QHBoxLayout()
        metric_row.setContentsMargins(0, 0, 0, 0)
        metric_row.addWidget(self.metric_plot, 1)
        metric_row.addWidget(self.spread_plot, 1)  # shown only for runs that report a spread
        tl.addLayout(metric_row, 2)
        right.addWidget(top)
        right.addWidget(self.log_view)
        right.setSizes([560, 140])

        outer = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(left)
        outer.addWidget(right)
        outer.setStretchFactor(1, 1)
        outer.setSizes([420, 760])
        layout = QVBoxLayout(self)
        layout.addWidget(outer)

        self._timer = QTimer(self)
        self._timer.setInterval(100)  # ~10 Hz redraws, however fast steps arrive
        self._timer.timeout.connect(self.flush)
        self._timer.start()
        self.set_idle()
        self._running_path: str | None = None
        self._update_knn_visibility()
        self.spread_plot.setVisible(False)
        self._estimate_timer = QTimer(self)  # the estimate waits until the settings rest for a second
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(ESTIMATE_DELAY_MS)
        self._estimate_timer.timeout.connect(self.start_estimate)
        self.form.changed.connect(self.schedule_estimate)
        self._update_recipe_box()
        QTimer.singleShot(0, self._follow_labelled_folder)  # step 4's page exists once the window is built
        QTimer.singleShot(0, self._follow_data_folder)

    # -- settings ------------------------------------------------------------------------------
    def image_size(self) -> int:
        return self.image_size_box.value()

    def set_task_defaults(self, task_name: str) -> None:
        """Follow the task: the recipe's fields the user has not typed take the task's values (its paper
        recipe, or its CPU recipe after "Use the CPU recipe"); typed ones are kept, and the paper's
        values are offered beside the recipe buttons instead."""
        try:
            task = get_task(task_name)
        except Exception:  # noqa: BLE001
            return
        self._task_name = task_name
        recipe = self._recipe_for(task_name, self._recipe_kind)
        self.form.set_values({n: v for n, v in recipe.items() if not self.form.is_edited(n)})
        self.set_metric(task.metric_name)
        self._update_recipe_box()
        self.schedule_estimate()

    def values(self) -> dict:
        """The form's settings (what the session keeps), the monitor folder as text, the fields the user
        typed and the recipe the others follow."""
        v = self.form.all_values()
        return {**v, "monitor_labelled": v["monitor_labelled"] or "", "monitor_follow": self._monitor_follow,
                "edited": self.form.edited(), "recipe": self._recipe_kind}

    def set_values(self, v: dict) -> None:
        v = dict(v)
        if isinstance(v.get("monitor_follow"), bool):
            self._monitor_follow = v["monitor_follow"]
        if self._monitor_follow or not isinstance(v.get("monitor_labelled"), str):
            v.pop("monitor_labelled", None)  # the field follows step 4's folder
        edited, kind = v.pop("edited", None), v.pop("recipe", None)
        self.form.set_values(v)
        if isinstance(edited, list):
            self.form.set_edited(edited)
        if kind in ("paper", "cpu"):
            self._recipe_kind = kind
        self._update_recipe_box()

    # -- recipes and the time estimate -----------------------------------------------------------
    def _make_recipe_box(self) -> QFrame:
        """The paper's recipe and, without a GPU, a CPU-sized one, each with its button."""
        self._task_name = "rotation"
        self._recipe_kind = "paper"  # what untyped recipe fields follow on a task change
        self.gpu = has_gpu()
        box = QFrame()
        box.setObjectName("recipeBox")
        box.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(8, 6, 8, 6)
        self.recipe_note = QLabel()
        self.recipe_note.setWordWrap(True)
        self.recipe_note.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.recipe_note)
        row = QHBoxLayout()
        self.cpu_recipe_button = QPushButton("Use the CPU recipe")
        self.cpu_recipe_button.setToolTip("Fill the form with a recipe sized for this machine's CPU "
                                          "(a run of about 5-20 minutes on 2 cores for 4,000 images)")
        self.cpu_recipe_button.clicked.connect(lambda: self.use_recipe("cpu"))
        self.cpu_recipe_button.setVisible(not self.gpu)
        self.paper_recipe_button = QPushButton("Use the paper's recipe")
        self.paper_recipe_button.setToolTip("Fill the form with the task's paper recipe (epochs, batch size, "
                                            "learning rate) at the default backbone and image size")
        self.paper_recipe_button.clicked.connect(lambda: self.use_recipe("paper"))
        row.addWidget(self.cpu_recipe_button)
        row.addWidget(self.paper_recipe_button)
        row.addStretch(1)
        layout.addLayout(row)
        self.recipe_box = box
        return box

    @staticmethod
    def _recipe_for(task_name: str, kind: str) -> dict:
        return cpu_recipe(task_name) if kind == "cpu" else paper_recipe(task_name)

    def use_recipe(self, kind: str) -> None:
        """Fill the form with the task's ``"cpu"`` or ``"paper"`` recipe; its fields then follow the task."""
        if self.is_running():
            return
        self._recipe_kind = kind
        self.form.set_values(self._recipe_for(self._task_name, kind))
        self._update_recipe_box()

    def _update_recipe_box(self) -> None:
        """Say which recipes there are, and offer the paper's values where typed ones differ from them."""
        name = self._task_name
        paper = paper_recipe(name)
        shown = self.form.all_values()
        kept = [n for n in ("epochs", "batch_size", "lr") if self.form.is_edited(n) and shown.get(n) != paper[n]]
        if kept:
            words = {"epochs": "epochs", "batch_size": "batch size", "lr": "learning rate"}
            offer = (f"<b>Paper's values for {html.escape(name)}: {paper['epochs']} epochs, batch "
                     f"{paper['batch_size']}, lr {paper['lr']:.3g}</b> (your {', '.join(words[n] for n in kept)} "
                     "kept) — “Use the paper's recipe” fills them in.")
        else:
            offer = f"Paper's recipe for {html.escape(name)}: {html.escape(recipe_text(paper))}."
        if self.gpu:
            self.recipe_note.setText(offer)
        else:
            cpu = recipe_text(cpu_recipe(name))
            self.recipe_note.setText(f"This machine has no GPU.<br>{offer}<br>CPU recipe for {html.escape(name)}: "
                                     f"{html.escape(cpu)}.")

    def schedule_estimate(self) -> None:
        """Estimate again once the settings have rested for :data:`ESTIMATE_DELAY_MS`."""
        if not self.is_running():
            self._estimate_timer.start()

    def _follow_data_folder(self) -> None:
        data = getattr(self.window_, "data_page", None)
        if data is not None:
            data.scan_finished.connect(lambda _report: self.schedule_estimate())
        task_page = getattr(self.window_, "task_page", None)
        if task_page is not None:
            task_page.form.changed.connect(self.schedule_estimate)  # the task's options change its cost
            self._task_name = task_page.task_name()
            self._update_recipe_box()
        self.schedule_estimate()

    def estimate_config(self) -> PretrainConfig | None:
        """The run Start would make (``None``: no folder yet, or a setting out of range)."""
        data = getattr(self.window_, "data_page", None)
        task_page = getattr(self.window_, "task_page", None)
        if data is None or task_page is None or not data.folder or not data.image_count():
            return None
        try:
            self.form.check()
            return PretrainConfig(task=task_page.task_name(), data=data.folder, out="", **self.form.all_values(),
                                  task_options=task_page.options())
        except (ConfigError, TypeError, ValueError):
            return None

    def start_estimate(self) -> None:
        """Time a few steps of the current settings in the background (the "estimate" slot: a newer
        request replaces an older one, whose result is then dropped)."""
        if self.is_running():
            return
        config = self.estimate_config()
        if config is None:
            self.jobs.cancel("estimate")
            self.estimate_label.setText("")
            return
        self.estimate_label.setText("Estimating the time of this run…")
        self.jobs.start("estimate", estimate_minutes, config, self.window_.data_page.image_count(),
                        on_result=self._on_estimate, on_error=self._on_estimate_failed, pass_control=True)

    def _on_estimate(self, estimate) -> None:
        self.estimate_label.setText(f"<b>{html.escape(estimate.text())}</b> ({estimate.epochs} epochs of "
                                    f"{estimate.steps_per_epoch} steps, {estimate.samples_per_s:,.0f} samples/s)")

    def _on_estimate_failed(self, message: str, _details: str) -> None:
        self.estimate_label.setText(f"No time estimate: {html.escape(message)}")

    # -- kNN monitor -----------------------------------------------------------------------------
    def _follow_labelled_folder(self) -> None:
        """Default the monitor folder to step 4's labelled folder (until the user edits this field)."""
        compare = getattr(self.window_, "compare_page", None)
        field = getattr(compare, "labelled", None)
        if field is None:
            return
        field.textChanged.connect(self._labelled_folder_changed)
        self._labelled_folder_changed(field.text())

    def _labelled_folder_changed(self, text: str) -> None:
        if self._monitor_follow and not self.is_running():
            self.monitor_folder.setText(text.strip())

    def _monitor_edited(self, _text: str) -> None:
        self._monitor_follow = False

    def choose_monitor_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the labelled folder of the kNN monitor",
                                                  self.monitor_folder.text())
        if folder:
            self.monitor_folder.setText(folder)
            self._monitor_follow = False

    def _update_knn_visibility(self) -> None:
        """The kNN plot shows when a monitor folder is set or the shown run has monitor figures."""
        has_data = any(c.points() for c in self.knn_curves.values())
        self.knn_plot.setVisible(bool(self.monitor_folder.text().strip()) or has_data)

    def _knn_curves_for(self, stages) -> None:
        """One curve and one dashed random-init line per stage (made again only when the stages change)."""
        stages = list(stages)
        if stages == list(self.knn_curves):
            return
        item = self.knn_plot.getPlotItem()
        for curve in self.knn_curves.values():
            item.removeItem(curve.item)
        for line in self.knn_random.values():
            item.removeItem(line)
        self.knn_curves, self.knn_random, self._knn_random_values = {}, {}, {}
        for i, stage in enumerate(stages):  # legend in two columns: each stage beside its reference
            self.knn_curves[stage] = stage_curve(item, stage, i)
            self.knn_random[stage] = reference_line(item, f"{stage} random init", i)

    def add_monitor_point(self, epoch: int, knn: dict, random: dict | None, epochs: int | None = None,
                          chance: float | None = None) -> None:
        """Append one epoch's monitor figures (0-1 accuracies, plotted in %; ``chance``: one over the
        monitor folder's classes, drawn as a line)."""
        self._knn_curves_for(knn)
        if chance is not None:
            add_chance_line(self.knn_plot, 100.0 * chance)
        self._knn_epochs = max(self._knn_epochs, int(epochs or 0), int(epoch))
        for stage, acc in knn.items():
            self.knn_curves[stage].append(epoch, None if acc is None else 100.0 * acc)
        for stage, acc in (random or {}).items():
            if stage in self.knn_random and acc is not None:
                self._knn_random_values[stage] = 100.0 * acc
        for stage, y in self._knn_random_values.items():
            set_reference_line(self.knn_random[stage], y, 1, max(self._knn_epochs, 2))
        self._update_knn_visibility()

    def add_spread_point(self, epoch: int, figures: dict, epochs: int | None = None) -> None:
        """Plot an epoch's collapse figures (``collapse_std``, ``collapse_healthy``) when it has them: the
        spread, the well-spread level as a dashed line and the collapse threshold as the grey line."""
        value, healthy = figures.get("collapse_std"), figures.get("collapse_healthy")
        if value is None or not healthy:
            return
        self.spread_curve.append(epoch, value)
        self._spread_epochs = max(self._spread_epochs, int(epochs or 0), int(epoch))
        set_reference_line(self.spread_healthy, healthy, 1, max(self._spread_epochs, 2))
        floor = COLLAPSE_FRACTION * healthy
        add_chance_line(self.spread_plot, floor, f"collapsed below {floor:.4f}")
        self.spread_plot.setVisible(True)

    # -- state ---------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.job is not None and self.job.is_running()

    def set_idle(self) -> None:
        self._update_run_buttons()
        self.start_button.setEnabled(True)
        self.pause_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        self.stop_button.setEnabled(False)
        for w in self.settings_widgets():
            w.setEnabled(True)
        for b in (self.cpu_recipe_button, self.paper_recipe_button):
            b.setEnabled(True)

    def settings_widgets(self) -> tuple:
        """Every widget of a run setting (the form's, and the monitor's Browse…): none may change while a run
        goes on (a running job has read them already), so all are disabled until it ends."""
        return (*(self.form.widget(name) for name in self.form.names()), self.monitor_browse)

    def _set_running(self) -> None:
        self.resume_run_button.setEnabled(False)
        self.start_button.setEnabled(False)
        self.pause_button.setEnabled(True)
        self.resume_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        for w in self.settings_widgets():
            w.setEnabled(False)
        for b in (self.cpu_recipe_button, self.paper_recipe_button):
            b.setEnabled(False)

    def clear_plots(self) -> None:
        for c in self.curves:
            c.clear()
        for c in self.knn_curves.values():
            c.clear()
        for line in self.knn_random.values():
            set_reference_line(line, None, 0, 0)
        self._knn_random_values = {}
        self._knn_epochs = 1
        self._update_knn_visibility()
        self.set_chance(None)
        add_chance_line(self.knn_plot, None)
        self.spread_curve.clear()
        set_reference_line(self.spread_healthy, None, 0, 0)
        add_chance_line(self.spread_plot, None)
        self._spread_epochs = 1
        self.spread_plot.setVisible(False)

    def set_metric(self, metric: str) -> None:
        """Name the pretext plot's y axis after ``metric``: accuracies in percent, PSNR in dB."""
        self._metric_name = metric or "accuracy"
        label = {"accuracy": "accuracy (%)", "psnr": "PSNR (dB)"}.get(self._metric_name, self._metric_name)
        self.metric_plot.getPlotItem().setLabel("left", label)

    def metric_value(self, value: float | None) -> float | None:
        """A pretext metric's value in the plot's units (accuracies x100, as percent)."""
        if value is None:
            return None
        return 100.0 * value if self._metric_name.endswith("accuracy") else value

    def set_chance(self, chance: float | None) -> None:
        """Draw the pretext metric's chance level (a fraction) as a labelled dashed line in the plot's units
        (``None``: none)."""
        add_chance_line(self.metric_plot, self.metric_value(chance),
                        None if chance is None else f"chance {metric_text(self._metric_name, chance)}")

    def new_run_dir(self, task: str) -> Path:
        return new_run_path(self.window_.workspace / "runs", task)

    # -- actions -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.is_running():
            return
        data = self.window_.data_page
        if not data.folder:
            QMessageBox.information(self, "sslstudio", "Choose a folder of unlabelled images first (step 1).") \
                if self.window_.show_dialogs else None
            self.status.setText("Choose a folder of unlabelled images first (step 1).")
            self.run_failed.emit("no folder")
            return
        try:
            self.form.check()  # the declaration's ranges, with its sentence, before a folder is made
        except ConfigError as exc:
            self.status.setText(f"<span style='color:#d62728'>Cannot start: {exc}</span>")
            self.window_.show_error("Cannot start pretraining", str(exc))
            self.run_failed.emit(str(exc))
            return
        task = self.window_.task_page.task_name()
        out = self.new_run_dir(task)
        config = PretrainConfig(task=task, data=data.folder, out=str(out), **self.form.all_values(),
                                task_options=self.window_.task_page.options(),
                                cache_dir=str(default_cache_dir()))  # the CLI's rule: one cache for both
        self.clear_plots()
        self.log(f"run {out}")
        self._launch(config)

    def resume_run(self, path: str) -> bool:
        """Continue the interrupted run in ``path`` from its last checkpoint (its own settings; this
        page's device and loader workers). Returns False if it cannot be resumed."""
        if self.is_running() or not path:
            return False
        run = RunDir(path)
        if not run.last_checkpoint.is_file():
            self.status.setText(f"{Path(path).name} has no checkpoint to resume from.")
            return False
        try:
            config = resume_config(path, self.device.currentData(), self.workers.value())
        except Exception as exc:  # noqa: BLE001 - an unreadable run: say so
            self.status.setText(f"Cannot resume {Path(path).name}: {exc}")
            return False
        self.open_run(path)  # the curves so far; new steps append to them
        self.log(f"resuming {path}")
        self._launch(config)
        return True

    def _launch(self, config: PretrainConfig) -> None:
        out = config.out
        self.run_dir = str(out)
        self.shown_run = str(out)
        self._running_path = str(out)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText("Resuming…" if config.resume else "Starting…")
        self._set_running()
        self._estimate_timer.stop()
        self.jobs.cancel("estimate")  # the run's own progress line takes over
        self._t0 = time.perf_counter()
        self.job = self.jobs.start("pretrain", pretrain, config, on_event=self.on_event, on_error=self._on_failed,
                                   on_result=self._on_finished, on_ended=self._on_ended, pass_control=True,
                                   replace=False)
        self.run_started.emit(str(out))

    def pause(self) -> None:
        if self.is_running():
            self.job.pause()
            self.pause_button.setEnabled(False)
            self.resume_button.setEnabled(True)
            self.status.setText(self.status.text() + " — paused")
            self.log("paused")

    def resume(self) -> None:
        if self.is_running():
            self.job.resume()
            self.pause_button.setEnabled(True)
            self.resume_button.setEnabled(False)
            self.log("resumed")

    def stop(self) -> None:
        if self.is_running():
            self.job.cancel()
            self.stop_button.setEnabled(False)
            self.pause_button.setEnabled(False)
            self.resume_button.setEnabled(False)
            self.status.setText("Stopping after the current step…")

    # -- events --------------------------------------------------------------------------------
    def on_event(self, ev) -> None:
        kind = ev.kind
        if kind == "step":
            self.loss_raw.append(ev.global_step, ev.loss)
            self.loss_smooth.append(ev.global_step, ev.loss)
            self._last_step = ev
        elif kind == "epoch":
            if ev.metric_name != self._metric_name:
                self.set_metric(ev.metric_name)
            self.set_chance(ev.chance)
            self.metric_train.append(ev.epoch + 1, self.metric_value(ev.train_metric))
            if ev.val_metric is not None:
                self.metric_val.append(ev.epoch + 1, self.metric_value(ev.val_metric))
            val = (f", held-out {ev.metric_name} {metric_text(ev.metric_name, ev.val_metric)}"
                   if ev.val_metric is not None else "")
            train = metric_text(ev.metric_name, ev.train_metric)
            self.log(f"epoch {ev.epoch + 1}/{ev.epochs}: loss {sig3(ev.train_loss)}, {ev.metric_name} {train}{val}")
            spread = spread_text(ev.extra)
            if spread:
                self.add_spread_point(ev.epoch + 1, ev.extra, ev.epochs)
                self.log(f"epoch {ev.epoch + 1}: {spread}")
            knn = ev.extra.get("monitor_knn")
            if knn:
                random = ev.extra.get("monitor_knn_random")
                self.add_monitor_point(ev.epoch + 1, knn, random, ev.epochs, ev.extra.get("monitor_chance"))
                from sslstudio.evaluation.monitor import format_monitor

                self.log(f"epoch {ev.epoch + 1}: {format_monitor(knn, random)} "
                         f"in {ev.extra.get('monitor_s', 0):.1f} s")
        elif kind == "checkpoint":
            self.log(f"checkpoint saved: {ev.path}{' (best)' if ev.best else ''}")
            self.checkpoint_saved.emit(ev.path)
        elif kind == "log":
            self.log(ev.message, ev.level)
        elif kind == "finished":
            pass

    def flush(self) -> None:
        """Redraw what arrived since the last tick (called by the ~10 Hz timer)."""
        for c in (*self.curves, *self.knn_curves.values(), self.spread_curve):
            c.flush()
        ev = self._last_step
        if ev is not None:
            self._last_step = None
            self.progress.setRange(0, max(ev.total_steps, 1))
            self.progress.setValue(ev.global_step)
            metric = f", {ev.metric_name} {metric_text(ev.metric_name, ev.metric)}" if ev.metric is not None else ""
            self.progress.setFormat(f"%p%  step {ev.global_step}/{ev.total_steps}")
            paused = " — paused" if self.job is not None and self.job.control.paused else ""
            self.status.setText(f"Epoch {ev.epoch + 1}/{ev.epochs}, step {ev.step}/{ev.steps_per_epoch}: "
                                f"loss {sig3(ev.loss)}{metric} · {sig3(ev.images_per_s)} images/s "
                                f"({sig3(ev.samples_per_s)} samples/s) · elapsed {format_duration(ev.elapsed_s)}"
                                f" · ETA {format_duration(ev.eta_s)}{paused}")

    def _on_finished(self, summary: dict) -> None:
        self.flush()
        status = summary.get("status", verdict.FINISHED)
        text = verdict.outcome(summary, cli=False)
        colour = {verdict.NOT_LEARNT: "#b35900", verdict.DIVERGED: "#d62728"}.get(status)
        if status != verdict.CANCELLED:
            self.progress.setValue(self.progress.maximum())
        self.set_chance(summary.get("chance"))
        self.status.setText(f"<span style='color:{colour}'>{html.escape(text)}</span>" if colour else html.escape(text))
        self.log(text, "warning" if colour else "info")
        self.run_finished.emit(summary)

    def _on_failed(self, message: str, details: str) -> None:
        from sslstudio.gui.window import window_words  # the window's words for the engine's flags

        self.flush()
        message = window_words(message)
        self.status.setText(f"<span style='color:#d62728'>Failed: {message}</span>")
        self.log(details or message, "error")
        self.window_.show_error("Pretraining failed", message)
        self.run_failed.emit(message)

    def _on_ended(self) -> None:
        self._running_path = None
        self.set_idle()
        self.refresh_runs()

    def log(self, message: str, level: str = "info") -> None:
        prefix = {"warning": "warning: ", "error": "error: "}.get(level, "")
        self.log_view.appendPlainText(f"{datetime.now():%H:%M:%S}  {prefix}{message}")

    # -- run list ------------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        self.runs.clear()
        for r in list_runs(self.window_.workspace):
            value = metric_text(r["metric"] or "", r["value"]) if isinstance(r["value"], (int, float)) else ""
            item = QTreeWidgetItem([r["task"], r["arch"], r["date"][5:], r["status"], value])
            item.setData(0, Qt.ItemDataRole.UserRole, r["path"])
            item.setData(3, Qt.ItemDataRole.UserRole, bool(r["resumable"]))
            for col in range(5):
                item.setToolTip(col, f"{r['path']}\n{r['date']}, {r['metric']} {value or 'n/a'}"
                                + ("\ninterrupted: can be resumed" if r["resumable"] else ""))
            self.runs.addTopLevelItem(item)
        for col in range(4):
            self.runs.resizeColumnToContents(col)
        self._update_run_buttons()
        self.runs_changed.emit()

    def select_run(self, path: str) -> bool:
        for i in range(self.runs.topLevelItemCount()):
            item = self.runs.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == str(path):
                self.runs.setCurrentItem(item)
                return True
        return False

    def _update_run_buttons(self) -> None:
        item = self.runs.currentItem()
        resumable = bool(item is not None and item.data(3, Qt.ItemDataRole.UserRole))
        self.resume_run_button.setEnabled(resumable and not self.is_running())
        self.open_button.setEnabled(item is not None)

    def _resume_selected(self) -> None:
        item = self.runs.currentItem()
        if item is not None:
            self.resume_run(item.data(0, Qt.ItemDataRole.UserRole))

    def _open_selected(self) -> None:
        item = self.runs.currentItem()
        if item is not None:
            self.open_run(item.data(0, Qt.ItemDataRole.UserRole))

    def open_run(self, path: str) -> int:
        """Show a finished run's curves from its ``metrics.jsonl``; returns the points loaded."""
        if not path or self.is_running():
            return 0
        run = RunDir(path)
        try:
            config = run.read_config()
        except Exception as exc:  # noqa: BLE001
            self.status.setText(str(exc))
            return 0
        metric = config.get("metric", "accuracy")
        self.set_metric(metric)
        self.clear_plots()
        n = 0
        for r in run.iter_metrics():
            if r.get("type") == "step":
                self.loss_raw.append(r["global_step"], r.get("loss"))
                self.loss_smooth.append(r["global_step"], r.get("loss"))
            elif r.get("type") == "epoch":
                self.metric_train.append(r["epoch"] + 1, self.metric_value(r.get(f"train_{metric}")))
                if r.get(f"val_{metric}") is not None:
                    self.metric_val.append(r["epoch"] + 1, self.metric_value(r.get(f"val_{metric}")))
                self.add_spread_point(r["epoch"] + 1, r, config.get("epochs"))
                if r.get("monitor_knn"):
                    self.add_monitor_point(r["epoch"] + 1, r["monitor_knn"], r.get("monitor_knn_random"),
                                           config.get("epochs"), r.get("monitor_chance"))
            n += 1
        self.flush()
        self.shown_run = path
        summary = run.read_summary() or {}
        self.set_chance(summary.get("chance"))
        found = self.window_.compare_page.show_results_for_run(path)
        ended = (verdict.outcome(summary, cli=False) if summary else
                 "interrupted." if run.last_checkpoint.is_file() else "no summary.")
        self.status.setText(html.escape(f"Showing {Path(path).name}: {config.get('task')} / {config.get('arch')}. "
                                        f"{ended}") + (f" Comparison results in step 4 ({Path(found).name})."
                                                      if found else ""))
        self.run_opened.emit(path)
        return n

    def shutdown(self) -> None:
        self._timer.stop()
        self._estimate_timer.stop()
        self.jobs.stop_all()
