"""The engine never imports Qt: only sslstudio/gui/ may; the layers of pyproject.toml hold; no
module reaches into another package's private names."""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sslstudio"
QT = re.compile(r"^\s*(from|import)\s+(PySide6|PyQt\d|pyqtgraph|pytestqt)\b", re.M)


def test_no_qt_import_outside_gui():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "gui" not in p.relative_to(PACKAGE).parts and QT.search(p.read_text())]
    assert offenders == []


@pytest.mark.slow
def test_engine_runs_headless_without_loading_qt():
    code = ("import sys, sslstudio, sslstudio.cli, sslstudio.engine, sslstudio.evaluation, sslstudio.export, "
            "sslstudio.data, sslstudio.models, sslstudio.tasks, sslstudio.runs\n"
            "from sslstudio.tasks import list_tasks; list_tasks()\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_contracts_hold():
    """`lint-imports` checks the contracts of [tool.importlinter] in pyproject.toml (layers, Qt only
    in the GUI, tasks below the engine, no cycle inside sslstudio.models)."""
    if importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed (pip install 'sslstudio[test]')")
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    result = subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def _package_of(module: str) -> str:
    """``sslstudio.models.backbones`` -> ``sslstudio.models``; ``sslstudio.runs`` -> itself."""
    return ".".join(module.split(".")[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def cross_package_private_imports(package: Path = PACKAGE) -> list[str]:
    """``from sslstudio.x import _name`` (and ``x._name`` on a module imported so) in a module
    outside ``sslstudio.x``: each as ``file:line: what``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        own = _package_of(".".join(parts))
        bound = {}  # local name -> dotted name it was imported as
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] != "sslstudio":
                continue
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                bound[alias.asname or alias.name] = target
                if _private(alias.name) and _package_of(node.module) != own:
                    found.append(f"{path.relative_to(package.parent)}:{node.lineno}: from {node.module} "
                                 f"import {alias.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and _package_of(bound[node.value.id]) != own):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_a_private_name_from_another_package():
    assert cross_package_private_imports() == []
