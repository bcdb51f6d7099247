"""docs/fidelity.md has a section for every registered task, and each task module points to it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from sslstudio.tasks import list_tasks
from sslstudio.tasks.registry import get_task

DOC = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"


def section_titles(text: str) -> set[str]:
    """The titles of the level-2 headings (``## title``) of a markdown text."""
    return {m.group(1).strip() for m in re.finditer(r"^## (.+)$", text, flags=re.MULTILINE)}


def missing_sections(text: str, tasks) -> list[str]:
    """The task names that have no ``## <name>`` section in ``text``."""
    titles = section_titles(text)
    return sorted(name for name in tasks if name not in titles)


def test_section_titles_are_read_from_level_two_headings():
    text = "# Title\n\n## rotation\n\n### jigsaw\n\ntext ## context\n## colorization  \n"
    assert section_titles(text) == {"rotation", "colorization"}
    assert missing_sections(text, ["rotation", "jigsaw", "context"]) == ["context", "jigsaw"]


def test_every_registered_task_has_a_section():
    tasks = list_tasks()
    assert len(tasks) >= 8
    missing = missing_sections(DOC.read_text(encoding="utf-8"), tasks)
    assert not missing, f"docs/fidelity.md has no '## <task>' section for: {', '.join(missing)}"


def test_the_learning_check_has_a_row_per_task_with_its_current_cpu_recipe():
    from sslstudio.engine.estimate import cpu_recipe

    text = DOC.read_text(encoding="utf-8")
    assert "Does each task learn with its CPU recipe?" in section_titles(text)
    section = text.split("## Does each task learn with its CPU recipe?", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| task")}
    for name in list_tasks():
        assert name in rows, f"docs/fidelity.md's learning table has no row for {name}"
        r = cpu_recipe(name)
        expected = f"{r['image_size']} px, {r['epochs']}, {r['batch_size']}, {r['lr']:g}"
        assert rows[name] == expected, f"{name}: the table says {rows[name]!r}, the recipe is {expected!r}: measure again"


def test_every_task_module_docstring_points_to_the_table():
    without = []
    for name in list_tasks():
        module = importlib.import_module(get_task(name).__module__)
        if "docs/fidelity.md" not in (module.__doc__ or ""):
            without.append(f"{name} ({module.__name__})")
    assert not without, f"task module docstrings without a pointer to docs/fidelity.md: {', '.join(without)}"
