"""The comparison's results table, built once: ``results.md`` and the window's table both show it.

:func:`results_table` turns a result (``results.json``'s dict) into a :class:`Table`: rows are
(label budget, initialisation), columns are (mode, stage) in the order kNN, head, all layers (stages in
the backbone's order), and each cell holds its text (``51.3 ± 0.8`` over repeats, ``51.3 [48.2, 54.4]``
for one draw, ``n/a`` when the row could not run), the engine's row and its paired difference to
random init (``+2.1 ahead``). The Markdown writes one table per budget; the window shows every budget
in one grid and puts the difference under the cell; "Copy" is :meth:`Table.text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

MODE_ORDER = ("knn", "head", "all")


# -- words -------------------------------------------------------------------------------------
def column_name(mode: str, layer: str, head: str = "linear") -> str:
    """``kNN layer4`` / ``linear layer4`` / ``MLP layer4`` / ``all layers``."""
    if mode == "all":
        return "all layers"
    if mode == "knn":
        return f"kNN {layer}"
    return f"{'MLP' if head == 'mlp' else 'linear'} {layer}"


def mode_label(row_or_mode, head: str | None = None) -> str:
    """``linear probe`` / ``MLP probe`` / ``kNN`` / ``all layers`` (of a row or a mode)."""
    if isinstance(row_or_mode, dict):
        mode, head = row_or_mode.get("mode"), row_or_mode.get("head", head)
    else:
        mode = row_or_mode
    if mode == "head":
        return "MLP probe" if head == "mlp" else "linear probe"
    return {"knn": "kNN", "all": "all layers"}.get(mode, str(mode))


def budget_text(budget) -> str:
    """``all labels`` / ``25% of the labels`` / ``5 per class``."""
    if budget in (None, "all"):
        return "all labels"
    if isinstance(budget, str):
        return f"{budget} of the labels"
    return f"{budget} per class"


def budget_order(budget) -> float:
    """Sort key of label budgets: images per class ascending, then shares of each class, then every label."""
    if isinstance(budget, (int, float)):
        return float(budget)
    if isinstance(budget, str) and budget.endswith("%"):
        try:
            return 1e9 + float(budget[:-1])
        except ValueError:
            pass
    return math.inf


def row_label(row: dict) -> str:
    """The initialisation's name in a table: the engine's ``init_label``, else the run folder's name."""
    init = str(row.get("init"))
    return str(row.get("init_label") or (init if init in ("random", "imagenet") else Path(init).name))


def row_key(row: dict) -> tuple:
    """What pairs a row with its difference to random init: (init, mode, layer, budget)."""
    return (str(row.get("init")), str(row.get("mode")), str(row.get("layer")), str(row.get("per_class", "all")))


def cell_text(row: dict | None) -> str:
    """``51.3 ± 0.8`` (mean ± std over repeats), ``51.3 [48.2, 54.4]`` (one draw, bootstrap) or ``n/a``."""
    if row is None:
        return ""
    if row.get("test_accuracy") is None:
        return "n/a"
    mean = 100 * row["test_accuracy"]
    if row.get("std") is not None:
        return f"{mean:.1f} ± {100 * row['std']:.1f}"
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        return f"{mean:.1f} [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
    return f"{mean:.1f}"


def paired_text(paired: dict | None) -> str:
    """``+2.1 ahead``: the difference to random init in points, and its verdict."""
    if not paired or paired.get("delta") is None:
        return ""
    return f"{100 * paired['delta']:+.1f} {paired.get('verdict', '')}".strip()


def cell_details(row: dict, paired: dict | None = None) -> str:
    """Everything behind a cell, in lines: repeats and their accuracies, the interval, L2 strengths, k / T."""
    if row.get("test_accuracy") is None:
        return str(row.get("error") or "not run")
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = [f"{row_label(row)} — {mode_label(row)}" + (f" at {row['layer']}" if row.get("mode") != "all" else "")
             + f", {budget_text(row.get('per_class', 'all'))}"]
    accs = row.get("accuracies") or []
    n = row.get("repeats") or len(accs) or 1
    lines.append(f"test accuracy {pct(row['test_accuracy'])} % (mean of {n} repeat{'s' if n != 1 else ''})")
    if len(accs) > 1:
        lines.append("per repeat: " + ", ".join(pct(a) for a in accs) + " %")
    if row.get("std") is not None:
        lines.append(f"standard deviation over repeats: {pct(row['std'])} points")
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        how = "bootstrap over the test images" if row.get("interval") == "bootstrap" else "over the repeated label draws"
        lines.append(f"interval [{pct(row['ci_low'])}, {pct(row['ci_high'])}] % ({how})")
    if row.get("train_images"):
        lines.append(f"{row['train_images']} labelled training images")
    if row.get("l2"):
        lines.append("chosen L2 strength C per repeat: " + ", ".join(f"{c:g}" for c in row["l2"]))
    if row.get("mode") == "knn":
        lines.append(f"k = {row.get('k')}, T = {row.get('t')}")
    if row.get("mode") == "all" and row.get("epochs"):
        lines.append(f"epochs: {row['epochs']}")
    if paired and paired.get("delta") is not None:
        ci = ""
        if paired.get("ci_low") is not None and paired.get("ci_high") is not None:
            ci = f" [{100 * paired['ci_low']:+.1f}, {100 * paired['ci_high']:+.1f}]"
        lines.append(f"vs random init: {100 * paired['delta']:+.1f} points{ci} — {paired.get('verdict', '')}")
    if row.get("error"):
        lines.append(str(row["error"]))
    return "\n".join(lines)


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One (mode, stage) of the table; all-layer fine-tuning is one column whatever its stage."""

    mode: str
    layer: str
    title: str


@dataclass(frozen=True)
class Cell:
    """A cell: what it shows, the engine's row behind it and its paired difference to random init."""

    text: str
    row: dict
    paired: dict | None = None

    @property
    def difference(self) -> str:
        """``+2.1 ahead`` (empty for random init itself, or without a random init row)."""
        return paired_text(self.paired)

    @property
    def verdict(self) -> str | None:
        """``ahead`` / ``behind`` / ``within noise`` against random init, or None."""
        return (self.paired or {}).get("verdict")

    @property
    def available(self) -> bool:
        return self.row.get("test_accuracy") is not None


@dataclass(frozen=True)
class TableRow:
    """One initialisation at one label budget; ``cells`` line up with the table's columns."""

    budget: object
    label: str
    cells: tuple

    @property
    def error(self) -> str | None:
        """The one reason when no cell of the row ran (all for the same reason), else None."""
        present = [c for c in self.cells if c is not None]
        errors = {c.row.get("error") for c in present}
        if present and not any(c.available for c in present) and len(errors) == 1 and None not in errors:
            return errors.pop()
        return None


@dataclass(frozen=True)
class Table:
    """The results table: columns, rows (budgets ascending, initialisations in the engine's order)."""

    columns: tuple
    rows: tuple
    head: str = "linear"

    @property
    def budgets(self) -> list:
        return list(dict.fromkeys(r.budget for r in self.rows))

    def for_budget(self, budget) -> tuple[list[str], list[list[str]]]:
        """Header and body of one budget's table (columns without a cell at that budget left out)."""
        rows = [r for r in self.rows if r.budget == budget]
        keep = [j for j in range(len(self.columns)) if any(r.cells[j] is not None for r in rows)]
        header = ["initialisation"] + [self.columns[j].title for j in keep]
        body = [[r.label] + [r.cells[j].text if r.cells[j] is not None else "" for j in keep] for r in rows]
        return header, body

    def text(self, sep: str = "\t") -> str:
        """The whole grid as text (what "Copy" gives): a header line, then a line per row; a cell's
        difference to random init in brackets; a row that could not run says why."""
        lines = [sep.join(["initialisation", "labels per class"] + [c.title for c in self.columns])]
        for r in self.rows:
            texts = [("" if c is None else f"{c.text} ({c.difference})" if c.difference else c.text)
                     for c in r.cells]
            if r.error:
                texts = [f"unavailable: {r.error}"] + [""] * (len(texts) - 1)
            lines.append(sep.join([r.label, "all" if r.budget is None else str(r.budget)] + texts))
        return "\n".join(lines) + "\n"


def _head(result: dict) -> str:
    head = result.get("meta", {}).get("head")
    if head:
        return head
    heads = {r.get("head") for r in result["rows"] if r.get("mode") == "head"}
    return "mlp" if heads == {"mlp"} else "linear"


def results_table(result: dict, stage_order: list[str] | None = None) -> Table:
    """The table of a result: one row per (budget, initialisation), one column per (mode, stage).

    Stages follow ``stage_order`` (default: the comparison's ``meta["layers"]``), unknown ones in the
    order they first appear."""
    rows, head = result["rows"], _head(result)
    paired = {row_key(p): p for p in result.get("paired") or []}
    order = list(stage_order or result.get("meta", {}).get("layers") or [])
    labels, budgets, cols, cells = [], [], [], {}
    for r in rows:
        label, budget = row_label(r), r.get("per_class", "all")
        col = (str(r.get("mode")), "" if r.get("mode") == "all" else str(r.get("layer")))
        for seen, item in ((labels, label), (budgets, budget), (cols, col)):
            if item not in seen:
                seen.append(item)
        cells[(budget, label, col)] = r
    budgets.sort(key=budget_order)
    first = [c[1] for c in cols]
    cols.sort(key=lambda c: (MODE_ORDER.index(c[0]) if c[0] in MODE_ORDER else len(MODE_ORDER),
                             order.index(c[1]) if c[1] in order else len(order) + first.index(c[1])))
    columns = tuple(Column(m, layer, column_name(m, layer, head)) for m, layer in cols)
    body = []
    for budget in budgets:
        for label in labels:
            found = [cells.get((budget, label, c)) for c in cols]
            if any(r is not None for r in found):
                body.append(TableRow(budget, label, tuple(
                    None if r is None else Cell(cell_text(r), r, paired.get(row_key(r))) for r in found)))
    return Table(columns, tuple(body), head)


__all__ = ["Cell", "Column", "MODE_ORDER", "Table", "TableRow", "budget_order", "budget_text", "cell_details",
           "cell_text", "column_name", "mode_label", "paired_text", "results_table", "row_key", "row_label"]
