"""The window's state across sessions (issue 12, point 3): closing and reopening with the same QSettings
file brings back the data folder (scanned again), the selected run and its plots, the compare page's
checks and the results that belong to them; results that no longer belong to the checks are cleared
with a one-line note; a double-click in the run list opens a run."""

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from sslstudio.runs import RunDir

pytestmark = pytest.mark.slow


def make_run(workspace, name, task):
    """A finished two-epoch run folder (config, metrics, summary, a checkpoint file)."""
    path = workspace / "runs" / name
    run = RunDir(path).create()
    run.write_config({"task": task, "arch": "resnet18_small", "metric": "accuracy", "epochs": 2, "image_size": 32})
    run.append_metrics([{"type": "step", "epoch": 0, "step": 1, "global_step": 1, "loss": 2.0},
                        {"type": "epoch", "epoch": 0, "train_loss": 2.0, "train_accuracy": 0.4,
                         "val_accuracy": 0.35},
                        {"type": "step", "epoch": 1, "step": 1, "global_step": 2, "loss": 1.5},
                        {"type": "epoch", "epoch": 1, "train_loss": 1.5, "train_accuracy": 0.6,
                         "val_accuracy": 0.55}])
    run.write_summary({"status": "finished", "metric": "accuracy", "final_train_accuracy": 0.6,
                       "final_val_accuracy": 0.55, "epochs": 2, "epochs_completed": 2})
    (path / "checkpoints" / "last.pt").write_bytes(b"x")
    return str(path)


def make_comparison(workspace, name, run, layers=("layer2", "layer4"), budget=5):
    """A comparison of ``run`` and random init (kNN at ``layers`` and all layers, ``budget`` per class)
    as the engine writes it, the all-layer rows with their per-epoch history."""
    rows = []
    for init, label in ((run, run.rsplit("/", 1)[-1]), ("random", "random")):
        for layer in layers:
            rows.append({"init": init, "init_label": label, "mode": "knn", "layer": layer, "per_class": budget,
                         "repeats": 3, "test_accuracy": 0.5, "std": 0.01, "accuracies": [0.49, 0.5, 0.51],
                         "k": 20, "t": 0.07})
        rows.append({"init": init, "init_label": label, "mode": "all", "layer": "layer4", "per_class": budget,
                     "repeats": 1, "test_accuracy": 0.6, "ci_low": 0.5, "ci_high": 0.7, "accuracies": [0.6],
                     "history": [[1.2, 0.4, 0.45], [0.9, 0.6, 0.55], [0.7, 0.7, 0.6]]})
    meta = {"format": 2, "arch": "resnet18_small", "image_size": 32, "seed": 0, "classes": ["a", "b"],
            "modes": ["knn", "all"], "layers": list(layers), "head": "linear", "knn_k": 20, "knn_t": 0.07,
            "repeats": {"knn": 3, "all": 1}, "budgets": [budget],
            "inits": [{"init": run, "init_label": "run"}, {"init": "random", "init_label": "random"}]}
    folder = workspace / "compare" / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"format": 2, "meta": meta, "notes": [], "rows": rows,
                                                     "paired": []}))
    return folder


def new_window(qtbot, workspace, settings):
    from sslstudio.gui import MainWindow

    w = MainWindow(workspace=workspace, settings=settings)
    w.confirm_close = False
    w.show_dialogs = False
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    return w


def test_reopening_restores_folder_run_checks_and_results(qtbot, tmp_path, settings, tiny_images):
    ws = tmp_path / "ws"
    rotation = make_run(ws, "rotation-1", "rotation")
    jigsaw = make_run(ws, "jigsaw-1", "jigsaw")
    folder = make_comparison(ws, "20250101-000000", jigsaw)
    w1 = new_window(qtbot, ws, settings)
    with qtbot.waitSignal(w1.data_page.scan_finished, timeout=10_000):
        w1.data_page.set_folder(str(tiny_images))
    page, compare = w1.pretrain_page, w1.compare_page
    assert page.open_run(jigsaw) == 4
    # opening the run shows its comparison, and the checks follow what that comparison compared
    assert compare.table.rowCount() == 2 and compare.out_dir == folder
    assert sorted(compare.checked_inits()) == sorted([jigsaw, "random"])
    assert compare.modes() == ["knn", "all"] and compare.layers() == ["layer2", "layer4"]
    assert compare.budget() == {"per_class": 5}
    assert page.select_run(rotation)  # selected in the list, while jigsaw's curves are shown
    compare.tabs.setCurrentWidget(compare.epoch_tab)
    compare.flush()
    assert compare.epoch_tab.value() == jigsaw and compare._epoch_items  # the rows' per-epoch history
    before = (compare.checked_inits(), compare.layers(), compare.modes(), compare.budget(), compare.values())
    w1.close()

    w2 = new_window(qtbot, ws, settings)
    page2, compare2 = w2.pretrain_page, w2.compare_page
    assert w2.data_page.folder == str(tiny_images)  # reopened, and scanned again
    qtbot.waitUntil(lambda: w2.data_page.report is not None, timeout=10_000)
    assert w2.data_page.image_count() == 16
    assert page2.shown_run == jigsaw and page2.metric_train.points() == 2  # its plots, from metrics.jsonl
    assert page2.runs.currentItem().data(0, Qt.ItemDataRole.UserRole) == rotation
    assert (compare2.checked_inits(), compare2.layers(), compare2.modes(), compare2.budget(),
            compare2.values()) == before
    assert compare2.out_dir == folder and compare2.table.rowCount() == 2
    assert compare2.tabs.currentWidget() is compare2.epoch_tab and compare2.epoch_tab.value() == jigsaw
    compare2.flush()
    xs, ys = next(iter(compare2._epoch_items.values())).getData()
    assert list(xs) == [1, 2, 3] and list(ys) == pytest.approx([45, 55, 60])
    assert compare2.stale_note == ""

    # a change of the selection: the results no longer belong to it, and the page says so in one line
    compare2.set_checked_inits([rotation, "random"])
    assert compare2.table.rowCount() == 0 and compare2.rows == []
    assert compare2.status.text().startswith("The results shown were for jigsaw-1, random")
    assert compare2.status.text().endswith("run the comparison for the current selection.")
    assert compare2.shown_selection is None and not compare2.save_button.isEnabled()
    w2.close()

    # the third session shows no results (none belonged to the checks at the end of the second), and the
    # checks are those of the second session's end: rotation, not what the old results were for
    w3 = new_window(qtbot, ws, settings)
    assert sorted(w3.compare_page.checked_inits()) == sorted([rotation, "random"])
    assert w3.compare_page.table.rowCount() == 0 and w3.compare_page.shown_selection is None
    w3.close()


def test_each_setting_the_results_depend_on_clears_them(qtbot, window, tmp_path):
    ws = window.workspace
    jigsaw = make_run(ws, "jigsaw-1", "jigsaw")
    make_comparison(ws, "20250101-000000", jigsaw)
    window.pretrain_page.refresh_runs()
    compare = window.compare_page
    changes = [lambda: compare.set_layers(["layer4"]), lambda: compare.mode_head.setChecked(True),
               lambda: compare.set_budget(per_class=6), lambda: compare.knn_k.setValue(21),
               lambda: compare.repeats.setValue(2), lambda: compare.set_checked_inits(["random"])]
    for i, change in enumerate(changes):
        assert compare.show_results_for_run(jigsaw)
        assert compare.table.rowCount() == 2
        compare.set_layers(["layer2", "layer4"])  # what the results were for: nothing changes
        compare.set_budget(per_class=5)
        assert compare.table.rowCount() == 2 and compare.shown_selection is not None
        change()
        assert compare.table.rowCount() == 0, i
        assert compare.stale_note.startswith("The results shown were for jigsaw-1, random · kNN, all layers · "
                                             "layer2, layer4 · 5 per class;")
    # a setting of a mode that is not checked does not matter: the MLP head without "head" checked
    assert compare.show_results_for_run(jigsaw)
    compare.head_type.setCurrentIndex(compare.head_type.findData("mlp"))
    assert compare.table.rowCount() == 2


def test_results_of_a_deleted_folder_are_not_restored(qtbot, tmp_path, settings):
    import shutil

    ws = tmp_path / "ws"
    jigsaw = make_run(ws, "jigsaw-1", "jigsaw")
    folder = make_comparison(ws, "20250101-000000", jigsaw)
    w1 = new_window(qtbot, ws, settings)
    assert w1.compare_page.show_results_for_run(jigsaw)
    w1.close()
    shutil.rmtree(folder)
    w2 = new_window(qtbot, ws, settings)
    assert w2.compare_page.table.rowCount() == 0
    assert "no longer there" in w2.compare_page.status.text()
    assert sorted(w2.compare_page.checked_inits()) == sorted([jigsaw, "random"])  # the checks still are
    w2.close()


def test_a_data_folder_that_is_gone_is_named_not_scanned(qtbot, tmp_path, settings):
    settings.setValue("data/folder", str(tmp_path / "gone"))
    w = new_window(qtbot, tmp_path / "ws", settings)
    assert w.data_page.folder is None and "no longer there" in w.data_page.path_label.text()
    w.close()


def test_double_click_on_a_run_opens_it(qtbot, window):
    jigsaw = make_run(window.workspace, "jigsaw-1", "jigsaw")
    page = window.pretrain_page
    page.refresh_runs()
    window.go_to(2)
    qtbot.waitExposed(page.runs)
    item = page.runs.topLevelItem(0)
    rect = page.runs.visualItemRect(item)
    button, none = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    with qtbot.waitSignal(page.run_opened, timeout=5000) as blocker:
        # what a double-click delivers: press and release, then the second press as a double-click
        QTest.mouseClick(page.runs.viewport(), button, none, rect.center())
        QTest.mouseDClick(page.runs.viewport(), button, none, rect.center())
    assert blocker.args[0] == jigsaw and page.shown_run == jigsaw
    assert page.metric_train.points() == 2 and "jigsaw-1" in page.status.text()
