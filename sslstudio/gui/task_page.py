"""Step 2, Pretext task: the registered tasks, a settings form made from the task's config, and
a preview grid of generated samples rendered in the background."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QScrollArea, QSizePolicy, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from sslstudio.gui.config_form import ConfigForm
from sslstudio.gui.workers import Job, JobRunner
from sslstudio.tasks import get_task, list_tasks

__all__ = ["TaskPage", "render_preview", "PreviewSample"]

PREVIEW_N = 12


@dataclass
class PreviewSample:
    image: QImage
    caption: str
    explanation: str


def pil_to_qimage(img) -> QImage:
    img = img.convert("RGB")
    data = img.tobytes()
    q = QImage(data, img.width, img.height, 3 * img.width, QImage.Format.Format_RGB888)
    return q.copy()  # own the pixels


def _describe_target(target) -> str:
    try:
        import torch

        if isinstance(target, torch.Tensor):
            if target.numel() == 1:
                return f"target label {int(target.item()) if not target.is_floating_point() else float(target.item()):g}"
            if target.numel() <= 8 and not target.is_floating_point():
                return "target labels " + ", ".join(str(int(v)) for v in target.flatten())
            return f"target: a {'x'.join(map(str, target.shape))} {str(target.dtype).replace('torch.', '')} tensor"
    except Exception:  # noqa: BLE001 - a description is a nicety
        pass
    return f"target: {target!r}"[:200]


def render_preview(task_name: str, options: dict, image_size: int, files: list | None, folder: str,
                   n: int, seed: int, control=None) -> list[PreviewSample]:
    """Make and draw ``n`` samples of a task (runs in a worker thread; returns QImages).

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
    if own is not None:
        return [PreviewSample(pil_to_qimage(own), f"{task.name} preview", task.description)]
    out = []
    for k, (inputs, target) in enumerate(batch.samples()):
        check()
        out.append(PreviewSample(pil_to_qimage(task.render(inputs, target)), f"sample {k + 1}",
                                 f"Sample {k + 1} of the {task.name} task (seed {seed}): {_describe_target(target)}. "
                                 f"{task.description}; the label drawn under each input is what the network "
                                 "must predict."))
    return out


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
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
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
        self.grid.setIconSize(QSize(150, 150))
        self.grid.setSpacing(4)
        self.grid.currentRowChanged.connect(self.show_sample)
        self.large = QLabel()
        self.large.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.large.setMinimumHeight(120)
        self.large.setMinimumWidth(1)  # a large pixmap must not widen the window
        self.large.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.explanation = QLabel("Click a sample to see it large.")
        self.explanation.setWordWrap(True)
        preview_box = QGroupBox("Preview")
        pl = QVBoxLayout(preview_box)
        prow = QHBoxLayout()
        prow.addWidget(QLabel("Seed"))
        prow.addWidget(self.seed)
        prow.addWidget(self.new_seed_button)
        prow.addStretch(1)
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
        split.setSizes([400, 220])
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

    def _on_preview(self, samples: list) -> None:
        self.samples = samples
        self.grid.clear()
        for s in samples:
            item = QListWidgetItem(QIcon(QPixmap.fromImage(s.image)), s.caption)
            item.setToolTip(s.explanation)
            self.grid.addItem(item)
        big = max((max(s.image.width(), s.image.height()) for s in samples), default=150)
        side = 150 if len(samples) > 1 else min(big, 600)
        self.grid.setIconSize(QSize(side, side))
        self.preview_status.setText(f"{len(samples)} samples of {self.task_name()} "
                                    f"(seed {self.seed.value()}). Click one to see it large.")
        if samples:
            self.grid.setCurrentRow(0)
        self.preview_ready.emit(len(samples))

    def _on_preview_failed(self, message: str, details: str) -> None:
        self.preview_status.setText(f"<span style='color:#d62728'>{message}</span>")
        self.window_.log(details or message, "warning")
        self.preview_failed.emit(message)

    def show_sample(self, row: int) -> None:
        if not 0 <= row < len(self.samples):
            return
        s = self.samples[row]
        pix = QPixmap.fromImage(s.image)
        h = max(120, self.large.height() - 4)
        w = max(120, self.large.width() - 4)
        self.large.setPixmap(pix.scaled(QSize(w, h), Qt.AspectRatioMode.KeepAspectRatio,
                                        Qt.TransformationMode.FastTransformation))
        self.explanation.setText(s.explanation)

    def shutdown(self) -> None:
        self._debounce.stop()
        self.jobs.stop_all()
