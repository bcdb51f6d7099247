"""The window's one job helper: JobRunner's stale-result rule, errors as sentences, no thread left."""

import threading
import time

import pytest
from PySide6.QtCore import QThread

from sslstudio.engine.events import LogEvent
from sslstudio.errors import DataError
from sslstudio.gui.thumbnails import ThumbnailModel
from sslstudio.gui.workers import JobRunner


@pytest.fixture
def runner(qtbot):
    r = JobRunner()
    yield r
    assert r.stop_all(10_000)
    assert not r.running()


def wait_idle(qtbot, runner):
    """Until every thread has ended and its last signal has been handled in the GUI thread."""
    qtbot.waitUntil(lambda: not runner.running(), timeout=10_000)
    qtbot.wait(20)


def test_a_superseded_job_delivers_nothing_and_the_newest_does(qtbot, runner):
    gate = threading.Event()
    got, ended = [], []

    def old(on_event):  # ignores its cancellation on purpose: only the rule keeps its result out
        on_event(LogEvent("old started"))
        gate.wait(10)
        on_event(LogEvent("old late"))
        return "old"

    first = runner.start("preview", old, on_event=lambda ev: got.append(ev.message), on_result=got.append,
                         on_ended=lambda: ended.append("old"))
    qtbot.waitUntil(lambda: got == ["old started"], timeout=5000)
    second = runner.start("preview", lambda: "new", on_result=got.append, on_ended=lambda: ended.append("new"))
    assert first.control.cancelled and runner.get("preview") is second
    gate.set()
    wait_idle(qtbot, runner)
    assert got == ["old started", "new"] and ended == ["new"]
    assert not first.thread.isRunning()


def test_cancel_delivers_nothing_more(qtbot, runner):
    gate = threading.Event()
    got = []

    def work(on_event, progress):
        progress(1, 2)
        gate.wait(10)
        progress(2, 2)  # raises Cancelled: progress reports check the control
        return "done"

    runner.start("scan", work, on_progress=lambda d, t: got.append(d), on_result=got.append,
                 on_cancelled=lambda: got.append("cancelled"), on_ended=lambda: got.append("ended"),
                 on_event=got.append)
    qtbot.waitUntil(lambda: got == [1], timeout=5000)
    runner.cancel("scan")
    assert runner.get("scan") is None
    gate.set()
    wait_idle(qtbot, runner)
    assert got == [1]


def test_a_stop_request_keeps_the_job_current_so_its_last_word_arrives(qtbot, runner):
    got = []

    def work(control):
        while True:
            control.checkpoint()
            time.sleep(0.005)

    job = runner.start("compare", work, pass_control=True, on_cancelled=lambda: got.append("cancelled"),
                       on_ended=lambda: got.append("ended"), replace=False)
    assert runner.start("compare", work, pass_control=True, replace=False) is None  # refused while it runs
    assert runner.get("compare") is job
    job.cancel()  # what a Stop button does
    wait_idle(qtbot, runner)
    assert got == ["cancelled", "ended"]


def test_errors_arrive_as_sentences_in_the_gui_thread(qtbot, runner):
    errors, threads = [], []

    def record(message, details):
        errors.append((message, details))
        threads.append(QThread.currentThread())

    def expected():
        raise DataError("The folder holds no images.")

    def unexpected():
        raise ValueError("boom")

    runner.start("a", expected, on_error=record)
    runner.start("b", unexpected, on_error=record)
    wait_idle(qtbot, runner)
    by_message = dict(errors)
    assert by_message["The folder holds no images."] == ""  # the program's own sentence needs no traceback
    assert "Traceback" in by_message["ValueError: boom"]
    assert threads == [QThread.currentThread()] * 2


def test_stop_all_cancels_every_job_and_leaves_no_thread(qtbot):
    runner = JobRunner()
    got = []

    def loop(control):
        while True:
            control.checkpoint()
            time.sleep(0.005)

    superseded = runner.start("preview", loop, pass_control=True, on_cancelled=lambda: got.append("p1"))
    jobs = [superseded, runner.start("preview", loop, pass_control=True, on_cancelled=lambda: got.append("p2")),
            runner.start("scan", loop, pass_control=True, on_cancelled=lambda: got.append("scan"),
                         on_ended=lambda: got.append("ended"))]
    qtbot.wait(50)
    assert runner.stop_all(10_000)
    assert not any(job.thread.isRunning() for job in jobs) and not runner.running()
    qtbot.wait(50)
    assert got == [] and runner.get("scan") is None  # a page shutting down hears nothing more


def test_thumbnails_of_a_replaced_file_list_are_never_shown(qtbot, tiny_images, tmp_path):
    model = ThumbnailModel(size=16)
    try:
        model.set_files(sorted(tiny_images.glob("*.png")))
        old_loader = model.jobs.get("thumbnails")
        for row in range(4):
            model.data(model.index(row), 1)  # DecorationRole: queues the request
        deadline = time.monotonic() + 10
        while model._queue._queue and time.monotonic() < deadline:  # loaded, results queued, not handled
            time.sleep(0.01)
        time.sleep(0.1)
        model.set_files([str(tmp_path / "missing.png")])
        assert old_loader.control.cancelled
        qtbot.wait(100)
        assert model.loaded_count() == 0  # the old list's thumbnails were stale: none reached the cache
        model.data(model.index(0), 1)
        qtbot.waitUntil(lambda: model.loaded_count() == 1, timeout=5000)
    finally:
        model.shutdown()
    assert not model.jobs.running()
