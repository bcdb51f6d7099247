"""The Task page's preview: a grid of samples (one thumbnail per sample, captioned in words), the task's
whole-batch drawing as an overview, plain-word explanations, and thumbnails never shrunk below readable."""

import re

import pytest
from PySide6.QtCore import Qt

from sslstudio.gui.task_page import PREVIEW_N, plural
from sslstudio.tasks import list_tasks
from sslstudio.tasks.render import min_display_scale

TECHNICAL = re.compile(r"tensor|float\d*|int64|dtype|torch|\b\d+\s*[x\u00d7]\s*\d+\b", re.IGNORECASE)
WITH_OVERVIEW = {"context", "deepcluster", "exemplar"}


@pytest.fixture
def page(qtbot, window, tiny_images):
    window.pretrain_page.image_size_box.setValue(32)  # tiny images, fast previews
    with qtbot.waitSignal(window.data_page.scan_finished, timeout=10_000):
        window.data_page.set_folder(str(tiny_images))
    window.go_to(1)
    return window.task_page


def preview(qtbot, page, name):
    with qtbot.waitSignal(page.preview_ready, timeout=30_000) as blocker:
        page.select_task(name)
        page.schedule_preview()
    qtbot.waitUntil(lambda: not page.jobs.is_running("preview"), timeout=5_000)
    return blocker.args[0]


def test_plural():
    assert plural(1, "sample") == "1 sample" and plural(8, "sample") == "8 samples"


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_previews_as_a_grid_of_captioned_samples(qtbot, page, name):
    n = preview(qtbot, page, name)
    assert n == PREVIEW_N > 1
    assert page.grid.count() == len(page.samples) == n  # one thumbnail per sample, not one composite
    assert page.preview_status.text() == f"{n} samples of {name} (seed 0). Click one to see it large."
    captions = [page.grid.item(k).text() for k in range(n)]
    assert all(c and not TECHNICAL.search(c) for c in captions), captions
    # thumbnails are shown at a scale that keeps the drawn labels readable
    icon, image = page.grid.iconSize(), max((s.image for s in page.samples), key=lambda i: i.width())
    assert icon.width() >= image.width() * min_display_scale() - 1
    assert (page.overview is not None) == (name in WITH_OVERVIEW) == page.overview_button.isEnabled()
    if page.overview is not None:  # the whole batch opens large first, not as a thumbnail
        assert "Overview" in page.explanation.text()
        assert page.large.image is page.overview.image
    # a real click on the third thumbnail shows it large, explained in words
    page.grid.scrollToItem(page.grid.item(2))
    rect = page.grid.visualItemRect(page.grid.item(2))
    qtbot.mouseClick(page.grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    text = page.explanation.text()
    assert "Sample 3" in text and captions[2] in text.replace("&#x27;", "'")
    assert "network" in text.lower() and not TECHNICAL.search(text), text
    assert page.large.image is page.samples[2].image and not page.large.pixmap().isNull()
    if page.overview is not None:
        page.overview_button.click()
        assert page.large.image is page.overview.image and "Overview" in page.explanation.text()
