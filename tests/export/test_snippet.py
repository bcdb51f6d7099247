"""What the window shows for an export: where it goes by default and the Python that loads it."""

import ast
from pathlib import Path

from sslstudio.export.snippet import default_export_dir, load_snippet


def test_default_export_dir_is_named_after_the_run(tmp_path):
    assert default_export_dir(tmp_path, "/somewhere/runs/rotation-1") == tmp_path / "exports" / "rotation-1"


def test_load_snippet_is_python_that_loads_that_folder():
    folder = str(Path("/data/it's here"))
    code = load_snippet(folder)
    tree = ast.parse(code)  # quotes in the path are escaped: the snippet stays valid Python
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "load_backbone"]
    assert [ast.literal_eval(c.args[0]) for c in calls] == [folder]
