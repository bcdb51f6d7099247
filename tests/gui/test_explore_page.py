"""Step 6, Explore (issue 14): the page lists the initialisations, runs an exploration through its
JobRunner, draws one map per initialisation coloured by class, links a selection across the maps,
fills the neighbour gallery with the nearest images, cancels cleanly, offers UMAP only when it is
installed, clears maps that no longer belong to the selection, and keeps its settings across sessions."""

import html

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, Qt

from sslstudio.runs import RunDir

def make_run(workspace, name="rotation-1", seed=1):
    """A finished rotation run (resnet18_small, 32 px) whose checkpoint holds a real, seeded model."""
    from sslstudio.models import build_backbone
    from sslstudio.tasks import create_task

    path = workspace / "runs" / name
    run = RunDir(path).create()
    run.write_config({"task": "rotation", "arch": "resnet18_small", "image_size": 32, "task_options": {},
                      "seed": 0, "epochs": 1})
    run.write_summary({"status": "finished", "epochs": 1, "epochs_completed": 1})
    torch.manual_seed(seed)
    backbone = build_backbone("resnet18_small")
    model = create_task("rotation", {}, 32).build_head(backbone, backbone.feature_dim)
    torch.save({"model": model.state_dict()}, path / "checkpoints" / "last.pt")
    return str(path)


def new_window(qtbot, workspace, settings):
    from sslstudio.gui import MainWindow

    w = MainWindow(workspace=workspace, settings=settings)
    w.confirm_close = False
    w.show_dialogs = False
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    return w


def cpu(window):
    pre = window.pretrain_page
    pre.arch.setCurrentText("resnet18_small")
    pre.image_size_box.setValue(32)
    pre.device.setCurrentIndex(pre.device.findData("cpu"))


def test_the_page_lists_runs_and_random_and_sits_last(window):
    page = window.explore_page
    assert window.steps.item(5).text() == "6  Explore" and window.stack.widget(5) is page
    assert window.steps.item(4).text() == "5  Export"  # the old steps keep their places
    run = make_run(window.workspace)
    window.pretrain_page.refresh_runs()
    keys = [page.inits.item(i).data(Qt.ItemDataRole.UserRole) for i in range(page.inits.count())]
    assert keys == [run, "imagenet", "random"]
    assert page.checked_inits() == [run, "random"]  # the newest run and random, side by side
    assert page.stage.currentText() == "layer3" and page.stage.count() == 4  # resnet18_small's stages
    assert page.limit.value() == 2000 and page.limit.maximum() == 10_000
    assert "close share features" in page.intro.text()


@pytest.mark.slow
def test_an_exploration_draws_two_linked_maps_the_nearest_images_and_the_run_s_extras(qtbot, window, demo_root):
    page = window.explore_page
    cpu(window)
    run = make_run(window.workspace)
    window.pretrain_page.refresh_runs()
    page.set_checked_inits([run, "random"])
    page.labelled.setText(str(demo_root / "labelled"))
    page.method.setCurrentIndex(page.method.findData("pca"))
    page.extras.setChecked(True)
    window.go_to(5)
    with qtbot.waitSignal(page.exploration_finished, timeout=60_000) as blocker:
        assert page.start(out=str(window.workspace / "explore" / "t1"))
        assert page.is_running() and not page.run_button.isEnabled() and page.stop_button.isEnabled()
    result = blocker.args[0]
    n = len(result["paths"])
    assert n == 36 and result["colour_by"] == "class"
    assert [e["init"] for e in result["inits"]] == [run, "random"]
    qtbot.waitUntil(lambda: page.run_button.isEnabled(), timeout=5000)
    from sslstudio.gui.window import NEXT_STEPS

    assert window.statusBar().currentMessage() == NEXT_STEPS["exploration"]  # what to do next

    # one point per image in each map, coloured by its class (the engine's colours, those of the legend)
    from sslstudio.gui.explore_page import label_colours

    colours = label_colours(len(result["label_names"]))
    classes = [p.split("/")[-2] for p in result["paths"]]
    assert [result["label_names"][k] for k in result["labels"]] == classes
    for m in page.maps:
        assert m.point_count() == n and m.isVisible()
        assert [c.name() for c in m.brushes()] == [colours[k].name() for k in result["labels"]]
    assert all(name in page.legend.text() for name in ("boat", "car", "house", "tree"))

    # a click selects the same image in both maps and fills the gallery with the brute-force nearest
    page.select_point(7)
    assert page.selected_index == 7
    for m, entry in zip(page.maps, result["inits"]):
        assert m.selected == 7
        x, y = m.ring.getData()
        assert (x[0], y[0]) == pytest.approx(tuple(entry["coords"][7]))
    assert [row[0] for row in page.gallery.rows] == [e["label"] for e in result["inits"]]
    for row, entry in zip(page.gallery.rows, result["inits"]):
        f = entry["features"]
        sims = f @ f[7]
        sims[7] = -np.inf
        order = np.argsort(-sims, kind="stable")[:8]
        assert row[1] == 7 and row[2] == order.tolist()
        assert row[3] == pytest.approx(sims[order].tolist(), abs=1e-5)
    assert page.maps[0].neighbours == page.gallery.rows[0][2]

    # hovering a point shows that image
    m = page.maps[1]
    x, y = result["inits"][1]["coords"][3]
    assert m.point_at(float(x), float(y)) == 3
    page.show_hover(3, m.mapToGlobal(QPoint(20, 20)))
    assert page.hover_card.isVisible() and page.hover_card.index == 3
    assert f"class: {classes[3]}" in page.hover_card.caption.text()
    page.show_hover(-1, QPoint())
    assert not page.hover_card.isVisible()

    out = window.workspace / "explore" / "t1"
    assert f"wrote {len(result['files'])} files to {out}." in page.summary.text() and page.open_button.isEnabled()
    written = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))  # not the lock
    assert sorted(page.summary.toolTip().splitlines()[1:]) == written
    # the engine's activation maps and the run's shortcut table, shown as they are
    shown = sorted(w.path.name for w in page.activation_images)
    pngs = sorted(p.name for p in out.glob("*.png") if p.name.startswith(("activations_", "gradcam")))
    assert shown == pngs == ["activations_random.png", "activations_rotation-1.png", "gradcam.png"]
    assert all(not w.pixmap.isNull() for w in page.activation_images)
    rows = result["extras"]["shortcuts"]["rows"]
    table = page.shortcut_table
    assert rows and table.rowCount() == len(rows) and not table.isHidden()
    for r, row in enumerate(rows):
        cells = [table.item(r, c).text() for c in range(table.columnCount())]
        assert cells[0] == row["check"]
        assert float(cells[1]) == pytest.approx(100 * row["accuracy_with"], abs=0.05)
        assert float(cells[2]) == pytest.approx(100 * row["accuracy_without"], abs=0.05)
        assert float(cells[3]) == pytest.approx(100 * row["gain"], abs=0.05)
        assert table.item(r, 0).toolTip() == row["meaning"]
        assert html.escape(row["meaning"]) in page.shortcut_meanings.text()

    # the stale-result rule: another method clears the maps, with a note naming what they were for
    page.method.setCurrentIndex(page.method.findData("tsne"))
    assert page.result is None and all(m.point_count() == 0 for m in page.maps)
    assert page.gallery.rows == [] and page.shown_selection is None and not page.activation_images
    assert page.shortcut_table.rowCount() == 0
    assert page.status.text().startswith("The maps shown were for rotation-1, random · layer3 · PCA")


@pytest.mark.slow
def test_cancel_stops_the_exploration_and_leaves_the_page_usable(qtbot, window, demo_root):
    page = window.explore_page
    cpu(window)
    page.data.setText(str(demo_root / "unlabelled"))
    page.labelled.setText("")
    page.method.setCurrentIndex(page.method.findData("pca"))
    page.extras.setChecked(False)
    page.set_checked_inits(["random"])
    seen = []
    original = page.on_event

    def cancel_at_first_progress(ev):  # cancel while the engine works, not before it starts
        original(ev)
        if getattr(ev, "kind", None) == "progress" and not seen:
            seen.append(ev)
            page.stop()

    page.on_event = cancel_at_first_progress
    finished = []
    page.exploration_finished.connect(finished.append)
    assert page.start()
    qtbot.waitUntil(lambda: not page.is_running() and page.run_button.isEnabled(), timeout=30_000)
    assert seen and not finished and page.result is None
    assert page.status.text().startswith("Cancelled")
    assert all(m.point_count() == 0 for m in page.maps)
    assert page.inits.isEnabled() and page.stage.isEnabled() and not page.stop_button.isEnabled()

    page.on_event = original
    with qtbot.waitSignal(page.exploration_finished, timeout=60_000) as blocker:
        assert page.start()
    result = blocker.args[0]
    assert result["colour_by"] == "cluster" and page.maps[0].point_count() == len(result["paths"]) == 40
    assert not page.maps[1].isVisibleTo(page)  # one initialisation: one map
    assert "k-means clusters" in page.legend.text()


def test_a_task_without_defences_says_so(window):
    from sslstudio.explore.shortcuts import no_defence_row
    from sslstudio.tasks import create_task

    page = window.explore_page
    page.result = {}  # a result is shown
    page.show_shortcuts({"rows": [no_defence_row(create_task("colorization", {}, 32), "none")]})
    assert page.shortcut_note.text().startswith("No defences declared for the colorization task")
    assert page.shortcut_table.rowCount() == 0 and page.shortcut_table.isHidden()
    page.show_shortcuts({"skipped": "no run"})
    assert "check a run" in page.shortcut_note.text()


def test_umap_is_offered_only_when_installed(window, monkeypatch):
    from sslstudio.explore import embedding
    from sslstudio.gui.explore_page import ExplorePage

    monkeypatch.setattr(embedding, "umap_available", lambda: False)
    page = ExplorePage(window)
    methods = [page.method.itemData(i) for i in range(page.method.count())]
    assert methods == ["pca", "tsne"] and page.method.currentData() == "tsne"
    assert not page.umap_hint.isHidden() and not page.umap_hint.isEnabled()
    assert "sslstudio[umap]" in page.umap_hint.text()
    page.shutdown()

    monkeypatch.setattr(embedding, "umap_available", lambda: True)
    page = ExplorePage(window)
    assert [page.method.itemData(i) for i in range(page.method.count())] == ["pca", "tsne", "umap"]
    assert page.umap_hint.isHidden()
    page.shutdown()


@pytest.mark.slow
def test_stage_method_and_checked_inits_survive_a_reopened_window(qtbot, tmp_path, settings):
    ws = tmp_path / "ws"
    run = make_run(ws)
    other = make_run(ws, "rotation-2", seed=2)
    w1 = new_window(qtbot, ws, settings)
    page = w1.explore_page
    page.set_checked_inits([other, "random"])
    page.stage.setCurrentText("layer2")
    page.method.setCurrentIndex(page.method.findData("pca"))
    page.limit.setValue(500)
    page.extras.setChecked(False)
    w1.close()

    w2 = new_window(qtbot, ws, settings)
    page2 = w2.explore_page
    assert page2.checked_inits() == [other, "random"] and run not in page2.checked_inits()
    assert page2.stage.currentText() == "layer2" and page2.method.currentData() == "pca"
    assert page2.limit.value() == 500 and not page2.extras.isChecked()
    w2.close()
