"""Fixtures for the window tests: tiny images, fresh settings, a window that waits for its threads."""

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")


@pytest.fixture
def tiny_images(tmp_path):
    """16 random 32 px PNG images."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        arr[:8] = (255, 0, 0)  # a red band on top, so rotations differ
        Image.fromarray(arr).save(folder / f"img_{i:02d}.png")
    return folder


@pytest.fixture
def bad_images(tmp_path):
    """A folder whose image files are all unreadable."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(6):
        (folder / f"broken_{i}.jpg").write_bytes(b"not an image at all" * (i + 1))
    return folder


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, tmp_path, settings):
    from sslstudio.gui import MainWindow

    w = MainWindow(workspace=tmp_path / "workspace", settings=settings)
    w.confirm_close = False
    w.show_dialogs = False
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()
    w.wait_for_workers()
    from PySide6.QtCore import QThread

    for job in list(w._jobs):
        assert not job.thread.isRunning()
    for page in (w.data_page, w.data_page.model, w.task_page, w.pretrain_page, w.compare_page, w.export_page):
        assert not page.jobs.running()  # no thread of any page outlives the window
    del QThread


def fast_settings(window, workers: int = 0, epochs: int = 1):
    page = window.pretrain_page
    page.arch.setCurrentText("resnet18_small")
    page.image_size_box.setValue(32)
    page.epochs.setValue(epochs)
    page.batch_size.setValue(8)
    page.lr.setValue(0.01)
    page.workers.setValue(workers)
    i = page.device.findData("cpu")
    page.device.setCurrentIndex(i)


@pytest.fixture
def fast():
    """Set the pretraining page to a tiny CPU run."""
    return fast_settings


@pytest.fixture(autouse=True)
def collect_qt_garbage_in_the_gui_thread():
    """Unreachable Qt objects of one test are collected here, never by a later test's worker thread."""
    yield
    import gc

    gc.collect()
