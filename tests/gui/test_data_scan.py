"""The data page scans a large folder in a worker thread while the window keeps responding."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QElapsedTimer, QThread, QTimer

N_FILES = 2_000


@pytest.fixture
def many_images(tmp_path) -> Path:
    """2,000 small images (PNG and JPEG) in nested folders, plus some other files."""
    from PIL import Image

    encoded = []
    for k, fmt in enumerate(("PNG", "PNG", "PNG", "JPEG")):
        buf = io.BytesIO()
        arr = np.random.default_rng(k).integers(0, 256, (16 + 4 * k, 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(buf, fmt)
        encoded.append((buf.getvalue(), "jpg" if fmt == "JPEG" else "png"))
    root = tmp_path / "many"
    for i in range(N_FILES):
        data, ext = encoded[i % 4]
        folder = root / f"part_{i // 500}" / f"group_{(i // 100) % 5}"
        if i % 100 == 0:
            folder.mkdir(parents=True)
            (folder / "notes.txt").write_text("not an image")
        (folder / f"img_{i:05d}.{ext}").write_bytes(data)
    return root


class TickProbe:
    """Counts the ticks of a 10 ms timer and keeps the longest gap between two ticks."""

    def __init__(self):
        self.clock = QElapsedTimer()
        self.ticks = 0
        self.longest_ms = 0.0
        self._last = 0
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)

    def start(self):
        self.clock.start()
        self._last = self.clock.nsecsElapsed()
        self.timer.start()

    def _tick(self):
        now = self.clock.nsecsElapsed()
        self.longest_ms = max(self.longest_ms, (now - self._last) / 1e6)
        self._last = now
        self.ticks += 1

    def stop(self):
        self.timer.stop()


@pytest.mark.slow
def test_scan_runs_in_a_worker_while_the_event_loop_keeps_ticking(qtbot, window, many_images, monkeypatch):
    import sslstudio.gui.data_page as data_page

    page = window.data_page
    gui_thread = QThread.currentThread()
    release = threading.Event()
    ran_in = []
    real_scan = data_page.scan_for_page

    def held_scan(folder, progress=None):
        ran_in.append(QThread.currentThread())
        release.wait(30)  # the scan stays "busy" until the test has seen the window respond
        return real_scan(folder, progress)

    monkeypatch.setattr(data_page, "scan_for_page", held_scan)
    probe = TickProbe()
    probe.start()
    finished = []
    page.scan_finished.connect(finished.append)
    page.set_folder(str(many_images))  # returns at once: the scan runs in the worker
    assert page.summary_label.text().startswith("Scanning")
    assert page.job.is_running()

    qtbot.waitUntil(lambda: probe.ticks >= 10, timeout=10_000)  # the event loop runs during the scan
    assert ran_in and ran_in[0] is not gui_thread
    assert not finished and page.model.rowCount() == 0

    with qtbot.waitSignal(page.inspect_finished, timeout=60_000) as checked:
        release.set()
    probe.stop()
    report = finished[0]
    assert len(report.files) == N_FILES and report.ignored == 20
    assert [str(p) for p in report.files] == sorted(str(p) for p in many_images.rglob("img_*"))
    assert report.formats == {"png": 1500, "jpg": 500}
    assert page.model.rowCount() == N_FILES
    assert page.model.files()[0] == str(report.files[0])
    assert "2,000" in page.summary_label.text() and "1,500 png, 500 jpg" in page.summary_label.text()
    assert "20 other files ignored" in page.summary_label.text()
    assert checked.args[0].readable == N_FILES
    assert "Sizes: 16x16 to 16x28" in page.check_label.text()
    assert page.image_count() == N_FILES
    assert probe.longest_ms < 2_000  # very generous: nothing froze the window for long


@pytest.mark.slow
def test_a_new_folder_supersedes_a_running_scan(qtbot, window, many_images, tiny_images, monkeypatch):
    import sslstudio.gui.data_page as data_page

    page = window.data_page
    release = threading.Event()
    real_scan = data_page.scan_for_page

    def slow_first(folder, progress=None):
        if Path(folder) == many_images:
            release.wait(30)
        return real_scan(folder, progress)

    monkeypatch.setattr(data_page, "scan_for_page", slow_first)
    page.set_folder(str(many_images))
    old_job = page.job
    with qtbot.waitSignal(page.scan_finished, timeout=10_000) as blocker:
        page.set_folder(str(tiny_images))
    assert len(blocker.args[0].files) == 16
    release.set()
    qtbot.waitUntil(lambda: not old_job.is_running(), timeout=10_000)
    qtbot.wait(50)
    assert page.model.rowCount() == 16 and page.report is blocker.args[0]
