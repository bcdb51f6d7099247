"""The window shows a refused or failed job as a sentence on its page and stays usable."""

import os

import pytest

from sslstudio.engine import PretrainConfig, RunControl, pretrain
from sslstudio.runs import FolderLock, RunDir


@pytest.fixture
def stopped_run(window, tiny_images):
    """A 2-epoch run in the window's workspace, stopped after its first checkpoint."""
    control = RunControl()
    out = window.workspace / "runs" / "rotation-stopped"

    def on_event(event):
        if event.kind == "checkpoint":
            control.cancel()

    pretrain(PretrainConfig(task="rotation", data=str(tiny_images), out=str(out), epochs=2, batch_size=8,
                            image_size=32, workers=0, device="cpu"), on_event=on_event, control=control)
    window.pretrain_page.refresh_runs()
    return out


@pytest.mark.slow
def test_resuming_a_run_another_job_holds_is_a_message_and_the_page_stays_usable(qtbot, window, stopped_run):
    page = window.pretrain_page
    with FolderLock(stopped_run, "pretrain"):
        with qtbot.waitSignal(page.run_failed, timeout=30_000) as blocker:
            assert page.resume_run(str(stopped_run))
        message = blocker.args[0]
    assert f"process {os.getpid()}" in message and "Traceback" not in message
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=5000)
    assert message in window.statusBar().currentMessage()
    log = page.log_view.toPlainText()
    assert message in log and "Traceback" not in log  # the program's own sentence needs no traceback
    assert RunDir(stopped_run).read_summary()["status"] == "cancelled"  # the refused job wrote nothing


@pytest.mark.slow
def test_a_damaged_run_is_named_and_not_started(qtbot, window, stopped_run):
    page = window.pretrain_page
    RunDir(stopped_run).config_path.write_text("{ cut short")
    page.refresh_runs()
    assert not page.resume_run(str(stopped_run))
    assert "config.json (the run's settings) is damaged" in page.status.text()
    assert page.start_button.isEnabled() and not page.is_running()


@pytest.mark.slow
def test_an_export_that_would_overwrite_other_files_is_a_message(qtbot, window, tiny_images, tmp_path):
    from sslstudio.gui.pretrain_page import list_runs

    out = window.workspace / "runs" / "rotation-finished"
    pretrain(PretrainConfig(task="rotation", data=str(tiny_images), out=str(out), epochs=1, batch_size=8,
                            image_size=32, workers=0, device="cpu"))
    export = window.export_page
    export.set_runs(list_runs(window.workspace))
    assert export.run.count() == 1
    target = tmp_path / "my-documents"
    target.mkdir()
    (target / "thesis.tex").write_text("mine")
    export.destination.setText(str(target))
    with qtbot.waitSignal(export.export_failed, timeout=30_000) as blocker:
        export.export_button.click()
    assert "Traceback" not in blocker.args[0] and str(target) in blocker.args[0]
    assert sorted(p.name for p in target.iterdir()) == ["thesis.tex"] and (target / "thesis.tex").read_text() == "mine"
    qtbot.waitUntil(lambda: export.export_button.isEnabled(), timeout=5000)
