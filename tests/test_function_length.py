"""No function in the engine or the evaluation is longer than a screen and a half (80 lines):
the loops read as their phases (set-up, epoch, step, validate, checkpoint, finish)."""

import ast
from pathlib import Path

import sslstudio

MAX_LINES = 80
PACKAGES = ("engine", "evaluation")


def _long_functions(root: Path) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_LINES:
                        found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_engine_or_evaluation_is_over_80_lines():
    root = Path(sslstudio.__file__).parent
    assert all((root / package).is_dir() for package in PACKAGES)
    offenders = _long_functions(root)
    assert not offenders, f"functions over {MAX_LINES} lines: " + "; ".join(offenders)
