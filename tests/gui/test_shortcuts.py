"""The documented keyboard shortcuts (docs/gui.md) with real key events, and the window's words after Stop
(issue 12, point 5): Esc and Ctrl+. stop a running pretraining or comparison wherever the focus is, Ctrl+O
opens the folder dialog, Ctrl+R starts pretraining, Ctrl+C in the results table copies it, Ctrl+Q quits."""

import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest

from sslstudio.engine.events import Cancelled

pytestmark = pytest.mark.slow
CTRL, NONE = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.NoModifier


def scan(qtbot, window, folder):
    with qtbot.waitSignal(window.data_page.scan_finished, timeout=10_000):
        window.data_page.set_folder(str(folder))


def activate(qtbot, window):
    """The window on screen and active: window shortcuts answer only in the active window."""
    qtbot.waitExposed(window)
    window.activateWindow()
    window.raise_()
    qtbot.waitUntil(lambda: QGuiApplication.focusWindow() is window.windowHandle(), timeout=5000)


def focus(qtbot, widget):
    widget.setFocus(Qt.FocusReason.OtherFocusReason)
    qtbot.waitUntil(widget.hasFocus, timeout=5000)
    return widget


def start_long_run(qtbot, window, fast):
    fast(window, epochs=50)
    page = window.pretrain_page
    page.start_button.click()
    qtbot.waitUntil(lambda: page.loss_raw.buffer.n > 0, timeout=30_000)  # the first steps ran
    return page


def focus_targets(window):
    """Where the focus may be while a run goes on: a list, a text field, the log, a tree."""
    return {"steps list": (0, window.steps), "labelled field (step 4)": (3, window.compare_page.labelled),
            "pretraining log": (2, window.pretrain_page.log_view), "run list": (2, window.pretrain_page.runs),
            "spin box (step 4)": (3, window.compare_page.knn_k),
            "combo box (step 4)": (3, window.compare_page.budget_kind)}


@pytest.mark.parametrize("where", ["steps list", "labelled field (step 4)", "pretraining log", "run list",
                                   "spin box (step 4)", "combo box (step 4)"])
def test_esc_stops_a_running_pretraining_wherever_the_focus_is(qtbot, window, tiny_images, fast, where):
    scan(qtbot, window, tiny_images)
    activate(qtbot, window)
    page = start_long_run(qtbot, window, fast)
    step, widget = focus_targets(window)[where]
    window.go_to(step)
    focus(qtbot, widget)
    with qtbot.waitSignal(page.run_finished, timeout=30_000) as blocker:
        QTest.keyClick(widget, Qt.Key.Key_Escape, NONE)
    assert blocker.args[0]["status"] == "cancelled"
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)


def test_ctrl_period_stops_and_the_window_says_how_to_resume(qtbot, window, tiny_images, fast, monkeypatch):
    import sslstudio.gui.pretrain_page as pretrain_page

    scan(qtbot, window, tiny_images)
    activate(qtbot, window)
    engine_pretrain, held = pretrain_page.pretrain, {}

    def pausing_pretrain(config, on_event=None, control=None):
        def on_event_then_pause(ev):  # paused after the first checkpoint: Stop finds one
            on_event(ev)
            if ev.kind == "checkpoint" and not held:
                held["path"] = ev.path
                control.pause()

        return engine_pretrain(config, on_event=on_event_then_pause, control=control)

    monkeypatch.setattr(pretrain_page, "pretrain", pausing_pretrain)
    fast(window, epochs=3)
    page = window.pretrain_page
    page.start_button.click()
    qtbot.waitUntil(lambda: "path" in held, timeout=30_000)
    with qtbot.waitSignal(page.run_finished, timeout=30_000) as blocker:
        QTest.keyClick(focus(qtbot, window.steps), Qt.Key.Key_Period, CTRL)
    assert blocker.args[0]["status"] == "cancelled" and blocker.args[0]["epochs_completed"] == 1
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    log = page.log_view.toPlainText()
    assert "press “Resume run” under the run list" in log and "--" not in log
    # the stopped run is selected, and "Resume run" is offered because it has a checkpoint
    assert page.runs.currentItem().data(0, Qt.ItemDataRole.UserRole) == page.run_dir
    assert page.resume_run_button.isEnabled()


def test_stop_before_a_checkpoint_offers_no_resume(qtbot, window, tiny_images, fast):
    scan(qtbot, window, tiny_images)
    activate(qtbot, window)
    page = start_long_run(qtbot, window, fast)  # 50 epochs of 2 steps: stopped in the first epoch...
    with qtbot.waitSignal(page.run_finished, timeout=30_000) as blocker:
        QTest.keyClick(focus(qtbot, window.steps), Qt.Key.Key_Escape, NONE)
    summary = blocker.args[0]
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    log = page.log_view.toPlainText()
    if summary["epochs_completed"] == 0:  # ... unless the machine was fast enough to finish one
        assert "there is no checkpoint, so this run cannot be resumed" in log
        assert not page.resume_run_button.isEnabled()
    else:
        assert page.resume_run_button.isEnabled()
    assert "--resume" not in log


def test_esc_stops_a_running_comparison(qtbot, window, tmp_path, monkeypatch):
    import sslstudio.gui.compare_page as compare_page

    def endless_compare(labelled, out, inits, on_event=None, control=None, **kwargs):
        while True:  # until Stop: a comparison that checks for it between jobs, as the engine does
            control.checkpoint()
            time.sleep(0.01)

    monkeypatch.setattr(compare_page, "compare", endless_compare)
    page = window.compare_page
    page.labelled.setText(str(tmp_path))
    page.set_checked_inits(["random"])
    window.go_to(3)
    activate(qtbot, window)
    page.start()
    assert page.is_running() and not page.labelled.isEnabled()  # the settings stay as they ran
    field = focus(qtbot, page.table)
    with qtbot.waitSignal(page.jobs.get("compare").ended, timeout=10_000):
        QTest.keyClick(field, Qt.Key.Key_Escape, NONE)
    assert page.status.text().startswith("Stopped")
    assert page.run_button.isEnabled() and page.labelled.isEnabled()


def test_ctrl_o_opens_the_folder_dialog_and_scans(qtbot, window, tiny_images, monkeypatch):
    import sslstudio.gui.data_page as data_page

    asked = []

    def choose(parent, caption, start):
        asked.append(caption)
        return str(tiny_images)

    monkeypatch.setattr(data_page.QFileDialog, "getExistingDirectory", staticmethod(choose))
    window.go_to(2)
    activate(qtbot, window)
    with qtbot.waitSignal(window.data_page.scan_finished, timeout=10_000):
        QTest.keyClick(focus(qtbot, window.steps), Qt.Key.Key_O, CTRL)
    assert asked and window.steps.currentRow() == 0 and window.data_page.folder == str(tiny_images)


def test_ctrl_r_starts_pretraining(qtbot, window, tiny_images, fast):
    scan(qtbot, window, tiny_images)
    fast(window, epochs=1)
    activate(qtbot, window)
    page = window.pretrain_page
    with qtbot.waitSignal(page.run_finished, timeout=60_000) as blocker:
        QTest.keyClick(focus(qtbot, window.steps), Qt.Key.Key_R, CTRL)
        assert window.steps.currentRow() == 2 and page.is_running()
    assert blocker.args[0]["status"].startswith("finished")
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)


def test_ctrl_c_in_the_results_table_copies_it(qtbot, window):
    page = window.compare_page
    page.set_rows([{"init": "random", "init_label": "random", "mode": "head", "layer": "layer4",
                    "test_accuracy": 0.5}])
    window.go_to(3)
    activate(qtbot, window)
    QGuiApplication.clipboard().setText("")
    QTest.keyClick(focus(qtbot, page.table), Qt.Key.Key_C, CTRL)
    text = QGuiApplication.clipboard().text()
    assert text.splitlines()[0].split("\t")[0] == "initialisation" and "random\t" in text and "50.0" in text


def test_ctrl_q_quits(qtbot, window):
    activate(qtbot, window)
    QTest.keyClick(focus(qtbot, window.steps), Qt.Key.Key_Q, CTRL)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)


def test_messages_name_window_actions_not_flags():
    from sslstudio.gui.window import window_words

    assert window_words("the GPU ran out of memory: lower --batch-size or --image-size, or use a smaller --arch.") \
        == "the GPU ran out of memory: lower “Batch size” or “Image size”, or use a smaller “Backbone”."
    assert window_words("resume it with --resume or choose another --out.") == \
        "resume it with “Resume run” (step 3) or choose another run folder."
    for message in ("device cuda was asked for but no CUDA GPU is available here; use --device cpu or auto.",
                    "start it again without --resume.", "--init 'x' is neither a run directory nor a weights file"):
        assert "--" not in window_words(message)
    both = "no weights (--weights FILE on the command line, “Choose weights file…” in the window)."
    assert window_words(both) == both
    assert window_words("a loss of -1.5 -- fine") == "a loss of -1.5 -- fine"
