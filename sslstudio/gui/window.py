"""The main window: a step list (1 Data ... 5 Export, then 6 Explore) beside the pages, one workspace of runs."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QHBoxLayout, QListWidget, QMainWindow, QMessageBox, QStackedWidget, QWidget)

from sslstudio.gui.compare_page import ComparePage
from sslstudio.gui.data_page import DataPage
from sslstudio.gui.explore_page import ExplorePage
from sslstudio.gui.export_page import ExportPage
from sslstudio.gui.pretrain_page import PretrainPage
from sslstudio.gui.task_page import TaskPage
from sslstudio.gui.workers import Job, MainThreadGarbageCollector, share_one_malloc_arena
from sslstudio.runs import RunDir, list_runs

__all__ = ["MainWindow", "default_workspace", "window_words"]

STEPS = ("1  Data", "2  Pretext task", "3  Pretrain", "4  Fine-tune & compare", "5  Export", "6  Explore")


#: Command-line words the engine's messages may use, and what the window calls the same thing.
WINDOW_ACTIONS = {"--resume": "“Resume run” (step 3)", "--out": "run folder", "--init": "the initialisation",
                  "--baselines": "the baselines", "--weights": "“Choose weights file…” (step 4)",
                  "--checkpoint": "the checkpoint", "--trust-torchscript": "a trusted file",
                  "--option": "the task's settings (step 2)"}


@lru_cache(maxsize=1)
def _setting_names() -> dict[str, str]:
    """Each setting's flag -> its label in the window's forms (pretraining, comparison, fine-tuning)."""
    import dataclasses

    from sslstudio.engine.pretrain import PretrainConfig
    from sslstudio.evaluation.compare import CompareSettings
    from sslstudio.evaluation.finetuning import FinetuneConfig
    from sslstudio.settings import flag_of, label_of

    names = {}
    for cls in (FinetuneConfig, CompareSettings, PretrainConfig):  # the pretraining form's words win
        for f in dataclasses.fields(cls):
            names[flag_of(f)] = f"“{label_of(f)}”"
    return names


def window_words(message: str) -> str:
    """An engine message in the window's words: a command-line flag becomes the field or the action of the
    window (``lower --batch-size`` -> ``lower “Batch size”``; ``--resume`` -> ``“Resume run” (step 3)``).
    A message that already names both (``… on the command line, … in the window``) is left as it is."""
    if "--" not in message or "on the command line" in message:
        return message

    def name(match: re.Match) -> str:
        flag = match.group(0)
        words = flag[2:].replace("-", " ").capitalize()
        return WINDOW_ACTIONS.get(flag) or _setting_names().get(flag) or f"“{words}”"

    return re.sub(r"(?<![\w-])--[a-z][a-z0-9-]*", name, message)


#: The hint the status bar shows when a step has ended well: what to do next.
NEXT_STEPS = {
    "scan": "Next: choose a pretext task (step 2).",
    "preview": "Next: pretrain (step 3).",
    "run": "Next: compare it with baselines (step 4).",
    "comparison": "Next: export the backbone (step 5).",
    "export": "Next: look inside the backbone: maps, neighbours, shortcuts (step 6).",
    "exploration": "Next: click a point to see its nearest images; try another stage or initialisation.",
}


def default_workspace() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".sslstudio") / "workspace"


class MainWindow(QMainWindow):
    """The sslstudio window.

    Args:
        workspace: Folder for runs, comparisons and exports (default: the application data folder's
            ``workspace``). Runs go to ``<workspace>/runs/<task>-<timestamp>``.
        settings: Where geometry, recent folders and last settings persist (default: the user's
            ``QSettings("sslstudio", "sslstudio")``; tests pass an ini-file ``QSettings``).

    Attributes:
        confirm_close: Ask before closing while a job runs (tests set it to False).
        show_dialogs: Show error message boxes (tests set it to False; the status line still shows
            the error).
    """

    step_changed = Signal(int)

    def __init__(self, workspace: str | Path | None = None, settings: QSettings | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        share_one_malloc_arena()  # training in a worker thread as fast as in a command's main thread
        self.garbage = MainThreadGarbageCollector(self)  # Qt objects are never collected in a worker
        self.settings = settings if settings is not None else QSettings("sslstudio", "sslstudio")
        self.workspace = Path(workspace) if workspace else default_workspace()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.confirm_close = True
        self.show_dialogs = True
        self._jobs: set[Job] = set()
        self._closing = False
        self.next_hint = ""  # the last "Next: …" hint shown
        self._select_after_refresh: str | None = None  # a stopped run, selected once the run list is new
        self.setWindowTitle("sslstudio")
        self.setAcceptDrops(False)

        self.steps = QListWidget()
        self.steps.setObjectName("steps")
        self.steps.addItems(STEPS)
        self.steps.setFixedWidth(215)
        self.steps.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.stack = QStackedWidget()
        self.data_page = DataPage(self)
        self.pretrain_page = PretrainPage(self)
        self.task_page = TaskPage(self)
        self.compare_page = ComparePage(self)
        self.export_page = ExportPage(self)
        self.explore_page = ExplorePage(self)
        for page in (self.data_page, self.task_page, self.pretrain_page, self.compare_page, self.export_page,
                     self.explore_page):
            self.stack.addWidget(page)
        self.steps.currentRowChanged.connect(self._on_step)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.steps)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.statusBar().showMessage(f"Workspace: {self.workspace}")

        # wiring between steps
        self.data_page.scan_finished.connect(lambda _r: self.task_page.schedule_preview())
        self.task_page.task_changed.connect(self.pretrain_page.set_task_defaults)
        self.pretrain_page.image_size_box.valueChanged.connect(self.task_page.schedule_preview)
        self.pretrain_page.runs_changed.connect(self._on_runs_changed)
        self.pretrain_page.run_finished.connect(self._on_run_finished)
        # a "Next: …" hint after each step that ended well
        self.data_page.scan_finished.connect(lambda report: self.show_next("scan") if report.files else None)
        self.task_page.preview_ready.connect(self._on_preview_ready)
        self.pretrain_page.run_started.connect(lambda _path: self.clear_next())  # a run: the old hint is stale
        self.compare_page.comparison_finished.connect(
            lambda result: self.show_next("comparison")
            if any(r.get("test_accuracy") is not None for r in result.get("rows", [])) else None)
        self.export_page.export_finished.connect(lambda _paths: self.show_next("export"))
        self.explore_page.exploration_finished.connect(lambda _result: self.show_next("exploration"))

        self._make_actions()
        self._restore()
        self.pretrain_page.refresh_runs()
        self._restore_state()
        self.steps.setCurrentRow(0)

    # -- actions -------------------------------------------------------------------------------
    def _make_actions(self) -> None:
        def action(text, shortcuts, slot, tip):
            a = QAction(text, self)
            a.setShortcuts([QKeySequence(s) for s in shortcuts])
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.setToolTip(tip)
            a.triggered.connect(slot)
            self.addAction(a)
            return a

        self.open_action = action("Open folder…", ["Ctrl+O"], self.open_folder, "Choose the unlabelled folder")
        self.start_action = action("Start pretraining", ["Ctrl+R"], self.start_pretraining, "Start pretraining")
        self.stop_action = action("Stop", ["Esc", "Ctrl+."], self.stop_current, "Stop the running job")
        menu = self.menuBar().addMenu("&File")
        menu.addAction(self.open_action)
        # Ctrl+Q as documented: the platform's Quit key can be empty (offscreen, some desktops)
        self.quit_action = action("Quit", ["Ctrl+Q"], self.close, "Quit (asks first while a job runs)")
        menu.addAction(self.quit_action)
        run_menu = self.menuBar().addMenu("&Run")
        run_menu.addAction(self.start_action)
        run_menu.addAction(self.stop_action)

    def open_folder(self) -> None:
        self.go_to(0)
        self.data_page.choose_folder()

    def start_pretraining(self) -> None:
        self.go_to(2)
        self.pretrain_page.start()

    def stop_current(self) -> None:
        if self.pretrain_page.is_running():
            self.pretrain_page.stop()
        elif self.compare_page.is_running():
            self.compare_page.stop()
        elif self.explore_page.is_running():
            self.explore_page.stop()

    def go_to(self, step: int) -> None:
        self.steps.setCurrentRow(step)

    def _on_step(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        if row == 1:
            self.task_page.schedule_preview() if not self.task_page.samples else None
        self.step_changed.emit(row)

    def _on_runs_changed(self) -> None:
        runs = list_runs(self.workspace / "runs")
        self.compare_page.set_runs(runs)
        self.export_page.set_runs(runs)
        self.explore_page.set_runs(runs)
        if self._select_after_refresh:  # the stopped run: "Resume run" is enabled when it can be resumed
            self.pretrain_page.select_run(self._select_after_refresh)
            self._select_after_refresh = None

    def show_next(self, step: str) -> None:
        """Show the hint of what to do after ``step`` (a key of :data:`NEXT_STEPS`) in the status bar."""
        self.next_hint = NEXT_STEPS[step]
        self.statusBar().showMessage(self.next_hint)

    def clear_next(self) -> None:
        """Take a "Next: …" hint that no longer applies off the status bar (other messages stay)."""
        if self.next_hint and self.statusBar().currentMessage() == self.next_hint:
            self.statusBar().clearMessage()
        self.next_hint = ""

    def _on_preview_ready(self, n: int) -> None:
        if n and self.stack.currentWidget() is self.task_page:  # a preview after a scan: the scan's hint stays
            self.show_next("preview")

    def _on_run_finished(self, summary: dict) -> None:
        """After a run that learnt, the next step; after Stop, say in the window's words whether and how the
        run can be continued."""
        if summary.get("status") == "finished":
            self.show_next("run")
        if summary.get("status") != "cancelled":
            return
        path = self.pretrain_page.run_dir
        if path and RunDir(path).last_checkpoint.is_file():
            self._select_after_refresh = path
            text = (f"Stopped after epoch {summary.get('epochs_completed', 0)}; its checkpoint is kept. To continue "
                    "this run, press “Resume run” under the run list (the run is selected there).")
        else:
            text = ("Stopped before the first epoch ended: there is no checkpoint, so this run cannot be resumed. "
                    "Press Start to begin a new run.")
        self.pretrain_page.log(text)
        self.statusBar().showMessage(text, 20000)

    # -- jobs, messages ------------------------------------------------------------------------
    def track(self, job: Job) -> None:
        """Keep ``job`` alive until its thread ends; :meth:`wait_for_workers` waits for all."""
        self._jobs.add(job)
        job.ended.connect(lambda: self._jobs.discard(job))

    def running_jobs(self) -> list[Job]:
        return [j for j in self._jobs if j.is_running()]

    def wait_for_workers(self) -> None:
        """Cancel every job and wait for its thread; stop the thumbnail loader."""
        for page in (self.task_page, self.pretrain_page, self.compare_page, self.export_page, self.explore_page,
                     self.data_page):
            page.shutdown()
        for job in list(self._jobs):
            job.stop()
        self.garbage.stop()

    def log(self, message: str, level: str = "info") -> None:
        self.pretrain_page.log(window_words(message), level)

    def show_error(self, title: str, message: str) -> None:
        message = window_words(message)
        self.statusBar().showMessage(f"{title}: {message}", 15000)
        if self.show_dialogs and not self._closing:
            box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()  # window-modal, does not block the event loop

    # -- persistence ---------------------------------------------------------------------------
    def _restore(self) -> None:
        s = self.settings
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1200, 800)
        try:
            pretrain = json.loads(s.value("pretrain/values", "{}") or "{}")
            options = json.loads(s.value("task/options", "{}") or "{}")
        except (TypeError, ValueError):
            pretrain, options = {}, {}
        self.task_page.select_task(str(s.value("task/name", "rotation")), options)
        if pretrain:
            self.pretrain_page.set_values(pretrain)
        try:
            compare = json.loads(s.value("compare/values", "{}") or "{}")
        except (TypeError, ValueError):
            compare = {}
        compare.setdefault("labelled", str(s.value("compare/labelled", "") or ""))
        self.compare_page.set_values(compare)
        self._saved_compare = compare
        try:
            self._saved_explore = json.loads(s.value("explore/values", "{}") or "{}")
        except (TypeError, ValueError):
            self._saved_explore = {}

    def _restore_state(self) -> None:
        """What depends on the files (once the run list is filled): the data folder (scanned again), the
        selected run and its plots, the compare page's checks and its results."""
        s = self.settings
        folder = str(s.value("data/folder", "") or "")
        if folder:
            self.data_page.restore_folder(folder)
        page = self.pretrain_page
        shown = str(s.value("pretrain/shown_run", "") or "")
        selected = str(s.value("pretrain/selected_run", "") or "")
        self.compare_page.restoring = True  # opening the run must not replace the compare page's results
        try:
            if shown and page.select_run(shown):
                page.open_run(shown)
            if selected:
                page.select_run(selected)
        finally:
            self.compare_page.restoring = False
        self.compare_page.restore_state(self._saved_compare)
        self.explore_page.restore_state(self._saved_explore)

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("task/name", self.task_page.task_name())
        s.setValue("task/options", json.dumps(self.task_page.options()))
        s.setValue("pretrain/values", json.dumps(self.pretrain_page.values()))
        s.setValue("compare/labelled", self.compare_page.labelled.text())
        s.setValue("compare/values", json.dumps(self.compare_page.state()))
        s.setValue("explore/values", json.dumps(self.explore_page.state()))
        s.setValue("data/folder", self.data_page.folder or "")
        item = self.pretrain_page.runs.currentItem()
        s.setValue("pretrain/selected_run", str(item.data(0, Qt.ItemDataRole.UserRole) or "") if item else "")
        s.setValue("pretrain/shown_run", self.pretrain_page.shown_run or "")
        s.sync()

    def close_question(self) -> str | None:
        """What closing the window asks while a job runs (None when none does): which job, and what is kept."""
        if self.pretrain_page.is_running():
            return "Pretraining is running. Stop it and quit? (The last checkpoint is kept.)"
        if self.compare_page.is_running():
            return "A comparison is running. Stop it and quit? (The rows finished so far are written.)"
        if self.explore_page.is_running():
            return "An exploration is running. Stop it and quit?"
        return None

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        question = self.close_question()
        if question and self.confirm_close:
            answer = QMessageBox.question(self, "Quit sslstudio?", question,
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self._closing = True
        self.save_settings()
        self.wait_for_workers()
        event.accept()
