"""The engine never imports Qt: only sslstudio/gui/ may."""

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sslstudio"
QT = re.compile(r"^\s*(from|import)\s+(PySide6|PyQt\d|pyqtgraph|pytestqt)\b", re.M)


def test_no_qt_import_outside_gui():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "gui" not in p.relative_to(PACKAGE).parts and QT.search(p.read_text())]
    assert offenders == []


def test_engine_runs_headless_without_loading_qt():
    code = ("import sys, sslstudio, sslstudio.cli, sslstudio.engine, sslstudio.evaluation, sslstudio.export, "
            "sslstudio.data, sslstudio.models, sslstudio.tasks, sslstudio.runs\n"
            "from sslstudio.tasks import list_tasks; list_tasks()\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
