"""The main window: a step list (1 Data ... 5 Export) beside the pages, one workspace of runs."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QHBoxLayout, QListWidget, QMainWindow, QMessageBox, QStackedWidget, QWidget)

from sslstudio.gui.compare_page import ComparePage
from sslstudio.gui.data_page import DataPage
from sslstudio.gui.export_page import ExportPage
from sslstudio.gui.pretrain_page import PretrainPage
from sslstudio.gui.task_page import TaskPage
from sslstudio.gui.workers import Job, MainThreadGarbageCollector, share_one_malloc_arena
from sslstudio.runs import list_runs

__all__ = ["MainWindow", "default_workspace"]

STEPS = ("1  Data", "2  Pretext task", "3  Pretrain", "4  Fine-tune & compare", "5  Export")


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
        for page in (self.data_page, self.task_page, self.pretrain_page, self.compare_page, self.export_page):
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

        self._make_actions()
        self._restore()
        self.pretrain_page.refresh_runs()
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
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        menu.addAction(quit_action)
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

    # -- jobs, messages ------------------------------------------------------------------------
    def track(self, job: Job) -> None:
        """Keep ``job`` alive until its thread ends; :meth:`wait_for_workers` waits for all."""
        self._jobs.add(job)
        job.ended.connect(lambda: self._jobs.discard(job))

    def running_jobs(self) -> list[Job]:
        return [j for j in self._jobs if j.is_running()]

    def wait_for_workers(self) -> None:
        """Cancel every job and wait for its thread; stop the thumbnail loader."""
        for page in (self.task_page, self.pretrain_page, self.compare_page, self.export_page, self.data_page):
            page.shutdown()
        for job in list(self._jobs):
            job.stop()
        self.garbage.stop()

    def log(self, message: str, level: str = "info") -> None:
        self.pretrain_page.log(message, level)

    def show_error(self, title: str, message: str) -> None:
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

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("task/name", self.task_page.task_name())
        s.setValue("task/options", json.dumps(self.task_page.options()))
        s.setValue("pretrain/values", json.dumps(self.pretrain_page.values()))
        s.setValue("compare/labelled", self.compare_page.labelled.text())
        s.setValue("compare/values", json.dumps(self.compare_page.values()))
        s.sync()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        busy = self.pretrain_page.is_running() or self.compare_page.is_running()
        if busy and self.confirm_close:
            answer = QMessageBox.question(self, "Quit sslstudio?",
                                          "A job is running. Stop it and quit? (The last checkpoint is kept.)",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self._closing = True
        self.save_settings()
        self.wait_for_workers()
        event.accept()
