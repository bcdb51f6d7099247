"""Starting the window: ``run_app()`` (what ``python -m sslstudio.gui.app`` calls).

Qt is imported inside the functions: on Linux, :func:`run_app` first checks that the system libraries
Qt's X11 platform needs can be loaded (:mod:`sslstudio.gui.platform_check`) and, when some are missing,
prints one line naming them and the ``apt-get`` command, and returns 2 instead of letting Qt abort.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PySide6.QtWidgets import QApplication

__all__ = ["apply_style", "resource_path", "run_app", "style_sheet_path"]


def resource_path(name: str) -> Path | None:
    """``resources/<name>`` of the source tree, if present."""
    for base in (Path(__file__).resolve().parents[2], Path(sys.prefix)):
        path = base / "resources" / name
        if path.is_file():
            return path
    return None


def style_sheet_path() -> Path | None:
    """``resources/style.qss`` of the source tree, if present."""
    return resource_path("style.qss")


def apply_style(app: QApplication) -> None:
    """Fusion style (follows the system's light or dark palette) plus the modest style sheet."""
    app.setStyle("Fusion")
    path = style_sheet_path()
    if path is not None:
        app.setStyleSheet(path.read_text(encoding="utf-8"))
    icon = resource_path("sslstudio.svg")
    if icon is not None:
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))


def run_app(data: str | None = None, workspace: str | None = None, labelled: str | None = None) -> int:
    """Create the application, show the window (selecting folder ``data`` and the labelled folder
    ``labelled`` if given) and run it. Returns the application's exit code, or 2 (after one line on
    stderr) when the system lacks libraries Qt needs to open a window."""
    from sslstudio.gui.platform_check import check_qt_libraries

    problem = check_qt_libraries()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("sslstudio")
    app.setOrganizationName("sslstudio")
    apply_style(app)
    from sslstudio.gui.window import MainWindow

    window = MainWindow(workspace=workspace)
    window.show()
    if data:
        window.data_page.set_folder(data)
    if labelled:
        window.compare_page.labelled.setText(str(labelled))
    return app.exec()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sslstudio.gui.app", description="The sslstudio window.")
    parser.add_argument("data", nargs="?", help="folder of unlabelled images to open")
    parser.add_argument("--workspace", help="folder for runs, comparisons and exports")
    args = parser.parse_args(argv)
    return run_app(args.data, args.workspace)


if __name__ == "__main__":
    raise SystemExit(main())
