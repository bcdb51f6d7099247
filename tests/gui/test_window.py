"""The window driven end to end with pytest-qt (offscreen, tiny images, one-epoch CPU runs)."""

import json
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QElapsedTimer, QMimeData, Qt, QTimer, QUrl
from PySide6.QtWidgets import QTableWidget

from sslstudio.tasks import get_task, list_tasks


def scan(qtbot, window, folder):
    with qtbot.waitSignal(window.data_page.scan_finished, timeout=10_000) as blocker:
        window.data_page.set_folder(str(folder))
    return blocker.args[0]


@pytest.mark.slow
def test_window_builds_without_dialogs(window):
    assert window.steps.count() == 6
    assert window.stack.count() == 6
    window.go_to(4)
    assert window.stack.currentWidget() is window.export_page
    assert window.workspace.is_dir()


@pytest.mark.slow
def test_choose_folder_scans_and_shows_count(qtbot, window, tiny_images):
    report = scan(qtbot, window, tiny_images)
    assert len(report.files) == 16
    assert "16" in window.data_page.summary_label.text()
    assert "png" in window.data_page.summary_label.text()
    assert window.data_page.model.rowCount() == 16
    qtbot.waitUntil(lambda: window.data_page.model.loaded_count() > 0, timeout=5000)
    assert window.data_page.recent_folders()[0] == str(tiny_images)


@pytest.mark.slow
def test_drop_folder_is_accepted(window, tiny_images):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tiny_images))])
    assert window.data_page._dropped_folder(mime) == str(tiny_images)
    mime.setUrls([QUrl.fromLocalFile(str(tiny_images / "img_00.png"))])
    assert window.data_page._dropped_folder(mime) == str(tiny_images)


@pytest.mark.slow
def test_rotation_preview_shows_samples_and_enlarges_one(qtbot, window, tiny_images):
    window.task_page.select_task("rotation")
    with qtbot.waitSignal(window.task_page.preview_ready, timeout=15_000) as blocker:
        scan(qtbot, window, tiny_images)
    assert blocker.args[0] == window.task_page.grid.count() > 0
    window.task_page.grid.setCurrentRow(2)
    assert "Sample 3" in window.task_page.explanation.text()
    assert window.task_page.large.pixmap() is not None and not window.task_page.large.pixmap().isNull()
    # a setting change re-renders (debounced)
    with qtbot.waitSignal(window.task_page.preview_ready, timeout=15_000):
        window.task_page.new_seed_button.click()
    assert window.task_page.seed.value() == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list_tasks())
def test_settings_form_is_generated_for_every_task(window, name):
    window.task_page.select_task(name)
    form = window.task_page.form
    fields = [f.name for f in __import__("dataclasses").fields(get_task(name).config_cls)]
    for field in fields:
        assert form.widget(field).toolTip()
    assert form.values() == {}
    for field in fields:  # change every field, then reset to the paper defaults
        w = form.widget(field)
        if hasattr(w, "setChecked"):
            w.setChecked(not w.isChecked())
    form.reset()
    assert form.values() == {}


@pytest.mark.slow
def test_pretraining_one_epoch_plots_and_finishes(qtbot, window, tiny_images, fast):
    scan(qtbot, window, tiny_images)
    fast(window)
    page = window.pretrain_page
    # a QTimer probe: the longest gap between 20 ms ticks measures the longest event-loop stall
    clock, stalls = QElapsedTimer(), [0]
    clock.start()
    last = [clock.elapsed()]

    def tick():
        now = clock.elapsed()
        stalls[0] = max(stalls[0], now - last[0])
        last[0] = now

    probe = QTimer()
    probe.setInterval(20)
    probe.timeout.connect(tick)
    probe.start()
    with qtbot.waitSignal(page.run_finished, timeout=60_000) as blocker:
        page.start_button.click()
        assert not page.start_button.isEnabled() and page.stop_button.isEnabled()
    probe.stop()
    summary = blocker.args[0]
    assert summary["status"].startswith("finished")
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    assert not page.stop_button.isEnabled()
    assert page.loss_raw.points() == 2  # 16 images / batch 8
    assert page.metric_train.points() == 1
    x, y = page.loss_raw.item.getData()
    assert len(x) == 2
    # the pretext plot reads in percent like the tables: its axis says so and its point is 100x the fraction
    _x, acc = page.metric_train.item.getData()
    assert acc[0] == pytest.approx(100 * summary["final_train_accuracy"])
    assert page.metric_plot.getPlotItem().getAxis("left").labelText == "accuracy (%)"
    run_dir = Path(page.run_dir)
    assert run_dir.parent == window.workspace / "runs" and run_dir.name.startswith("rotation-")
    assert (run_dir / "summary.json").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    from sslstudio.data.cache import default_cache_dir

    # the same decode cache as the command line's, so a run in either maps what the other decoded
    assert config["cache_dir"] == str(default_cache_dir()) and config["compile"] is False
    assert list(default_cache_dir().glob("decoded-*.npy"))
    print(f"longest event-loop stall during pretraining: {stalls[0]} ms")
    assert stalls[0] < 2000

    # the run list shows it; reopening loads its curves from metrics.jsonl
    assert page.runs.topLevelItemCount() == 1
    item = page.runs.topLevelItem(0)
    assert item.text(0) == "rotation" and item.text(3).startswith("finished")
    assert item.text(4).endswith("%") and "." in item.text(4)  # the metric column in percent, one decimal
    page.clear_plots()
    assert page.loss_raw.points() == 0
    assert page.open_run(item.data(0, Qt.ItemDataRole.UserRole)) > 0
    # the metrics file logs every 10th step and each epoch's last one (the engine default)
    assert page.loss_raw.points() == 1 and page.metric_train.points() == 1
    page.flush()
    assert page.metric_train.item.getData()[1][0] == pytest.approx(acc[0])  # reopened: percent as well

    # export the run's backbone
    export = window.export_page
    assert export.run.count() == 1
    export.destination.setText(str(run_dir.parent.parent / "exported"))
    for fmt, box in export.format_boxes.items():
        box.setChecked(fmt in ("pt", "safetensors"))
    with qtbot.waitSignal(export.export_finished, timeout=30_000) as blocker:
        export.export_button.click()
    names = {Path(p).name for p in blocker.args[0]}
    assert {"backbone.pt", "backbone.safetensors", "metadata.json"} <= names
    assert export.files.count() == len(names)
    listed = [export.files.item(i).text() for i in range(export.files.count())]
    meta = next(t for t in listed if "metadata.json" in t)
    assert meta.endswith(" bytes)") or meta.endswith(" KB)")  # a small file in a unit that fits, not "0.00 MB"
    assert "load_backbone" in export.snippet.toPlainText()
    qtbot.waitUntil(lambda: export.export_button.isEnabled(), timeout=5000)


@pytest.mark.slow
def test_stop_mid_run_keeps_the_window_usable(qtbot, window, tiny_images, fast):
    scan(qtbot, window, tiny_images)
    fast(window, epochs=50)
    page = window.pretrain_page
    page.start_button.click()
    qtbot.waitUntil(lambda: page.loss_raw.buffer.n > 0, timeout=30_000)
    assert not any(w.isEnabled() for w in page.settings_widgets())  # compile included: nothing changes mid-run
    page.pause_button.click()
    assert page.resume_button.isEnabled() and page.job.control.paused
    page.resume_button.click()
    with qtbot.waitSignal(page.run_finished, timeout=30_000) as blocker:
        window.stop_action.trigger()  # Esc / Ctrl+.
    assert blocker.args[0]["status"] == "cancelled"
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    assert not page.stop_button.isEnabled() and all(w.isEnabled() for w in page.settings_widgets())
    assert not page.job.thread.isRunning()


@pytest.mark.slow
def test_failing_run_shows_the_error_and_returns_to_idle(qtbot, window, bad_images, fast):
    report = scan(qtbot, window, bad_images)
    assert len(report.files) == 6
    fast(window)
    page = window.pretrain_page
    with qtbot.waitSignal(page.run_failed, timeout=30_000) as blocker:
        page.start_button.click()
    message = blocker.args[0]
    assert message and "Traceback" not in message
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    assert not page.stop_button.isEnabled() and not page.pause_button.isEnabled()
    assert "Failed" in page.status.text()
    assert message in window.statusBar().currentMessage()


@pytest.mark.slow
def test_start_without_folder_says_so(window):
    window.pretrain_page.start()
    assert "folder" in window.pretrain_page.status.text()
    assert window.pretrain_page.start_button.isEnabled()


@pytest.mark.slow
def test_compare_against_random_fills_the_table(qtbot, window, demo_root):
    page = window.compare_page
    window.pretrain_page.arch.setCurrentText("resnet18_small")
    window.pretrain_page.image_size_box.setValue(32)
    window.pretrain_page.device.setCurrentIndex(window.pretrain_page.device.findData("cpu"))
    page.labelled.setText(str(demo_root / "labelled" / "train"))
    page.test_folder.setText(str(demo_root / "labelled" / "test"))
    page.set_checked_inits(["random"])  # baselines only
    assert page.stages.count() == 4  # resnet18_small: layer1 ... layer4
    page.set_layers(["layer2", "layer4"])
    page.set_budget(fraction=0.5)
    page.set_modes(["head"])
    page.repeats.setValue(1)
    seen = []
    page.row_added.connect(lambda row: seen.append((row, page.table.rowCount())))
    with qtbot.waitSignal(page.comparison_finished, timeout=60_000) as blocker:
        page.run_button.click()
    rows = blocker.args[0]["rows"]
    assert [r["layer"] for r in rows] == ["layer2", "layer4"] and rows[0]["init"] == "random"
    assert len(seen) == 2 and seen[0][1] == 1  # the table filled from the first row event on
    assert page.table.rowCount() == 1 and page.table.columnCount() == 2
    assert page.columns == ["linear layer2", "linear layer4"]
    assert page.table.horizontalHeaderItem(0).text() == "linear\nlayer2"
    assert page.table.horizontalHeaderItem(0).toolTip() == "linear layer2"
    assert "[" in page.table.item(0, 0).text()  # one repeat: an interval, not a std
    assert page.table.verticalHeaderItem(0).text() == "random"
    stages, series = page.stage_series()
    assert stages == ["layer2", "layer4"] and len(series["random"]) == 2
    page.tabs.setCurrentWidget(page.stage_tab)
    page.flush()
    x, y = page._stage_curves["random"].getData()
    assert list(x) == [1, 2] and all(0 <= v <= 100 for v in y)
    qtbot.waitUntil(lambda: page.run_button.isEnabled(), timeout=5000)


@pytest.mark.slow
def test_table_shows_unavailable_rows(window):
    window.compare_page.set_rows([
        {"init": "random", "init_label": "random", "mode": "head", "layer": "layer4", "test_accuracy": 0.5},
        {"init": "imagenet", "init_label": "imagenet", "mode": "head", "layer": "layer4", "test_accuracy": None,
         "error": "no ImageNet weights here"},
    ])
    table = window.compare_page.table
    assert table.rowCount() == 2
    assert table.item(0, 0).text() == "50.0"
    assert "no ImageNet weights" in table.item(1, 0).text()
    assert table.item(1, 0).toolTip() == "no ImageNet weights here"


@pytest.mark.slow
def test_settings_persist(qtbot, tmp_path, settings, tiny_images):
    from sslstudio.gui import MainWindow

    w = MainWindow(workspace=tmp_path / "ws", settings=settings)
    qtbot.addWidget(w)
    w.confirm_close = False
    w.pretrain_page.epochs.setValue(7)
    w.pretrain_page.seed.setValue(42)
    w.pretrain_page.compile.setChecked(True)
    w.task_page.select_task("rotation")
    w.task_page.form.widget("horizontal_flip").setChecked(False)
    w.compare_page.budget_kind.setCurrentIndex(2)
    w.compare_page.fraction.setValue(0.3)
    w.compare_page.mode_all.setChecked(False)
    w.compare_page.epochs_all.setValue(9)
    w.compare_page.test_folder.setText(str(tmp_path / "test"))
    with qtbot.waitSignal(w.data_page.scan_finished, timeout=10_000):
        w.data_page.set_folder(str(tiny_images))
    w.close()
    w2 = MainWindow(workspace=tmp_path / "ws", settings=settings)
    qtbot.addWidget(w2)
    w2.confirm_close = False
    assert w2.pretrain_page.epochs.value() == 7 and w2.pretrain_page.seed.value() == 42
    assert w2.pretrain_page.compile.isChecked()
    assert w2.task_page.options() == {"horizontal_flip": False}
    assert w2.data_page.recent_folders() == [str(tiny_images)]
    assert json.loads(settings.value("pretrain/values"))["epochs"] == 7
    c = w2.compare_page
    assert (c.budget_kind.currentIndex(), c.fraction.value(), c.mode_all.isChecked(), c.epochs_all.value(),
            c.test_folder.text()) == (2, 0.3, False, 9, str(tmp_path / "test"))
    w2.close()


@pytest.mark.slow
def test_close_during_training_cancels_and_waits(qtbot, tmp_path, settings, tiny_images, fast):
    from sslstudio.gui import MainWindow

    w = MainWindow(workspace=tmp_path / "ws", settings=settings)
    qtbot.addWidget(w)
    w.show_dialogs = False
    with qtbot.waitSignal(w.data_page.scan_finished, timeout=10_000):
        w.data_page.set_folder(str(tiny_images))
    fast(w, epochs=50)
    w.pretrain_page.start()
    qtbot.waitUntil(lambda: w.pretrain_page.loss_raw.buffer.n > 0, timeout=30_000)
    w.confirm_close = False
    t0 = time.perf_counter()
    assert w.close()
    assert time.perf_counter() - t0 < 20
    assert not w.pretrain_page.job.thread.isRunning()
    assert not w.running_jobs()


def test_closing_asks_while_any_job_runs_and_names_it(window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from sslstudio.gui import window as window_module

    asked = []

    def answer_no(parent, title, text, *args):
        asked.append(text)
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(window_module.QMessageBox, "question", answer_no)
    window.confirm_close = True
    assert window.close_question() is None
    pages = {"pretrain": window.pretrain_page, "compare": window.compare_page, "explore": window.explore_page}
    words = {"pretrain": "checkpoint is kept", "compare": "rows finished so far", "explore": "exploration"}
    for name, page in pages.items():
        monkeypatch.setattr(page, "is_running", lambda: True)
        assert words[name] in window.close_question()
        assert not window.close() and window.isVisible()  # "No" keeps the window and the job
        assert words[name] in asked[-1]
        monkeypatch.setattr(page, "is_running", lambda: False)
    assert len(asked) == 3


@pytest.mark.slow
def test_stop_then_resume_an_interrupted_run(qtbot, window, tiny_images, fast, monkeypatch):
    import sslstudio.gui.pretrain_page as pretrain_page

    scan(qtbot, window, tiny_images)
    fast(window, epochs=2)
    page = window.pretrain_page
    holder = {}
    engine_pretrain = pretrain_page.pretrain

    def pausing_pretrain(config, on_event=None, control=None):
        # in the worker thread, installed before the job starts (no connection made while it emits)
        def on_event_then_pause(ev):
            on_event(ev)
            if ev.kind == "checkpoint" and not holder:  # before epoch 2 starts
                holder["path"] = ev.path
                control.pause()

        return engine_pretrain(config, on_event=on_event_then_pause, control=control)

    monkeypatch.setattr(pretrain_page, "pretrain", pausing_pretrain)
    page.start()
    qtbot.waitUntil(lambda: page.stop_button.isEnabled() and "path" in holder, timeout=30_000)
    with qtbot.waitSignal(page.run_finished, timeout=30_000) as blocker:
        page.stop_button.click()
    assert blocker.args[0]["status"] == "cancelled" and blocker.args[0]["epochs_completed"] == 1
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    run_dir = page.run_dir
    assert page.select_run(run_dir)
    assert page.runs.currentItem().text(3) == "cancelled"
    assert page.resume_run_button.isEnabled()
    with qtbot.waitSignal(page.run_finished, timeout=30_000) as blocker:
        page.resume_run_button.click()
    summary = blocker.args[0]
    assert summary["status"].startswith("finished") and summary["epochs_completed"] == 2
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    assert page.metric_train.points() == 2  # the reopened epoch plus the resumed one
    assert page.select_run(run_dir) and not page.resume_run_button.isEnabled()
    assert json.loads((Path(run_dir) / "summary.json").read_text())["epochs_completed"] == 2


@pytest.mark.slow
def test_reopening_a_run_shows_its_latest_comparison(qtbot, window, tmp_path):
    from sslstudio.runs import RunDir

    run = window.workspace / "runs" / "rotation-1"
    RunDir(run).create().write_config({"task": "rotation", "arch": "resnet18_small", "metric": "accuracy"})
    RunDir(run).append_metrics([{"type": "step", "epoch": 0, "step": 1, "global_step": 1, "loss": 1.0},
                                {"type": "epoch", "epoch": 0, "train_loss": 1.0, "train_accuracy": 0.5}])
    RunDir(run).write_summary({"status": "finished", "metric": "accuracy", "final_train_accuracy": 0.5})
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    for name, acc in (("20250101-000000", 0.3), ("20250102-000000", 0.6)):
        folder = window.workspace / "compare" / name
        folder.mkdir(parents=True)
        rows = [{"init": str(run), "init_label": "rotation (rotation-1)", "mode": "head", "layer": "layer4",
                 "test_accuracy": acc},
                {"init": "imagenet", "init_label": "imagenet", "mode": "head", "layer": "layer4",
                 "test_accuracy": None, "error": "no weights"}]
        (folder / "results.json").write_text(json.dumps(rows))
        time.sleep(0.02)
    page = window.pretrain_page
    page.refresh_runs()
    assert page.open_run(str(run)) == 2
    table = window.compare_page.table
    assert table.rowCount() == 2 and table.item(0, 0).text() == "60.0"
    assert "step 4" in page.status.text()
    assert window.compare_page.inits.count() == 3  # the finished run, ImageNet, random


@pytest.mark.slow
def test_results_table_copy_and_save(qtbot, window, tmp_path):
    from PySide6.QtGui import QGuiApplication

    page = window.compare_page
    rows = [{"init": "random", "init_label": "random", "mode": "head", "layer": "layer2", "test_accuracy": 0.25},
            {"init": "random", "init_label": "random", "mode": "head", "layer": "layer4", "test_accuracy": 0.5},
            {"init": "random", "init_label": "random", "mode": "all", "layer": "layer4", "test_accuracy": 0.75},
            {"init": "imagenet", "init_label": "imagenet", "mode": "head", "layer": "layer2",
             "test_accuracy": None, "error": "missing file"}]
    for r in rows:  # as the row events arrive
        page.add_row(r)
    assert page.table.columnCount() == 3
    assert page.columns[2] == "all layers"
    # imagenet is unavailable everywhere for one reason: one wide cell says why
    assert page.table.columnSpan(1, 0) == 3 and page.table.item(1, 0).toolTip() == "missing file"
    text = page.copy_table()
    assert QGuiApplication.clipboard().text() == text
    lines = text.splitlines()
    assert lines[0] == "initialisation\tlabels per class\tlinear layer2\tlinear layer4\tall layers"
    assert lines[1] == "random\tall\t25.0\t50.0\t75.0"
    assert lines[2].startswith("imagenet\tall\tunavailable: missing file")
    # "Save…" writes the engine's own files, never a second formatter's
    page.out_dir = tmp_path / "cmp"
    page.out_dir.mkdir()
    (page.out_dir / "results.md").write_text("| engine | table |\n")
    (page.out_dir / "results.csv").write_text("engine,csv\n")
    assert page.save_table(str(tmp_path / "t.md")).read_text() == "| engine | table |\n"
    assert page.save_table(str(tmp_path / "t.csv")).read_text() == "engine,csv\n"
    stages, series = page.stage_series()
    assert stages == ["layer2", "layer4"]
    assert series["random · linear probe"] == [0.25, 0.5] and series["random · all layers"] == [None, 0.75]
    assert series["imagenet · linear probe"] == [None, None]
    page.tabs.setCurrentWidget(page.stage_tab)  # a chart is redrawn when it is shown
    assert page._stage_axis.tickStrings([1, 2], 1, 1) == ["layer2", "layer4"]


@pytest.mark.slow
def test_newer_preview_request_supersedes_an_older_one(qtbot, window, tiny_images):
    window.task_page.select_task("rotation")
    with qtbot.waitSignal(window.task_page.preview_ready, timeout=15_000):
        scan(qtbot, window, tiny_images)
    tp = window.task_page
    ready = []
    tp.preview_ready.connect(ready.append)
    tp.start_preview()
    first = tp.job
    tp.seed.setValue(5)
    tp.start_preview()
    assert tp.job is not first and first.control.cancelled  # the older request is superseded
    qtbot.waitUntil(lambda: len(ready) >= 1 and not any(j.is_running() for j in window.running_jobs()),
                    timeout=15_000)
    assert len(ready) == 1  # the stale result was discarded
    assert "seed 5" in tp.preview_status.text()


@pytest.mark.slow
def test_scan_then_sizes_and_unreadable_files_listed(qtbot, window, tiny_images):
    (tiny_images / "empty.jpg").write_bytes(b"")
    (tiny_images / "notes.png").write_text("not an image")
    page = window.data_page
    with qtbot.waitSignal(page.inspect_finished, timeout=10_000) as blocker:
        page.set_folder(str(tiny_images))
    inspection = blocker.args[0]
    assert inspection.readable == 16 and inspection.size_range() == "32x32"
    assert "32x32" in page.check_label.text() and "2 file(s) cannot be read" in page.check_label.text()
    assert page.skipped_button.isVisibleTo(page)
    dialog = page.skipped_dialog()
    table = dialog.findChild(QTableWidget, "skippedTable")
    found = {Path(table.item(r, 0).text()).name: table.item(r, 1).text() for r in range(table.rowCount())}
    assert found == {"empty.jpg": "empty file", "notes.png": "not an image"}
    dialog.deleteLater()
