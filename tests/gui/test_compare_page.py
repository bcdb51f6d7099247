"""Step 4, the comparison page: fake engine events and results, then one real tiny comparison."""

import json
import math

import numpy as np
import pytest

from sslstudio.engine.events import EpochEvent, ProgressEvent, RowEvent
from sslstudio.evaluation.report import latest_results_for, normalise_result
from sslstudio.evaluation.table import cell_text, results_table
from sslstudio.gui.compare_page import parse_curve

CLASSES = ["cat", "dog", "fox"]
RUN = "/ws/runs/rotation-1"


def make_result(budgets=(1, 5, "all"), modes=("head", "knn"), layers=("layer3", "layer4")) -> dict:
    """A result of the engine's format 2: random and a rotation run, three classes."""
    rows, paired = [], []
    for b in budgets:
        for init, label, gain in (("random", "random", 0.0), (RUN, "rotation (rotation-1)", 0.1)):
            for mode in modes:
                for layer in (layers if mode != "all" else layers[-1:]):
                    reps = 1 if mode == "all" else 3
                    m = 0.3 + 0.05 * math.log2(2 if b == "all" else b + 1) + gain
                    accs = [m - 0.01, m, m + 0.01][:reps] if reps > 1 else [m]
                    row = {"init": init, "init_label": label, "mode": mode, "layer": layer, "per_class": b,
                           "repeats": reps, "test_accuracy": m, "std": 0.01 if reps > 1 else None,
                           "ci_low": m - 0.02, "ci_high": m + 0.02,
                           "interval": "repeats" if reps > 1 else "bootstrap", "accuracies": accs,
                           "train_images": 3 * (8 if b == "all" else b),
                           "per_class_accuracy": {"cat": 0.9, "dog": 0.5, "fox": 0.25},
                           "confusion": [[9, 1, 0], [3, 5, 2], [4, 2, 2]]}
                    row.update({"head": "linear", "l2": [1.0, 0.1, 1.0]} if mode == "head" else
                               {"k": 20, "t": 0.07} if mode == "knn" else {"epochs": 2})
                    rows.append(row)
                    if init != "random":
                        paired.append({"init": init, "init_label": label, "mode": mode, "layer": layer,
                                       "per_class": b, "repeats": reps, "delta": gain, "ci_low": gain - 0.03,
                                       "ci_high": gain + 0.03, "verdict": "ahead"})
    paired[0]["verdict"] = "within noise"
    return {"format": 2, "meta": {"classes": CLASSES, "budgets": list(budgets), "time_s": 12.0,
                                  "repeats": {"head": 3, "knn": 3, "all": 1}},
            "notes": ["The test set has 24 images: differences under 10 points are noise.",
                      "One image per class is a trend, not a ranking."],
            "rows": rows, "paired": paired}


def test_cell_text_reads_like_a_paper():
    row = {"test_accuracy": 0.513, "std": 0.008, "repeats": 3}
    assert cell_text(row) == "51.3 ± 0.8"
    assert cell_text({"test_accuracy": 0.513, "std": None, "repeats": 1, "ci_low": 0.482,
                      "ci_high": 0.544}) == "51.3 [48.2, 54.4]"
    assert cell_text({"test_accuracy": None, "error": "no weights"}) == "n/a"
    assert parse_curve("50, 1 5,all, 5") == [1, 5, 50, "all"]
    with pytest.raises(ValueError):
        parse_curve("0, 5")
    assert normalise_result([{"init": "random"}])["rows"] == [{"init": "random"}]


@pytest.mark.slow
def test_events_fill_table_notes_verdicts_and_progress(window):
    page = window.compare_page
    result = make_result(budgets=(5,))
    page.on_event(ProgressEvent(0, len(result["rows"]), "features of random", 1.0, None))
    assert page.progress.maximum() == len(result["rows"])
    seen = []
    page.row_added.connect(lambda row: seen.append(page.table.rowCount()))
    for i, row in enumerate(result["rows"], 1):
        page.on_event(RowEvent(row=row, index=i, total=len(result["rows"])))
        page.on_event(ProgressEvent(i, len(result["rows"]), "linear probe", 10.0 * i, 75.0))
    assert seen[0] == 1  # the table fills from the first row on
    assert "about 1 min 15 s left" in page.status.text()
    assert page.table.rowCount() == 2 and page.table.columnCount() == 4
    assert page.columns == ["kNN layer3", "kNN layer4", "linear layer3", "linear layer4"]
    assert page.table.item(0, 0).text() == cell_text(result["rows"][0])
    assert "±" in page.table.item(0, 0).text()
    page._on_finished(result)  # the worker's finished signal: notes and paired differences arrive
    assert "differences under 10 points are noise" in page.notes.text()
    assert page.notes_scroll.isVisibleTo(page) and page.notes.wordWrap()
    assert page.table.item(1, 2).text().endswith("within noise")  # columns: kNN, then linear
    assert page.table.item(1, 1).text().splitlines()[1] == "+10.0 ahead"
    assert page.table.item(0, 0).text().count("\n") == 0  # random init has no verdict against itself
    assert "vs random init" in page.table.item(1, 1).toolTip()
    assert "L2 strength" in page.table.item(1, 3).toolTip()
    assert "k = 20, T = 0.07" in page.table.item(1, 0).toolTip()
    text = page.copy_table()
    assert text.splitlines()[2].startswith("rotation (rotation-1)\t5\t") and "(+10.0 ahead)" in text
    assert page.progress.value() == page.progress.maximum()


@pytest.mark.slow
def test_label_curve_has_a_line_and_band_per_init_on_a_log_axis(qtbot, window):
    import pyqtgraph as pg

    page = window.compare_page
    page.set_result(make_result())
    page.tabs.setCurrentWidget(page.curve_tab)
    page.flush()
    item = page.curve_plot.getPlotItem()
    assert item.ctrl.logXCheck.isChecked()
    assert item.getAxis("bottom").labelText.startswith("labelled images per class")
    assert item.getAxis("left").labelText == "test accuracy (%)"
    lines = [c for c in page._curve_items if isinstance(c, pg.PlotDataItem)]
    bands = [c for c in page._curve_items if isinstance(c, pg.FillBetweenItem)]
    assert len(lines) == 2 and len(bands) == 2
    assert [label.text for _s, label in item.legend.items] == ["random", "rotation (rotation-1)"]
    x, y = lines[0].getData()  # x as drawn: log10 of the images per class ("all": 8 here)
    assert np.allclose(10 ** np.asarray(x), [1, 5, 8]) and np.allclose(y, [100 * (0.3 + 0.05 * math.log2(b + 1)) for b in (1, 5, 1)])
    # the selector shows another mode / stage
    assert page.curve_tab.value() == ("head", "layer4")  # the last stage first
    assert page.curve_tab.select(("knn", "layer3"))
    page.flush()
    assert "kNN (layer3)" in item.titleLabel.text
    # the table has a row per initialisation and budget
    assert page.table.rowCount() == 6
    assert page.table.verticalHeaderItem(0).text() == "random · 1 per class"


@pytest.mark.slow
def test_stage_and_epoch_charts(window):
    page = window.compare_page
    result = make_result(budgets=("all",), modes=("head", "knn", "all"))
    page.set_result(result)
    page.tabs.setCurrentWidget(page.stage_tab)
    stages, series = page.stage_series()
    assert stages == ["layer3", "layer4"]
    assert set(series) == {f"{i} · {m}" for i in ("random", "rotation (rotation-1)")
                           for m in ("linear probe", "kNN", "all layers")}
    assert series["random · all layers"][0] is None  # all layers sits at the last stage
    styles = {name: c.opts["pen"].style() for name, c in page._stage_curves.items()}
    assert styles["random · linear probe"] != styles["random · kNN"]
    for init in ("random", RUN):
        for e in range(3):
            page.on_event(EpochEvent(e, 3, 1.0, 0.5, 1.0, 0.2 * (e + 1), "accuracy", 0.01, 1, 1, 1, 1,
                                     extra={"init": init, "init_label": init, "mode": "all", "layer": "layer4",
                                            "per_class": "all", "repeat": 0}))
    page.tabs.setCurrentWidget(page.epoch_tab)
    page.flush()
    assert page.epoch_tab.combo.count() == 2  # one initialisation at a time
    assert len(page._epoch_items) == 1
    x, y = next(iter(page._epoch_items.values())).getData()
    assert list(x) == [1, 2, 3] and np.allclose(y, [20, 40, 60])
    page.epoch_tab.combo.setCurrentIndex(1)
    assert len(page._epoch_items) == 1 and next(iter(page._epoch_items))[0] == RUN


@pytest.mark.slow
def test_selecting_a_cell_shows_per_class_accuracy_and_confusion(window):
    page = window.compare_page
    page.set_result(make_result(budgets=("all",)))
    page.table.setCurrentCell(1, 1)
    assert page.selected_row["init"] == RUN and page.selected_row["layer"] == "layer4"
    assert "rotation (rotation-1)" in page.class_caption.text()
    bars = page._class_bars.opts
    assert list(bars["width"]) == [90.0, 50.0, 25.0]
    assert page.confusion.rowCount() == 3 and page.confusion.item(1, 1).text() == "5"
    assert page.confusion.verticalHeaderItem(2).text() == "fox"
    page.table.cellDoubleClicked.emit(1, 1)
    assert page.tabs.currentWidget() is page.class_tab


@pytest.mark.slow
def test_save_copies_the_engines_files_and_old_results_still_open(window, tmp_path):
    page = window.compare_page
    folder = window.workspace / "compare" / "20250101-000000"
    folder.mkdir(parents=True)
    result = make_result(budgets=("all",))
    (folder / "results.json").write_text(json.dumps(result))
    (folder / "results.md").write_text("# the engine's report\n")
    found = latest_results_for(window.workspace / "compare", RUN)
    assert found and found[0] == folder and found[1]["notes"] == result["notes"]
    assert page.show_results_for_run(RUN) == str(folder)
    assert page.table.rowCount() == 2 and page.notes_scroll.isVisibleTo(page)
    assert page.save_table(str(tmp_path / "mine.md")).read_text() == "# the engine's report\n"
    assert page.save_table(str(tmp_path / "mine.csv")) is None  # the engine wrote no CSV here: says so
    assert "results.csv" in page.status.text()
    # an old comparison (a bare list of rows) still opens
    old = window.workspace / "compare" / "20260101-000000"
    old.mkdir()
    (old / "results.json").write_text(json.dumps([{"init": RUN, "init_label": "rotation", "mode": "head",
                                                   "layer": "layer4", "test_accuracy": 0.4}]))
    assert page.show_results_for_run(RUN) == str(old)
    assert page.table.item(0, 0).text() == "40.0" and not page.notes_scroll.isVisibleTo(page)
    old_rows = [{"init": "random", "mode": "all", "layer": "layer4", "test_accuracy": 0.5}]
    assert results_table(normalise_result(old_rows)).text() == \
        "initialisation\tlabels per class\tall layers\nrandom\tall\t50.0\n"


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """The tables of a results.md under their ``## `` headings, as rows of cell strings."""
    out, heading = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("| ") and heading:
            out.setdefault(heading, []).append([c.strip() for c in line.strip("|").split(" | ")])
    return out


@pytest.mark.slow
def test_the_window_shows_the_table_results_md_writes(window, tmp_path):
    """One table: the window's cells are results_table's cells and the cells of results.md; "Save…"
    hands over the engine's results.md byte for byte."""
    from sslstudio.evaluation.report import write_results

    page = window.compare_page
    result = make_result(budgets=(1, 5, "all"), modes=("head", "knn", "all"))
    result["rows"][2]["test_accuracy"], result["rows"][2]["error"] = None, "no weights"
    result["meta"].update(modes=["head", "knn", "all"], layers=["layer3", "layer4"], head="linear")
    page.out_dir = tmp_path / "cmp"
    write_results(page.out_dir, result)
    page.set_result(result)
    table = results_table(normalise_result(result))
    assert page.columns == [c.title for c in table.columns] == ["kNN layer3", "kNN layer4", "linear layer3",
                                                                "linear layer4", "all layers"]
    assert page.table.rowCount() == len(table.rows) == 6
    shown = [[page.table.item(i, j).text().split("\n")[0] for j in range(page.table.columnCount())]
             for i in range(page.table.rowCount())]
    assert shown == [[c.text for c in r.cells] for r in table.rows]
    assert "n/a" in shown[0] and any("±" in t for t in shown[0])
    md = markdown_tables((page.out_dir / "results.md").read_text())
    for budget, heading in ((1, "1 per class"), (5, "5 per class"), ("all", "All labels")):
        header, *body = md[heading]
        assert header == ["initialisation"] + page.columns
        rows = [i for i, r in enumerate(table.rows) if r.budget == budget]
        assert body == [[table.rows[i].label] + shown[i] for i in rows]
    saved = page.save_table(str(tmp_path / "saved.md"))
    assert saved.read_bytes() == (page.out_dir / "results.md").read_bytes()
    assert page.save_table(str(tmp_path / "saved.json")).read_bytes() == (page.out_dir / "results.json").read_bytes()


@pytest.mark.slow
def test_compare_settings_round_trip(qtbot, tmp_path, settings):
    from sslstudio.gui import MainWindow

    w = MainWindow(workspace=tmp_path / "ws", settings=settings)
    qtbot.addWidget(w)
    w.confirm_close = False
    c = w.compare_page
    assert (c.repeats.value(), c.repeats_all.value(), c.knn_k.value(), c.knn_t.value()) == (3, 1, 20, 0.07)
    c.set_budget(curve=[1, 10, "all"])
    c.set_modes(["knn", "all"])
    c.head_type.setCurrentIndex(c.head_type.findData("mlp"))
    c.knn_k.setValue(7)
    c.knn_t.setValue(0.2)
    c.repeats.setValue(5)
    c.repeats_all.setValue(2)
    c.epochs_all.setValue(4)
    w.close()
    w2 = MainWindow(workspace=tmp_path / "ws", settings=settings)
    qtbot.addWidget(w2)
    w2.confirm_close = False
    c2 = w2.compare_page
    assert c2.budget() == {"label_curve": [1, 10, "all"]} and c2.curve.isVisibleTo(c2)
    assert c2.modes() == ["knn", "all"] and c2.head_type.currentData() == "mlp"
    assert (c2.knn_k.value(), c2.knn_t.value(), c2.repeats.value(), c2.repeats_all.value(),
            c2.epochs_all.value()) == (7, 0.2, 5, 2, 4)
    kwargs = c2.compare_kwargs()
    assert kwargs["label_curve"] == [1, 10, "all"] and kwargs["head"] == "mlp" and kwargs["knn_k"] == 7
    assert kwargs["repeats"] == 5 and kwargs["repeats_all"] == 2 and kwargs["modes"] == ["knn", "all"]
    w2.close()


@pytest.mark.slow
def test_a_tiny_real_comparison(qtbot, window, demo_root):
    pytest.importorskip("sklearn")
    page = window.compare_page
    pre = window.pretrain_page
    pre.arch.setCurrentText("resnet18_small")
    pre.image_size_box.setValue(32)
    pre.device.setCurrentIndex(pre.device.findData("cpu"))
    page.labelled.setText(str(demo_root / "labelled" / "train"))
    page.test_folder.setText(str(demo_root / "labelled" / "test"))
    page.set_checked_inits(["random"])
    page.set_layers(["layer3", "layer4"])
    page.set_modes(["head", "knn"])
    page.set_budget(curve=[2, "all"])
    page.repeats.setValue(2)
    with qtbot.waitSignal(page.comparison_finished, timeout=120_000) as blocker:
        page.run_button.click()
    result = blocker.args[0]
    rows = result["rows"]
    assert {(r["mode"], r["layer"], r["per_class"]) for r in rows} == {
        (m, s, b) for m in ("head", "knn") for s in ("layer3", "layer4") for b in (2, "all")}
    assert all(r["test_accuracy"] is not None for r in rows), [r.get("error") for r in rows]
    assert page.table.rowCount() == 2 and page.table.columnCount() == 4
    assert "±" in page.table.item(0, 0).text()
    assert (page.out_dir / "results.md").is_file()
    assert page.save_table(str(page.out_dir.parent / "copy.md")).read_text() == \
        (page.out_dir / "results.md").read_text()
    page.tabs.setCurrentWidget(page.curve_tab)
    page.flush()
    assert len([c for c in page._curve_items if not hasattr(c, "edges")]) == 1
    from sslstudio.gui.plots import find_chance_line as chance_line

    assert chance_line(page.curve_plot).value() == pytest.approx(100 / len(result["meta"]["classes"]))
    page.table.setCurrentCell(0, 1)
    assert page.confusion.rowCount() == len(result["meta"]["classes"])
    qtbot.waitUntil(lambda: page.run_button.isEnabled(), timeout=5000)


def _resnet18_weights(path):
    """A resnet18 state dict of our own (no download), saved as ``path``."""
    import torch
    import torchvision

    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.mark.slow
def test_imagenet_row_says_why_it_is_unavailable_and_takes_a_weights_file(qtbot, tmp_path, settings, monkeypatch):
    from PySide6.QtCore import Qt

    from sslstudio.gui import MainWindow

    torch_home = tmp_path / "torch-home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))  # empty: no ImageNet weights on this machine
    w = MainWindow(workspace=tmp_path / "ws", settings=settings)
    qtbot.addWidget(w)
    w.confirm_close = False
    page = w.compare_page
    w.pretrain_page.arch.setCurrentText("resnet18")
    page.refresh_imagenet()
    item = page._imagenet_item()
    assert item.checkState() == Qt.CheckState.Unchecked
    assert item.text() == "ImageNet — not on this machine"
    assert page.imagenet_choose.isVisibleTo(page) and not page.imagenet_forget.isVisibleTo(page)
    assert "resnet18-f37072fd.pth" in item.toolTip() and "Choose weights file" in item.toolTip()
    assert "imagenet" not in page.compare_kwargs()["baselines"]
    # a weights file of the user's: read safely, checked and passed to the comparison
    mine = _resnet18_weights(torch_home / "mine.pth")
    assert page.choose_imagenet_weights(str(mine)) == (True, "from mine.pth")
    assert item.checkState() == Qt.CheckState.Checked and item.text() == "ImageNet — your file"
    assert page.imagenet_note.text() == "ImageNet weights: from mine.pth."
    kwargs = page.compare_kwargs()
    assert "imagenet" in kwargs["baselines"] and kwargs["weights"] == str(mine)
    assert page.imagenet_forget.isVisibleTo(page)
    # a file that is not weights: unchecked again, its reason in words
    junk = torch_home / "junk.pth"
    junk.write_bytes(b"not weights")
    available, reason = page.choose_imagenet_weights(str(junk))
    assert not available and item.checkState() == Qt.CheckState.Unchecked
    assert reason == "junk.pth could not be read as weights" and "Error" not in page.status.text()
    assert item.text() == "ImageNet — file not usable"
    assert page.imagenet_note.text() == "ImageNet weights: junk.pth could not be read as weights."
    page.choose_imagenet_weights(str(mine))
    w.close()
    # the choice persists
    w2 = MainWindow(workspace=tmp_path / "ws", settings=settings)
    qtbot.addWidget(w2)
    w2.confirm_close = False
    page2 = w2.compare_page
    assert page2.imagenet_weights == str(mine)
    assert page2._imagenet_item().checkState() == Qt.CheckState.Checked
    # torchvision's file in the cache: "Use the cache" forgets the chosen file
    _resnet18_weights(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    page2.imagenet_forget.click()
    assert page2.imagenet_weights == "" and page2.imagenet_status() == (True, "in the local cache")
    assert page2._imagenet_item().text() == "ImageNet" and not page2.imagenet_note.isVisibleTo(page2)
    assert "weights" not in page2.compare_kwargs()
    w2.close()


@pytest.mark.slow
def test_every_downstream_plot_draws_the_chance_level(window):
    from sslstudio.gui.plots import find_chance_line as chance_line

    page = window.compare_page
    page.set_result(make_result(budgets=(1, 5, "all"), modes=("head", "knn", "all")))  # 3 classes
    for tab, plot in ((page.curve_tab, page.curve_plot), (page.stage_tab, page.stage_plot)):
        page.tabs.setCurrentWidget(tab)
        page.flush()
        line = chance_line(plot)
        assert line is not None and line.value() == pytest.approx(100 / 3), tab
        assert line.label.toPlainText() == "chance 33.3%" and line.angle == 0
        low, high = plot.getPlotItem().viewRange()[1]
        assert low <= 100 / 3 <= high  # in view, not cut off by the y range
    for e in range(2):
        page.on_event(EpochEvent(e, 2, 1.0, 0.5, 1.0, 0.4 + 0.1 * e, "accuracy", 0.01, 1, 1, 1, 1,
                                 extra={"init": "random", "init_label": "random", "mode": "all", "layer": "layer4",
                                        "per_class": "all", "repeat": 0}))
    page.tabs.setCurrentWidget(page.epoch_tab)
    page.flush()
    assert chance_line(page.plot).value() == pytest.approx(100 / 3)
    page.table.setCurrentCell(1, 1)  # per-class bars: accuracy runs along x, the line is vertical
    line = chance_line(page.class_plot)
    assert line.angle == 90 and line.value() == pytest.approx(100 / 3)
    page.clear_results()
    assert all(chance_line(p) is None for p in (page.curve_plot, page.stage_plot, page.plot, page.class_plot))
    # during a run, before the engine names the classes: the class folders of the labelled folder
    labelled = window.workspace / "lab"
    for name in ("a", "b", "c", "d"):
        (labelled / "train" / name).mkdir(parents=True)
    page._folder_classes = __import__("sslstudio.gui.compare_page", fromlist=["x"]).labelled_class_count(labelled)
    assert page.chance_level() == pytest.approx(0.25)
