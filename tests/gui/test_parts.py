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


@pytest.mark.slow
def test_thumbnails_requested_for_visible_rows_only(qtbot, tmp_path, monkeypatch):
    model = ThumbnailModel()
    requested = set()
    original = model._queue.put
    monkeypatch.setattr(model._queue, "put", lambda row, path: (requested.add(row), original(row, path)))
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
    loader = model.jobs.get("thumbnails")
    model.shutdown()
    assert not loader.thread.isRunning() and not model.jobs.running()


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


@pytest.mark.slow
def test_live_curve_memory_stays_bounded(qtbot):
    from sslstudio.gui.plots import MAX_POINTS

    plot = make_plot("t", "step", "loss")
    qtbot.addWidget(plot)
    raw = LiveCurve(plot.getPlotItem(), "loss", "#1f77b4")
    ema = LiveCurve(plot.getPlotItem(), "smoothed", "#1f77b4", smoothed=True)
    for step in range(1, 100_001):
        raw.append(step, 1.0 / step)
        ema.append(step, 1.0)
        if step % 10_000 == 0:
            raw.flush()
            ema.flush()
    raw.flush()
    ema.flush()
    for curve in (raw, ema):
        assert curve.buffer.n <= MAX_POINTS and len(curve.buffer._x) <= MAX_POINTS + 1
        assert curve.points() == 100_000
        x, y = curve.item.getData()
        assert x[-1] == 100_000 and x[0] == 1 and np.all(np.diff(x) > 0)
    assert raw.buffer.y[-1] == 1.0 / 100_000
    assert np.allclose(ema.buffer.y, 1.0)
    # the kept points are evenly spaced (every stride-th step, plus the newest)
    steps = np.diff(raw.buffer.x[:-1])
    assert steps.min() == steps.max() == raw.buffer.stride


def test_integer_axis_has_whole_ticks_only(qtbot):
    from sslstudio.gui.plots import IntegerAxis

    axis = IntegerAxis("bottom")
    for lo, hi in ((0.9, 2.1), (0.5, 3.5), (1, 40)):
        values = [v for _s, ticks in axis.tickValues(lo, hi, 400) for v in ticks]
        assert values and all(float(v).is_integer() for v in values)
    assert axis.tickStrings([1.0, 2.0], 1, 1) == ["1", "2"]


def test_plots_follow_a_dark_palette(qtbot):
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    old = app.palette()
    dark = QPalette()
    dark.setColor(QPalette.ColorRole.Window, QColor(40, 40, 40))
    dark.setColor(QPalette.ColorRole.WindowText, QColor(230, 230, 230))
    dark.setColor(QPalette.ColorRole.Base, QColor(30, 30, 30))
    app.setPalette(dark)
    try:
        plot = make_plot("Loss", "step", "loss")
        qtbot.addWidget(plot)
        axis = plot.getPlotItem().getAxis("left")
        assert axis.textPen().color().lightness() > 200
        assert plot.getPlotItem().legend.brush().color().lightness() < 60
    finally:
        app.setPalette(old)


def test_style_and_icon_come_from_resources(qapp):
    from sslstudio.gui.app import apply_style, resource_path

    assert resource_path("style.qss") is not None and resource_path("sslstudio.svg") is not None
    apply_style(qapp)
    assert not qapp.windowIcon().isNull()
    assert qapp.styleSheet()


@pytest.mark.slow
def test_garbage_is_collected_in_the_gui_thread_only(qtbot):
    import gc

    from sslstudio.gui.workers import MainThreadGarbageCollector

    assert gc.isenabled()
    collector = MainThreadGarbageCollector(interval_ms=10)
    assert not gc.isenabled()  # a worker thread can no longer trigger a collection
    gc.collect()
    for _ in range(gc.get_threshold()[0] + 100):  # cyclic garbage: only a collection frees it
        cycle = []
        cycle.append(cycle)
    assert gc.get_count()[0] > gc.get_threshold()[0]  # nothing collected it automatically
    qtbot.waitUntil(lambda: gc.get_count()[0] < gc.get_threshold()[0], timeout=2000)  # the timer did
    collector.stop()
    assert gc.isenabled()
