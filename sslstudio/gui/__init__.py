"""The desktop window (PySide6 + pyqtgraph). The only package of sslstudio that imports Qt.

``MainWindow`` is imported lazily so that ``import sslstudio.gui`` stays cheap::

    from sslstudio.gui import MainWindow, run_app
"""

from __future__ import annotations

__all__ = ["MainWindow", "run_app"]


def __getattr__(name: str):
    if name == "MainWindow":
        from sslstudio.gui.window import MainWindow

        return MainWindow
    if name == "run_app":
        from sslstudio.gui.app import run_app

        return run_app
    raise AttributeError(f"module 'sslstudio.gui' has no attribute {name!r}")
