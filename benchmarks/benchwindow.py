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
