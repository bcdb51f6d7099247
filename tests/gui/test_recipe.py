"""The Pretrain page fits the machine: a CPU recipe beside the paper's, a typed value survives a task change
(the paper's values are offered instead), and "≈ N min on this machine" before Start."""

import pytest
from PySide6.QtCore import Qt

from sslstudio.engine import estimate as engine_estimate
from sslstudio.engine.estimate import Estimate, cpu_recipe, paper_recipe
from sslstudio.gui import pretrain_page as page_module


def _fake_estimate(calls):
    def fake(config, n_images, steps=3, control=None, **_kw):
        calls.append((config, n_images))
        return Estimate(seconds=config.epochs * 90.0, samples_per_s=100.0, seconds_per_epoch=90.0,
                        epochs=config.epochs, steps_per_epoch=5, train_items=n_images, held_out_items=0,
                        timed_batch=4, device="cpu", measured_s=0.01)
    return fake


def _scan(qtbot, window, folder):
    with qtbot.waitSignal(window.data_page.scan_finished, timeout=10000):
        window.data_page.set_folder(str(folder))


@pytest.fixture
def no_gpu_page(window):
    page = window.pretrain_page
    page.gpu = False
    page.cpu_recipe_button.setVisible(True)
    page._update_recipe_box()
    return page


def test_without_a_gpu_the_cpu_recipe_button_fills_the_form(window, no_gpu_page, qtbot):
    page = no_gpu_page
    window.task_page.select_task("jigsaw")
    window.go_to(2)
    assert "no GPU" in page.recipe_note.text() and "CPU recipe" in page.recipe_note.text()
    assert page.cpu_recipe_button.isVisibleTo(page) and page.paper_recipe_button.isVisibleTo(page)
    qtbot.mouseClick(page.cpu_recipe_button, Qt.MouseButton.LeftButton)
    shown = page.form.all_values()
    for name, value in cpu_recipe("jigsaw").items():
        assert shown[name] == pytest.approx(value) if name == "lr" else shown[name] == value, name
    qtbot.mouseClick(page.paper_recipe_button, Qt.MouseButton.LeftButton)
    shown = page.form.all_values()
    for name, value in paper_recipe("jigsaw").items():
        assert shown[name] == pytest.approx(value) if name == "lr" else shown[name] == value, name


def test_on_a_gpu_machine_only_the_papers_recipe_is_offered(qtbot, tmp_path, settings, monkeypatch):
    monkeypatch.setattr(page_module, "has_gpu", lambda: True)
    from sslstudio.gui import MainWindow

    w = MainWindow(workspace=tmp_path / "ws", settings=settings)
    w.confirm_close = w.show_dialogs = False
    qtbot.addWidget(w)
    w.show()
    w.go_to(2)
    page = w.pretrain_page
    assert not page.cpu_recipe_button.isVisibleTo(page) and page.paper_recipe_button.isVisibleTo(page)
    assert "no GPU" not in page.recipe_note.text()
    w.close()
    w.wait_for_workers()


def test_a_typed_epoch_value_survives_a_task_change_and_the_papers_values_are_offered(window, no_gpu_page, qtbot):
    page = no_gpu_page
    window.task_page.select_task("rotation")
    window.go_to(2)
    page.epochs.setFocus()
    page.epochs.selectAll()
    qtbot.keyClicks(page.epochs, "7")
    qtbot.keyClick(page.epochs, Qt.Key.Key_Return)
    assert page.epochs.value() == 7 and page.form.edited() == ["epochs"]
    window.task_page.select_task("jigsaw")
    jigsaw = paper_recipe("jigsaw")
    assert page.epochs.value() == 7  # typed: kept
    assert page.batch_size.value() == jigsaw["batch_size"]  # untouched: follows the task
    assert page.lr.value() == pytest.approx(jigsaw["lr"])
    note = page.recipe_note.text()
    assert "Paper's values for jigsaw: 70 epochs, batch 256, lr 0.01" in note and "epochs kept" in note
    qtbot.mouseClick(page.paper_recipe_button, Qt.MouseButton.LeftButton)  # "use them"
    assert page.epochs.value() == 70 and page.form.edited() == []
    assert "Paper's values" not in page.recipe_note.text()
    window.task_page.select_task("rotation")  # no longer typed: follows the task again
    assert page.epochs.value() == paper_recipe("rotation")["epochs"]


def test_the_cpu_recipe_follows_the_task_until_a_field_is_typed(window, no_gpu_page, qtbot):
    page = no_gpu_page
    window.task_page.select_task("rotation")
    qtbot.mouseClick(page.cpu_recipe_button, Qt.MouseButton.LeftButton)
    page.batch_size.setValue(16)  # the user's change
    window.task_page.select_task("jigsaw")
    assert page.image_size_box.value() == cpu_recipe("jigsaw")["image_size"]
    assert page.epochs.value() == cpu_recipe("jigsaw")["epochs"]
    assert page.batch_size.value() == 16


def test_typed_fields_are_kept_across_sessions(window):
    page = window.pretrain_page
    page.epochs.setValue(3)
    values = page.values()
    assert values["edited"] == ["epochs"]
    page.form.set_values({"epochs": 100})
    page.set_values(values)
    assert page.form.edited() == ["epochs"] and page.epochs.value() == 3


def test_the_estimate_shows_minutes_after_its_job(window, tiny_images, qtbot, monkeypatch):
    calls = []
    monkeypatch.setattr(page_module, "estimate_minutes", _fake_estimate(calls))
    page = window.pretrain_page
    _scan(qtbot, window, tiny_images)
    page.epochs.setValue(10)
    page.start_estimate()
    qtbot.waitUntil(lambda: "≈" in page.estimate_label.text(), timeout=5000)
    assert "≈ 15 min on this machine" in page.estimate_label.text()
    config, n = calls[-1]
    assert n == 16 and config.epochs == 10 and config.data == str(tiny_images)


def test_settings_changes_are_debounced_into_one_estimate(window, tiny_images, qtbot, monkeypatch):
    calls = []
    monkeypatch.setattr(page_module, "estimate_minutes", _fake_estimate(calls))
    monkeypatch.setattr(page_module, "ESTIMATE_DELAY_MS", 50)
    page = window.pretrain_page
    _scan(qtbot, window, tiny_images)
    qtbot.waitUntil(lambda: "≈" in page.estimate_label.text(), timeout=5000)  # after the scan
    calls.clear()
    page._estimate_timer.setInterval(50)
    for epochs in (2, 3, 4):
        page.epochs.setValue(epochs)
    assert "Estimating" not in page.estimate_label.text()  # waits for the settings to rest
    qtbot.waitUntil(lambda: bool(calls) and "≈ 6 min" in page.estimate_label.text(), timeout=5000)
    assert [c.epochs for c, _n in calls] == [4]


def test_no_estimate_without_a_folder_or_while_a_run_goes_on(window, monkeypatch):
    calls = []
    monkeypatch.setattr(page_module, "estimate_minutes", _fake_estimate(calls))
    page = window.pretrain_page
    page.start_estimate()
    assert page.estimate_label.text() == "" and not page.jobs.is_running("estimate")
    page._estimate_timer.stop()
    monkeypatch.setattr(page, "is_running", lambda: True)
    page.schedule_estimate()
    page.start_estimate()
    assert not page._estimate_timer.isActive() and not page.jobs.is_running("estimate") and not calls


def test_the_real_estimate_runs_in_the_background(window, tiny_images, qtbot):
    page = window.pretrain_page
    _scan(qtbot, window, tiny_images)
    page.form.set_values({"arch": "resnet18", "image_size": 16, "epochs": 2, "batch_size": 4, "device": "cpu"})
    page.start_estimate()
    assert "Estimating" in page.estimate_label.text()  # the window is not blocked meanwhile
    qtbot.waitUntil(lambda: "on this machine" in page.estimate_label.text(), timeout=30000)
    assert "&lt; 1 min on this machine" in page.estimate_label.text()  # rich text
    assert "2 epochs of 4 steps" in page.estimate_label.text()  # 16 images, none held out under 20, batch 4
