"""The window driven end to end with pytest-qt (offscreen, tiny images, one-epoch CPU runs)."""

import json
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QElapsedTimer, QMimeData, Qt, QTimer, QUrl

from sslstudio.tasks import get_task, list_tasks


def scan(qtbot, window, folder):
    with qtbot.waitSignal(window.data_page.scan_finished, timeout=10_000) as blocker:
        window.data_page.set_folder(str(folder))
    return blocker.args[0]


def test_window_builds_without_dialogs(window):
    assert window.steps.count() == 5
    assert window.stack.count() == 5
    window.go_to(4)
    assert window.stack.currentWidget() is window.export_page
    assert window.workspace.is_dir()


def test_choose_folder_scans_and_shows_count(qtbot, window, tiny_images):
    report = scan(qtbot, window, tiny_images)
    assert len(report.files) == 16
    assert "16" in window.data_page.summary_label.text()
    assert "png" in window.data_page.summary_label.text()
    assert window.data_page.model.rowCount() == 16
    qtbot.waitUntil(lambda: window.data_page.model.loaded_count() > 0, timeout=5000)
    assert window.data_page.recent_folders()[0] == str(tiny_images)


def test_drop_folder_is_accepted(window, tiny_images):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tiny_images))])
    assert window.data_page._dropped_folder(mime) == str(tiny_images)
    mime.setUrls([QUrl.fromLocalFile(str(tiny_images / "img_00.png"))])
    assert window.data_page._dropped_folder(mime) == str(tiny_images)


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
    assert summary["status"] == "finished"
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    assert not page.stop_button.isEnabled()
    assert page.loss_raw.points() == 2  # 16 images / batch 8
    assert page.metric_train.points() == 1
    x, y = page.loss_raw.item.getData()
    assert len(x) == 2
    run_dir = Path(page.run_dir)
    assert run_dir.parent == window.workspace / "runs" and run_dir.name.startswith("rotation-")
    assert (run_dir / "summary.json").is_file()
    print(f"longest event-loop stall during pretraining: {stalls[0]} ms")
    assert stalls[0] < 2000

    # the run list shows it; reopening loads its curves from metrics.jsonl
    assert page.runs.topLevelItemCount() == 1
    item = page.runs.topLevelItem(0)
    assert item.text(0) == "rotation" and item.text(3) == "finished"
    page.clear_plots()
    assert page.loss_raw.points() == 0
    assert page.open_run(item.data(0, Qt.ItemDataRole.UserRole)) > 0
    assert page.loss_raw.points() == 2 and page.metric_train.points() == 1

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
    assert "load_backbone" in export.snippet.toPlainText()
    qtbot.waitUntil(lambda: export.export_button.isEnabled(), timeout=5000)


def test_stop_mid_run_keeps_the_window_usable(qtbot, window, tiny_images, fast):
    scan(qtbot, window, tiny_images)
    fast(window, epochs=50)
    page = window.pretrain_page
    page.start_button.click()
    qtbot.waitUntil(lambda: page.loss_raw.buffer.n > 0, timeout=30_000)
    page.pause_button.click()
    assert page.resume_button.isEnabled() and page.job.control.paused
    page.resume_button.click()
    with qtbot.waitSignal(page.run_finished, timeout=30_000) as blocker:
        window.stop_action.trigger()  # Esc / Ctrl+.
    assert blocker.args[0]["status"] == "cancelled"
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    assert not page.stop_button.isEnabled() and page.arch.isEnabled()
    assert not page.job.thread.isRunning()


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


def test_start_without_folder_says_so(window):
    window.pretrain_page.start()
    assert "folder" in window.pretrain_page.status.text()
    assert window.pretrain_page.start_button.isEnabled()


def test_compare_against_random_fills_the_table(qtbot, window, demo_root):
    page = window.compare_page
    window.pretrain_page.arch.setCurrentText("resnet18_small")
    window.pretrain_page.image_size_box.setValue(32)
    window.pretrain_page.device.setCurrentIndex(window.pretrain_page.device.findData("cpu"))
    page.labelled.setText(str(demo_root / "labelled"))
    page.init_run.setCurrentIndex(0)  # baselines only
    page.baseline_imagenet.setChecked(False)
    page.mode_all.setChecked(False)
    page.epochs_head.setValue(1)
    with qtbot.waitSignal(page.comparison_finished, timeout=60_000) as blocker:
        page.run_button.click()
    rows = blocker.args[0]
    assert len(rows) == 1 and rows[0]["init"] == "random"
    assert page.table.rowCount() == 1 and page.table.columnCount() == 1
    assert page.table.item(0, 0).text().endswith("%")
    assert page.table.verticalHeaderItem(0).text() == "random"
    assert len(page._curves) == 1
    qtbot.waitUntil(lambda: page.run_button.isEnabled(), timeout=5000)


def test_table_shows_unavailable_rows(window):
    window.compare_page.set_rows([
        {"init": "random", "init_label": "random", "mode": "head", "layer": "layer4", "test_accuracy": 0.5},
        {"init": "imagenet", "init_label": "imagenet", "mode": "head", "layer": "layer4", "test_accuracy": None,
         "error": "no ImageNet weights here"},
    ])
    table = window.compare_page.table
    assert table.rowCount() == 2
    assert table.item(0, 0).text() == "50.0%"
    assert "no ImageNet weights" in table.item(1, 0).text()
    assert table.item(1, 0).toolTip() == "no ImageNet weights here"


def test_settings_persist(qtbot, tmp_path, settings, tiny_images):
    from sslstudio.gui import MainWindow

    w = MainWindow(workspace=tmp_path / "ws", settings=settings)
    qtbot.addWidget(w)
    w.confirm_close = False
    w.pretrain_page.epochs.setValue(7)
    w.pretrain_page.seed.setValue(42)
    w.task_page.select_task("rotation")
    w.task_page.form.widget("horizontal_flip").setChecked(False)
    with qtbot.waitSignal(w.data_page.scan_finished, timeout=10_000):
        w.data_page.set_folder(str(tiny_images))
    w.close()
    w2 = MainWindow(workspace=tmp_path / "ws", settings=settings)
    qtbot.addWidget(w2)
    w2.confirm_close = False
    assert w2.pretrain_page.epochs.value() == 7 and w2.pretrain_page.seed.value() == 42
    assert w2.task_page.options() == {"horizontal_flip": False}
    assert w2.data_page.recent_folders() == [str(tiny_images)]
    assert json.loads(settings.value("pretrain/values"))["epochs"] == 7
    w2.close()


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
