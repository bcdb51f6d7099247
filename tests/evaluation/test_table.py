"""The comparison's one results table (what results.md and the window show), its charts' data and the
reading of results.json back: plain functions, no Qt."""

import json
import os

import numpy as np

from sslstudio.evaluation.report import (curve_series, latest_results_for, normalise_result, results_markdown,
                                         stage_series)
from sslstudio.evaluation.table import cell_details, cell_text, results_table

RUN = "/ws/runs/rotation-1"


def row(init, mode, layer, budget, acc, **extra) -> dict:
    label = "rotation (rotation-1)" if init == RUN else init
    out = {"init": init, "init_label": label, "mode": mode, "layer": layer, "per_class": budget, "repeats": 3,
           "test_accuracy": acc, "std": 0.01, "ci_low": None if acc is None else acc - 0.02,
           "ci_high": None if acc is None else acc + 0.02, "train_images": 3 * (8 if budget == "all" else budget)}
    out.update(extra)
    return out


def result() -> dict:
    rows, paired = [], []
    for budget in ("all", 5, 1):  # budgets out of order: the table sorts them
        for init, acc in (("random", 0.3), (RUN, 0.4)):
            for mode, layer in (("head", "layer4"), ("head", "layer3"), ("knn", "layer4"), ("all", "layer4")):
                rows.append(row(init, mode, layer, budget, acc, head="linear"))
                if init == RUN:
                    paired.append({"init": RUN, "init_label": "rotation (rotation-1)", "mode": mode, "layer": layer,
                                   "per_class": budget, "delta": 0.1, "ci_low": 0.05, "ci_high": 0.15,
                                   "verdict": "ahead"})
    rows.append(row("imagenet", "head", "layer4", 1, None, error="no weights", std=None))
    rows.append(row("imagenet", "knn", "layer4", 1, None, error="no weights", std=None))
    return {"format": 2, "rows": rows, "paired": paired, "notes": ["a note"],
            "meta": {"layers": ["layer3", "layer4"], "head": "linear", "classes": ["a", "b", "c"],
                     "modes": ["head", "knn", "all"], "repeats": {"head": 3, "knn": 3, "all": 3}}}


def test_the_table_orders_budgets_columns_and_pairs_each_cell_with_its_verdict():
    table = results_table(result())
    assert [c.title for c in table.columns] == ["kNN layer4", "linear layer3", "linear layer4", "all layers"]
    assert table.budgets == [1, 5, "all"]
    assert [(r.budget, r.label) for r in table.rows][:3] == [(1, "random"), (1, "rotation (rotation-1)"),
                                                             (1, "imagenet")]
    run_row = table.rows[1]
    assert [c.text for c in run_row.cells] == ["40.0 ± 1.0"] * 4
    assert run_row.cells[0].difference == "+10.0 ahead" and run_row.cells[0].verdict == "ahead"
    assert table.rows[0].cells[0].difference == "" and table.rows[0].cells[0].verdict is None
    imagenet = table.rows[2]
    assert imagenet.error == "no weights" and imagenet.cells[1] is None
    assert [c.text for c in imagenet.cells if c is not None] == ["n/a", "n/a"]
    assert table.rows[0].error is None
    header, body = table.for_budget(5)  # imagenet has no row at 5 labels per class
    assert header == ["initialisation", "kNN layer4", "linear layer3", "linear layer4", "all layers"]
    assert [b[0] for b in body] == ["random", "rotation (rotation-1)"]
    lines = table.text().splitlines()
    assert lines[0] == "initialisation\tlabels per class\tkNN layer4\tlinear layer3\tlinear layer4\tall layers"
    assert lines[2] == "rotation (rotation-1)\t1\t" + "\t".join(["40.0 ± 1.0 (+10.0 ahead)"] * 4)
    assert lines[3] == "imagenet\t1\tunavailable: no weights\t\t\t"


def test_results_md_writes_the_tables_cells():
    data = result()
    table, md = results_table(data), results_markdown(data)
    for budget, heading in ((1, "## 1 per class"), (5, "## 5 per class"), ("all", "## All labels")):
        header, body = table.for_budget(budget)
        block = md.split(heading + "\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert block[0] == "| " + " | ".join(header) + " |"
        assert block[2:] == ["| " + " | ".join(b) + " |" for b in body]
    assert "| imagenet | n/a |  | n/a |" in md  # a column imagenet has no row in stays empty


def test_cell_text_and_details():
    assert cell_text({"test_accuracy": 0.513, "std": 0.008}) == "51.3 ± 0.8"
    assert cell_text({"test_accuracy": 0.513, "std": None, "ci_low": 0.482, "ci_high": 0.544}) == "51.3 [48.2, 54.4]"
    assert cell_text({"test_accuracy": None, "error": "x"}) == "n/a" and cell_text(None) == ""
    details = cell_details(row(RUN, "knn", "layer4", 5, 0.4, k=20, t=0.07, accuracies=[0.39, 0.4, 0.41]),
                           {"delta": 0.1, "ci_low": 0.05, "ci_high": 0.15, "verdict": "ahead"})
    assert details.splitlines()[0] == "rotation (rotation-1) — kNN at layer4, 5 per class"
    assert "per repeat: 39.0, 40.0, 41.0 %" in details and "k = 20, T = 0.07" in details
    assert "vs random init: +10.0 points [+5.0, +15.0] — ahead" in details
    assert cell_details({"test_accuracy": None, "error": "no weights"}) == "no weights"


def test_curve_and_stage_series():
    series = curve_series(result())
    run = series[("head", "layer4")]["rotation (rotation-1)"]
    assert run["x"] == [1.0, 5.0, 8.0] and run["budget"] == [1, 5, "all"]  # every label: 24 images / 3 classes
    assert np.allclose(run["y"], 40.0) and np.allclose(run["lo"], 38.0) and np.allclose(run["hi"], 42.0)
    assert ("all", "") in series and "imagenet" not in series[("head", "layer4")]
    stages, lines = stage_series(result()["rows"], 5, ["layer3", "layer4"])
    assert stages == ["layer3", "layer4"]
    assert [r["mode"] for r in lines["random · linear probe"]] == ["head", "head"]
    assert lines["random · all layers"][0] is None and lines["random · all layers"][1]["mode"] == "all"
    assert lines["random · kNN"][0] is None


def test_results_read_back(tmp_path):
    assert normalise_result([{"init": "random"}, "junk"]) == {"format": 1, "rows": [{"init": "random"}],
                                                              "notes": [], "paired": [], "meta": {}}
    root = tmp_path / "compare"
    assert latest_results_for(root, RUN) is None
    for k, (name, init) in enumerate((("a", RUN), ("b", "random"), ("c", RUN), ("d", RUN))):
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps([{"init": init, "test_accuracy": k / 10}]))
        os.utime(root / name / "results.json", (1000 + k, 1000 + k))
    (root / "d" / "results.json").write_text("{broken")
    os.utime(root / "d" / "results.json", (2000, 2000))
    folder, found = latest_results_for(root, RUN)  # the newest readable one that used the run
    assert folder == root / "c" and found["rows"][0]["test_accuracy"] == 0.2
