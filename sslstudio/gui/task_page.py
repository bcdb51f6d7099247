"""Step 2, Pretext task: the registered tasks, a settings form made from the task's config, and
a preview grid of generated samples rendered in the background."""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QScrollArea, QSizePolicy, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from sslstudio.gui.config_form import ConfigForm, SettingsScroll
from sslstudio.gui.workers import Job, JobRunner
from sslstudio.tasks import get_task, list_tasks
from sslstudio.tasks.render import min_display_scale

__all__ = ["TaskPage", "render_preview", "Preview", "PreviewSample", "plural"]

PREVIEW_N = 8


@dataclass
class PreviewSample:
    image: QImage
    caption: str
    explanation: str


@dataclass
class Preview:
    """What the preview worker made: one drawing per sample of the batch (the task's ``render``), and the
    task's drawing of the whole batch (``render_preview``; ``None`` when it has none)."""

    task: str
    seed: int
    samples: list[PreviewSample]
    overview: PreviewSample | None = None


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def pil_to_qimage(img) -> QImage:
    img = img.convert("RGB")
    data = img.tobytes()
    q = QImage(data, img.width, img.height, 3 * img.width, QImage.Format.Format_RGB888)
    return q.copy()  # own the pixels


def render_preview(task_name: str, options: dict, image_size: int, files: list | None, folder: str,
                   n: int, seed: int, control=None) -> Preview:
    """Make and draw ``n`` samples of a task (runs in a worker thread; returns QImages).

    Everything drawn comes from the one batch :func:`~sslstudio.engine.preview.preview_batch` made (the
    training transform): each sample by ``task.render`` with ``task.caption`` and ``task.explain``, and the
    task's whole-batch drawing (``task.render_preview``) as the overview.

    ``control`` (a :class:`~sslstudio.engine.events.RunControl`) is checked between the stages and
    between samples: a superseded preview stops early by raising ``Cancelled``.
    """
    check = control.checkpoint if control is not None else (lambda: None)
    from sslstudio.data import decode_images
    from sslstudio.engine.preview import check_preview, preview_batch, preview_images
    from sslstudio.errors import DataError
    from sslstudio.tasks import create_task

    check_preview(n, image_size, seed)  # the declared limits, before any image is read
    task = create_task(task_name, options, image_size)
    check()
    if files:
        rng = np.random.default_rng(seed)
        pick = [files[i] for i in rng.permutation(len(files))[: max(n * 2, 16)]]
        try:
            images = decode_images(pick, task.image_size, min_source_size=task.min_image_size,
                                   small_policy=task.small_image_policy).arrays[:n]
        except DataError:
            images = preview_images(task, folder, n, seed)
        if len(images) == 0:
            images = preview_images(task, folder, n, seed)
    else:
        images = preview_images(task, folder, n, seed)
    check()
    batch = preview_batch(task, images, n, seed)  # the training transform on a small batch
    check()
    own = batch.own_drawing(task)
    overview = None
    if own is not None:
        overview = PreviewSample(pil_to_qimage(own), "Overview",
                                 f"All {plural(len(batch.index), 'sample')} of this batch together, as the "
                                 f"{task.name} task draws them. Click a sample to see it on its own.")
    out = []
    for inputs, target in batch.samples():
        check()
        out.append(PreviewSample(pil_to_qimage(task.render(inputs, target)), task.caption(target),
                                 task.explain(inputs, target)))
    return Preview(task.name, int(seed), out, overview)


class LargeView(QScrollArea):
    """One drawing, as large as the area allows (pixels stay sharp when enlarged); a drawing too large is
    shrunk only down to the scale that keeps its text readable, and scrolls beyond that."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = QLabel()
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWidget(self.label)
        self.setWidgetResizable(True)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumHeight(120)
        self.setMinimumWidth(1)  # a large drawing must not widen the window
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.image: QImage | None = None
        self.enlarge = True

    def pixmap(self) -> QPixmap | None:
        return self.label.pixmap()

    def set_image(self, image: QImage | None, enlarge: bool = True) -> None:
        """Show ``image``; ``enlarge``: fill the area (samples), else at most 100% (the overview)."""
        self.image, self.enlarge = image, enlarge
        self._fit()

    def scale(self) -> float:
        """The factor the current drawing is shown at."""
        if self.image is None or self.image.isNull():
            return 1.0
        w, h = self.width() - 2 * self.frameWidth() - 4, self.height() - 2 * self.frameWidth() - 4
        fit = min(w / self.image.width(), h / self.image.height())
        if not self.enlarge:  # at most 100%, fitted to the width, scrolled down
            fit = min(1.0, w / self.image.width())
            if self.image.height() * fit > h:  # room for the vertical scroll bar
                fit = min(1.0, (w - self.verticalScrollBar().sizeHint().width()) / self.image.width())
        return max(min_display_scale(), min(fit, 4.0))

    def _fit(self) -> None:
        if self.image is None or self.image.isNull():
            self.label.clear()
            return
        f = self.scale()
        mode = (Qt.TransformationMode.FastTransformation if f >= 1.0 else Qt.TransformationMode.SmoothTransformation)
        size = QSize(max(1, round(self.image.width() * f)), max(1, round(self.image.height() * f)))
        self.label.setPixmap(QPixmap.fromImage(self.image).scaled(size, Qt.AspectRatioMode.KeepAspectRatio, mode))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit()


class TaskPage(QWidget):
    """Signals ``task_changed(name)``, ``preview_ready(count)`` and ``preview_failed(message)``."""

    task_changed = Signal(str)
    preview_ready = Signal(int)
    preview_failed = Signal(str)

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.jobs = JobRunner(self, track=window.track)  # slot "preview": the newest request wins
        self.samples: list[PreviewSample] = []
        self.overview: PreviewSample | None = None

        self.task_list = QListWidget()
        self.task_list.setMaximumWidth(220)
        for name in list_tasks():
            cls = get_task(name)
            item = QListWidgetItem(name)
            item.setToolTip(f"{cls.description}\n{cls.paper}")
            self.task_list.addItem(item)
        self.task_list.currentTextChanged.connect(self._on_task)

        self.description = QLabel()
        self.description.setWordWrap(True)
        self.description.setObjectName("taskDescription")
        self.paper = QLabel()
        self.paper.setWordWrap(True)
        self.paper.setObjectName("paper")
        self.paper.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.form = ConfigForm()
        self.form.changed.connect(self.schedule_preview)
        scroll = SettingsScroll(self.form)
        self.reset_button = QPushButton("Reset to paper defaults")
        self.reset_button.setToolTip("Set every option back to the value the paper used")
        self.reset_button.clicked.connect(self.form.reset)
        settings_box = QGroupBox("Settings")
        sl = QVBoxLayout(settings_box)
        sl.addWidget(scroll, 1)
        sl.addWidget(self.reset_button)

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        title = QLabel("2 · Pretext task")
        title.setObjectName("pageTitle")
        ll.addWidget(title)
        row = QHBoxLayout()
        row.addWidget(self.task_list)
        info = QVBoxLayout()
        info.addWidget(self.description)
        info.addWidget(self.paper)
        info.addWidget(settings_box, 1)
        row.addLayout(info, 1)
        ll.addLayout(row, 1)

        # preview
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Seed of the preview samples")
        self.seed.valueChanged.connect(self.schedule_preview)
        self.new_seed_button = QPushButton("New seed")
        self.new_seed_button.setToolTip("Draw other samples")
        self.new_seed_button.clicked.connect(lambda: self.seed.setValue(self.seed.value() + 1))
        self.preview_status = QLabel("Choose a folder of images to see samples.")
        self.preview_status.setWordWrap(True)
        self.grid = QListWidget()
        self.grid.setViewMode(QListWidget.ViewMode.IconMode)
        self.grid.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.grid.setMovement(QListWidget.Movement.Static)
        self.grid.setWordWrap(True)
        self.grid.setUniformItemSizes(True)
        self.grid.setIconSize(QSize(150, 150))
        self.grid.setSpacing(6)
        self.grid.currentRowChanged.connect(self.show_sample)
        self.grid.itemClicked.connect(lambda item: self.show_sample(self.grid.row(item)))
        self.grid.viewport().installEventFilter(self)
        self.overview_button = QPushButton("Overview")
        self.overview_button.setToolTip("Show all the samples together, as the task draws its whole batch")
        self.overview_button.setEnabled(False)
        self.overview_button.clicked.connect(self.show_overview)
        self.large = LargeView()
        self.explanation = QLabel("Click a sample to see it large.")
        self.explanation.setWordWrap(True)
        self.explanation.setTextFormat(Qt.TextFormat.RichText)
        preview_box = QGroupBox("Preview")
        pl = QVBoxLayout(preview_box)
        prow = QHBoxLayout()
        prow.addWidget(QLabel("Seed"))
        prow.addWidget(self.seed)
        prow.addWidget(self.new_seed_button)
        prow.addStretch(1)
        prow.addWidget(self.overview_button)
        pl.addLayout(prow)
        pl.addWidget(self.preview_status)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.grid)
        detail = QWidget()
        dl = QVBoxLayout(detail)
        dl.setContentsMargins(0, 0, 0, 0)
        dl.addWidget(self.large, 1)
        dl.addWidget(self.explanation)
        split.addWidget(detail)
        split.setSizes([360, 300])
        pl.addWidget(split, 1)

        outer = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(left)
        outer.addWidget(preview_box)
        outer.setSizes([520, 640])
        layout = QVBoxLayout(self)
        layout.addWidget(outer)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(300)
        self._debounce.timeout.connect(self.start_preview)

    # -- task ----------------------------------------------------------------------------------
    def task_name(self) -> str:
        item = self.task_list.currentItem()
        return item.text() if item else (list_tasks() or [""])[0]

    def select_task(self, name: str, options: dict | None = None) -> None:
        items = self.task_list.findItems(name, Qt.MatchFlag.MatchExactly)
        if not items:
            items = [self.task_list.item(0)] if self.task_list.count() else []
        if items:
            self.task_list.setCurrentItem(items[0])
            if options:
                self.form.set_values(options)

    def _on_task(self, name: str) -> None:
        if not name:
            return
        cls = get_task(name)
        self.description.setText(f"<b>{name}</b>: {cls.description}. "
                                 f"Metric: {cls.metric_name}; {cls.samples_per_image} network input(s) per image.")
        self.paper.setText(f"<i>{cls.paper}</i>")
        self.form.set_config_cls(cls.config_cls)
        self.task_changed.emit(name)
        self.schedule_preview()

    def options(self) -> dict:
        return self.form.values()

    # -- preview -------------------------------------------------------------------------------
    def schedule_preview(self) -> None:
        """Regenerate the preview soon (settings changes are debounced)."""
        self._debounce.start()

    def start_preview(self) -> None:
        data = self.window_.data_page
        if not data.folder or not data.image_count():
            self.preview_status.setText("Choose a folder of images (step 1) to see samples.")
            return
        self.preview_status.setText("Drawing samples…")
        # a running preview is superseded: it stops at its next sample and delivers nothing
        self.jobs.start("preview", render_preview, self.task_name(), self.options(),
                        self.window_.pretrain_page.image_size(), data.report.files, data.folder, PREVIEW_N,
                        self.seed.value(), on_result=self._on_preview, on_error=self._on_preview_failed,
                        pass_control=True)

    @property
    def job(self) -> Job | None:
        """The current (newest) preview request."""
        return self.jobs.get("preview")

    def _on_preview(self, preview: Preview) -> None:
        self.samples = preview.samples
        self.overview = preview.overview
        self.grid.clear()
        for k, sample in enumerate(self.samples):
            item = QListWidgetItem(QIcon(QPixmap.fromImage(sample.image)), sample.caption)
            item.setToolTip(f"Sample {k + 1}: {sample.explanation}")
            self.grid.addItem(item)
        self._fit_icons()
        self.grid.scrollToTop()
        n = len(self.samples)
        self.preview_status.setText(f"{plural(n, 'sample')} of {preview.task} (seed {preview.seed}). "
                                    f"Click one to see it large.")
        self.overview_button.setEnabled(self.overview is not None)
        if self.overview is not None:
            self.show_overview()  # the whole batch first, large; the grid holds the samples
        elif self.samples:
            self.grid.setCurrentRow(0)
        self.preview_ready.emit(n)

    def icon_scale(self) -> float:
        """The factor the grid draws the samples at: 100% when they fit its width, else shrunk, but never
        below the scale that keeps the labels drawn in them readable (:func:`min_display_scale`)."""
        if not self.samples:
            return 1.0
        width = max(s.image.width() for s in self.samples)
        room = self.grid.viewport().width() - 2 * self.grid.spacing() - 8
        return max(min_display_scale(), min(1.0, room / max(1, width)))

    def _fit_icons(self) -> None:
        if not self.samples:
            return
        f = self.icon_scale()
        w = max(s.image.width() for s in self.samples)
        h = max(s.image.height() for s in self.samples)
        size = QSize(max(1, int(w * f)), max(1, int(h * f)))
        if size != self.grid.iconSize():
            self.grid.setIconSize(size)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if watched is self.grid.viewport() and event.type() == QEvent.Type.Resize:
            self._fit_icons()
        return super().eventFilter(watched, event)

    def _on_preview_failed(self, message: str, details: str) -> None:
        self.preview_status.setText(f"<span style='color:#d62728'>{message}</span>")
        self.window_.log(details or message, "warning")
        self.preview_failed.emit(message)

    def show_sample(self, row: int) -> None:
        if not 0 <= row < len(self.samples):
            return
        s = self.samples[row]
        self.large.set_image(s.image, enlarge=True)
        self.explanation.setText(f"<b>Sample {row + 1}: {html.escape(s.caption)}.</b> {html.escape(s.explanation)}")

    def show_overview(self) -> None:
        """Show the task's drawing of the whole batch in the large view."""
        if self.overview is None:
            return
        self.grid.setCurrentRow(-1)
        self.grid.clearSelection()
        self.large.set_image(self.overview.image, enlarge=False)
        self.large.verticalScrollBar().setValue(0)
        self.explanation.setText(f"<b>Overview.</b> {html.escape(self.overview.explanation)}")

    def shutdown(self) -> None:
        self._debounce.stop()
        self.jobs.stop_all()
