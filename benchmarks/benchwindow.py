"""The window as the benchmarks open it: offscreen unless there is a display, no dialogs, its own
workspace and settings file in a given folder (shared by the benchmark scripts beside this file)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def application():
    """The QApplication with sslstudio's style (offscreen when there is no display)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from sslstudio.gui.app import apply_style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_style(app)
    return app


def open_window(folder: Path):
    """A shown 1200x800 MainWindow with workspace ``folder/workspace`` and settings in ``folder``."""
    from PySide6.QtCore import QSettings

    from sslstudio.gui.window import MainWindow

    application()
    window = MainWindow(workspace=Path(folder) / "workspace",
                        settings=QSettings(str(Path(folder) / "settings.ini"), QSettings.Format.IniFormat))
    window.confirm_close = False
    window.show_dialogs = False
    window.resize(1200, 800)
    window.show()
    return window


def prepare_pretraining(window, data: str, args, timeout_s: float = 600):
    """Scan ``data`` in the window, choose ``args.task`` and fill the Pretrain page from ``args``
    (arch, image_size, epochs, batch_size, workers, device); returns the page, ready to start."""
    from sslstudio.gui.workers import wait_for_signal

    window.data_page.set_folder(data)
    if not wait_for_signal(window.data_page.scan_finished, timeout_s):
        raise SystemExit("the scan did not finish")
    window.task_page.select_task(args.task)
    page = window.pretrain_page
    page.arch.setCurrentText(args.arch)
    page.image_size_box.setValue(args.image_size)
    page.epochs.setValue(args.epochs)
    page.batch_size.setValue(args.batch_size)
    page.workers.setValue(args.workers)
    page.device.setCurrentIndex(max(page.device.findData(args.device), 0))
    window.go_to(2)
    return page
