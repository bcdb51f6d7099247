"""Pieces of the window on their own: workers, the thumbnail model, plots, the config form."""

import numpy as np
import pytest
from PySide6.QtCore import QSize
from PySide6.QtWidgets import QListView

from sslstudio.engine.events import FailedEvent, LogEvent
from sslstudio.errors import DataError
from sslstudio.gui.plots import GrowingBuffer, LiveCurve, make_plot, smooth
from sslstudio.gui.thumbnails import ThumbnailModel
from sslstudio.gui.workers import Job


def test_job_forwards_events_and_results(qtbot):
    def work(x, on_event, control):
        on_event(LogEvent("hello"))
        return x * 2

    job = Job(work, 21)
    events = []
    job.worker.event.connect(events.append)
    with qtbot.waitSignal(job.worker.finished, timeout=5000) as blocker:
        job.start()
    assert blocker.args == [42]
    qtbot.waitUntil(lambda: not job.is_running(), timeout=5000)
    assert [e.message for e in events] == ["hello"]


@pytest.mark.parametrize("emit_failed", [True, False])
def test_job_reports_failures_once(qtbot, emit_failed):
    def work(on_event, control):
        if emit_failed:
            on_event(FailedEvent("the folder is empty.", "DataError", "tb"))
        raise DataError("the folder is empty.")

    job = Job(work)
    failures = []
    job.worker.failed.connect(lambda m, d: failures.append(m))
    with qtbot.waitSignal(job.ended, timeout=5000):
        job.start()
    assert failures == ["the folder is empty."]


def test_job_stop_cancels_and_waits(qtbot):
    def work(on_event, control):
        while True:
            control.checkpoint()

    job = Job(work)
    job.start()
    qtbot.wait(50)
    assert job.stop(5000)
    assert not job.thread.isRunning()


def test_thumbnails_requested_for_visible_rows_only(qtbot, tmp_path, monkeypatch):
    model = ThumbnailModel()
    requested = set()
    original = model._loader.request
    monkeypatch.setattr(model._loader, "request", lambda row, gen, path: (requested.add(row), original(row, gen, path)))
    view = QListView()
    view.setViewMode(QListView.ViewMode.IconMode)
    view.setUniformItemSizes(True)
    view.setGridSize(QSize(116, 126))
    view.resize(800, 600)
    view.setModel(model)
    qtbot.addWidget(view)
    model.set_files([str(tmp_path / f"missing_{i:06d}.jpg") for i in range(100_000)])
    view.show()
    qtbot.waitExposed(view)
    qtbot.wait(100)
    assert model.rowCount() == 100_000
    assert 0 < len(requested) < 200
    view.scrollToBottom()
    qtbot.wait(100)
    assert max(requested) > 99_000 and len(requested) < 400
    model.shutdown()
    assert not model._thread.isRunning()


def test_growing_buffer_and_curve(qtbot):
    buf = GrowingBuffer(capacity=2)
    for i in range(5):
        buf.append(i, i * 2.0)
    assert buf.n == 5 and list(buf.y) == [0, 2, 4, 6, 8]
    plot = make_plot("t", "x", "y")
    qtbot.addWidget(plot)
    curve = LiveCurve(plot.getPlotItem(), "loss", "#1f77b4", smoothed=True)
    for i in range(10):
        curve.append(i, 1.0)
    curve.flush()
    x, y = curve.item.getData()
    assert len(x) == 10 and np.allclose(y, 1.0)
    assert np.allclose(smooth(np.ones(4)), 1.0)
