"""Step 6, Explore: what a backbone's features look like, as maps, neighbours, activation maps and
shortcut checks (the window's half of ``sslstudio explore``).

The page runs :func:`sslstudio.explore.explore` in the background (one :class:`JobRunner` slot,
"explore") on the checked initialisations (two at most: the maps sit side by side), the chosen stage
and projection, and the data page's images (or the compare page's labelled folder, coloured by class).
It draws one pyqtgraph scatter per initialisation; hovering a point shows its image, and clicking it
selects the same image in both maps (the engine maps the same rows in the same order) and fills the
neighbour gallery from the features the engine returns (cosine similarity, as the kNN probe). The
activation maps and the shortcut table are the engine's files and rows, shown as they are.

Results on screen always belong to the selection on screen: changing an initialisation, the stage,
the method, the limit or a folder clears them with a one-line note.
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QFrame, QGridLayout, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QListWidgetItem, QPushButton, QScrollArea, QSizePolicy,
                               QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from sslstudio.engine.durations import in_words
from sslstudio.gui.panels import (HoldsSelection, add_init_item, check_only, checked_states, init_list, run_arch,
                                  run_choices, run_controls, settings_column, settings_form, split_page)
from sslstudio.gui.plots import apply_palette, make_plot
from sslstudio.gui.workers import Job, JobRunner

__all__ = ["EmbeddingMap", "ExplorePage", "nearest_point", "point_size", "run_exploration", "shortcut_cells"]

#: What the page shows and how to read it, for a new user.
INTRO = ("Each map places the images by their features at the chosen stage: points that are close share "
         "features. If the colours (classes) form islands, the features separate the classes. Hover over a point "
         "to see its image; click it to see its nearest images under each initialisation.")
#: Maps side by side (more checked initialisations: the first ones, with a note).
MAX_MAPS = 2
#: Neighbours in the gallery, per initialisation.
GALLERY_K = 8
#: Side in pixels of the hovered image.
HOVER_PX = 150
#: The window's default and largest number of images in a map.
DEFAULT_LIMIT = 2_000
MAX_LIMIT = 10_000
METHOD_LABELS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
METHOD_TIPS = {"pca": "PCA: instant, linear; shows the main directions of the features",
               "tsne": "t-SNE: keeps neighbours together; islands are groups of similar images (seconds)",
               "umap": "UMAP: like t-SNE, also keeps some of the global layout"}
SELECTED_COLOUR = "#d62728"


# -- pure helpers (no widgets) ------------------------------------------------------------------
def run_exploration(config, on_event=None, control=None) -> dict:
    """The engine's :func:`~sslstudio.explore.explore`, as a :class:`JobRunner` calls it."""
    from sslstudio.explore import explore

    return explore(config, emit=on_event, control=control)


def point_size(n: int) -> float:
    """Pixel size of a map's points: large for a few images, small for thousands."""
    return float(np.clip(300.0 / np.sqrt(max(n, 1)), 4.0, 11.0))


def nearest_point(coords: np.ndarray, x: float, y: float, pixel: tuple[float, float],
                  radius_px: float = 8.0) -> int | None:
    """Row of ``coords`` nearest to ``(x, y)`` on screen (``pixel``: data units per pixel in x and y),
    or None when none is within ``radius_px`` pixels."""
    if coords is None or not len(coords):
        return None
    px, py = (max(abs(float(p)), 1e-12) for p in pixel)
    d2 = ((coords[:, 0] - x) / px) ** 2 + ((coords[:, 1] - y) / py) ** 2
    i = int(np.argmin(d2))
    return i if d2[i] <= radius_px ** 2 else None


def _pct(x) -> str:
    return "" if x is None else f"{100 * float(x):.1f}"


def _points(x) -> str:
    return "" if x is None else f"{100 * float(x):+.1f}"


def shortcut_cells(row: dict) -> list[str]:
    """A shortcut row as the table shows it: defence, accuracy with (%), without (%), gain (points), interval."""
    interval = ("" if row.get("gain_low") is None else
                f"{_points(row['gain_low'])} to {_points(row['gain_high'])}")
    return [str(row.get("check", "")), _pct(row.get("accuracy_with")), _pct(row.get("accuracy_without")),
            _points(row.get("gain")), interval]


def label_colours(n: int) -> list[QColor]:
    """The engine's colours of ``n`` classes or clusters (those of ``embedding.png``)."""
    from sslstudio.explore.embedding import colours

    return [QColor.fromRgbF(float(r), float(g), float(b), 1.0) for r, g, b, _a in colours(n)]


def to_qimage(array: np.ndarray) -> QImage:
    """A uint8 ``[H, W, 3]`` array as a QImage that owns its pixels."""
    a = np.ascontiguousarray(array[..., :3], dtype=np.uint8)
    h, w = a.shape[:2]
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def _init_key(init) -> str:
    init = str(init)
    return init if init in ("random", "imagenet") else str(Path(init).resolve())


# -- widgets ---------------------------------------------------------------------------------------
class EmbeddingMap(QWidget):
    """One initialisation's map: a scatter of the images coloured by class or cluster, the selected image
    ringed in red and its neighbours in the text colour. Signals ``hovered(index, global position)`` (-1: none)
    and ``clicked(index)``."""

    hovered = Signal(int, QPoint)
    clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot = make_plot("", "", "", legend="none")
        item = self.plot.getPlotItem()
        item.hideAxis("left")
        item.hideAxis("bottom")
        item.showGrid(x=False, y=False)
        item.setMenuEnabled(False)
        self.plot.setMinimumSize(200, 180)
        self.coords: np.ndarray | None = None
        self.scatter = pg.ScatterPlotItem(pen=None, size=6)
        self.scatter.sigClicked.connect(self._on_clicked)
        text = self.palette().color(self.palette().ColorRole.WindowText)
        self.rings = pg.ScatterPlotItem(size=14, brush=None, pen=pg.mkPen(text, width=1.5))
        self.ring = pg.ScatterPlotItem(size=18, brush=None, pen=pg.mkPen(SELECTED_COLOUR, width=3))
        for z, scatter in enumerate((self.scatter, self.rings, self.ring)):
            scatter.setZValue(z)
            item.addItem(scatter)
        self.selected: int | None = None
        self.neighbours: list[int] = []
        self._hover: int | None = None
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot)

    def set_map(self, coords: np.ndarray, labels: np.ndarray, brushes: list, title: str) -> None:
        """Draw ``coords`` ``[N, 2]``, point i in ``brushes[labels[i]]``, under ``title``."""
        self.coords = np.asarray(coords, dtype=np.float64)
        per_point = [brushes[int(k)] for k in labels]
        self.scatter.setData(x=self.coords[:, 0], y=self.coords[:, 1], brush=per_point,
                             size=point_size(len(self.coords)), data=np.arange(len(self.coords)))
        self.plot.getPlotItem().setTitle(title, size="10pt")
        apply_palette(self.plot)
        self.set_selection(None, [])
        self.plot.getPlotItem().enableAutoRange()

    def clear(self) -> None:
        self.coords = None
        self.scatter.clear()
        self.set_selection(None, [])
        self.plot.getPlotItem().setTitle("")

    def point_count(self) -> int:
        return 0 if self.coords is None else len(self.coords)

    def brushes(self) -> list[QColor]:
        """The colour of each point, in row order."""
        return [QColor(p.brush().color()) for p in self.scatter.points()]

    def set_selection(self, index: int | None, neighbours) -> None:
        """Ring ``index`` (None: nothing) and its ``neighbours`` (rows)."""
        self.selected = None if index is None else int(index)
        self.neighbours = [int(i) for i in neighbours]
        if self.coords is None or index is None:
            self.ring.clear()
            self.rings.clear()
            return
        self.ring.setData(x=[self.coords[index, 0]], y=[self.coords[index, 1]])
        rows = np.asarray(self.neighbours, dtype=np.int64)
        self.rings.setData(x=self.coords[rows, 0], y=self.coords[rows, 1])

    def point_at(self, x: float, y: float) -> int | None:
        """The point under the data position ``(x, y)`` (within 8 pixels), or None."""
        vb = self.plot.getPlotItem().getViewBox()
        size = vb.viewPixelSize()
        return nearest_point(self.coords, x, y, size)

    def _on_mouse_moved(self, pos) -> None:
        if self.coords is None:
            return
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(pos):
            index = None
        else:
            p = vb.mapSceneToView(pos)
            index = self.point_at(p.x(), p.y())
        if index != self._hover:
            self._hover = index
            view_pos = self.plot.mapFromScene(pos)
            self.hovered.emit(-1 if index is None else index, self.plot.mapToGlobal(view_pos))

    def leaveEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().leaveEvent(event)
        if self._hover is not None:
            self._hover = None
            self.hovered.emit(-1, QPoint())

    def _on_clicked(self, _item, points, _ev=None) -> None:
        if len(points):
            self.clicked.emit(int(points[0].index()))


class HoverCard(QFrame):
    """A small floating card over the page: the hovered image, scaled up, and its name and class."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.Box)
        self.setAutoFillBackground(True)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.image = QLabel()
        self.image.setFixedSize(HOVER_PX, HOVER_PX)
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setFixedWidth(HOVER_PX)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(2)
        lay.addWidget(self.image)
        lay.addWidget(self.caption)
        self.index: int | None = None
        self.hide()

    def show_image(self, index: int, image: QImage, caption: str, global_pos: QPoint) -> None:
        self.index = index
        self.image.setPixmap(QPixmap.fromImage(image).scaled(
            HOVER_PX, HOVER_PX, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation))
        self.caption.setText(caption)
        self.adjustSize()
        parent = self.parentWidget()
        pos = parent.mapFromGlobal(global_pos) + QPoint(16, 16)
        if pos.x() + self.width() > parent.width():
            pos.setX(pos.x() - self.width() - 32)
        if pos.y() + self.height() > parent.height():
            pos.setY(pos.y() - self.height() - 32)
        self.move(max(pos.x(), 0), max(pos.y(), 0))
        self.raise_()
        self.show()

    def hide_card(self) -> None:
        self.index = None
        self.hide()


class FitImage(QWidget):
    """An image scaled to the width it is given, never above its own size, aspect kept."""

    def __init__(self, path: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.path = Path(path)
        self.pixmap = QPixmap(str(path))
        policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setToolTip(str(path))

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt API
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt API
        if self.pixmap.isNull() or not self.pixmap.width():
            return 0
        w = min(width, self.pixmap.width())
        return int(round(w * self.pixmap.height() / self.pixmap.width()))

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return self.pixmap.size() if not self.pixmap.isNull() else QSize(0, 0)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(120, self.heightForWidth(120))

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        if self.pixmap.isNull():
            return
        scaled = self.pixmap.scaled(self.size().boundedTo(self.pixmap.size()), Qt.AspectRatioMode.KeepAspectRatio,
                                    Qt.TransformationMode.SmoothTransformation)
        painter = QPainter(self)
        painter.drawPixmap((self.width() - scaled.width()) // 2, 0, scaled)
        painter.end()


class Gallery(QScrollArea):
    """The neighbour gallery: per initialisation its name, then a row with the selected image (red frame) and
    its nearest images with their class (when labelled) and cosine similarity. Thumbnails grow or shrink
    with the width (between 40 and 96 pixels), so a row fits without scrolling sideways."""

    PLACEHOLDER = "Click a point of a map to see its nearest images here."

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.rows: list[tuple[str, int, list[int], list[float]]] = []
        self._thumb = self._caption = None
        self._side = 0
        self._content = QWidget()
        self._grid = QGridLayout(self._content)
        self._grid.setHorizontalSpacing(4)
        self._grid.setVerticalSpacing(1)
        self._grid.setContentsMargins(4, 2, 4, 2)
        self._grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.setWidget(self._content)
        self._content.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.placeholder = QLabel(self.PLACEHOLDER)
        self.placeholder.setWordWrap(True)
        self._grid.addWidget(self.placeholder, 0, 0, 1, GALLERY_K + 1)

    def thumb_side(self) -> int:
        """Thumbnail side for the current width: ``GALLERY_K + 1`` cells side by side (each the side, 8 px of
        caption margin and 4 of spacing), room kept for a vertical scroll bar: the side does not depend on
        whether one is shown, so showing one never redraws the gallery."""
        width = self.width() - 2 * self.frameWidth() - self.verticalScrollBar().sizeHint().width() - 10
        return int(np.clip(width // (GALLERY_K + 1) - 12, 40, 96))

    def _empty_grid(self) -> None:
        while self._grid.count():
            w = self._grid.takeAt(0).widget()
            if w is not None and w is not self.placeholder:
                w.hide()  # at once: deleteLater waits for the event loop
                w.deleteLater()

    def clear_rows(self, text: str = PLACEHOLDER) -> None:
        self.rows = []
        self._empty_grid()
        self.placeholder.setText(text)
        self._grid.addWidget(self.placeholder, 0, 0, 1, GALLERY_K + 1)
        self.placeholder.show()

    def set_rows(self, rows, thumb, caption) -> None:
        """``rows``: ``(label, query row, neighbour rows, similarities)`` per initialisation; ``thumb(i)`` a
        QImage of row i, ``caption(i)`` its class ("" when unlabelled)."""
        self.rows = [(str(a), int(q), [int(i) for i in idx], [float(s) for s in sims]) for a, q, idx, sims in rows]
        self._thumb, self._caption = thumb, caption
        self._draw()

    def _draw(self) -> None:
        self._empty_grid()
        self.placeholder.hide()
        side = self._side = self.thumb_side()
        thumb, caption = self._thumb, self._caption
        for r, (label, query, indices, sims) in enumerate(self.rows):
            name = QLabel(f"<b>{label}</b>: the selected image (red), then the {len(indices)} most alike")
            self._grid.addWidget(name, 2 * r, 0, 1, GALLERY_K + 1)
            self._grid.addWidget(self._cell(thumb(query), f"#{query}\n{caption(query)}".strip(), side,
                                            SELECTED_COLOUR), 2 * r + 1, 0)
            for j, (i, s) in enumerate(zip(indices, sims)):
                text = "\n".join(t for t in (caption(i), f"cos {s:.3f}") if t)
                self._grid.addWidget(self._cell(thumb(i), text, side, None, f"#{i}"), 2 * r + 1, j + 1)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if self.rows and self.thumb_side() != self._side:
            self._draw()

    @staticmethod
    def _cell(image: QImage, text: str, side: int, frame: str | None, tip: str = "") -> QWidget:
        cell = QWidget()
        lay = QVBoxLayout(cell)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(1)
        pic = QLabel()
        pic.setFixedSize(side + 4, side + 4)
        pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
        pic.setPixmap(QPixmap.fromImage(image).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation))
        if frame:
            pic.setStyleSheet(f"border: 2px solid {frame};")
        words = QLabel()
        words.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        font = words.font()
        font.setPointSizeF(max(font.pointSizeF() - 1, 7.0))
        words.setFont(font)
        words.setFixedSize(side + 8, 2 * words.fontMetrics().lineSpacing() + 2)  # never squeezed under the image
        metrics = words.fontMetrics()
        words.setText("\n".join(metrics.elidedText(line, Qt.TextElideMode.ElideRight, side + 8)
                                for line in text.split("\n")))
        words.setToolTip(" ".join(t for t in (tip, text.replace("\n", ", ")) if t))
        lay.addWidget(pic, 0, Qt.AlignmentFlag.AlignHCenter)
        lay.addWidget(words)
        return cell


# -- the page --------------------------------------------------------------------------------------
class ExplorePage(HoldsSelection, QWidget):
    """Signals ``exploration_finished(result)`` (the engine's dict) and ``exploration_failed(message)``."""

    exploration_finished = Signal(object)
    exploration_failed = Signal(str)

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.jobs = JobRunner(self, track=getattr(window, "track", None))  # slot "explore": one at a time
        self.job: Job | None = None
        self.out_dir: Path | None = None
        self.result: dict | None = None
        self.selected_index: int | None = None
        self._runs: list[dict] = []
        self._thumbs: dict[int, QImage] = {}
        self._imagenet_statuses: dict[tuple, tuple[bool, str]] = {}
        self._shown_selection: dict | None = None
        self._hold = 0
        self._own_folders = {"data": False, "labelled": False}  # typed or browsed here: no longer follows
        self.stale_note = ""
        self._more_note = ""
        self._build_settings()
        self._build_results()
        split_page(self, self._settings_scroll, self._results, 700)
        self.hover_card = HoverCard(self)
        self.set_runs([])
        self._watch_selection()
        self._follow()

    # -- building ------------------------------------------------------------------------------
    def _folder_row(self, edit: QLineEdit, title: str) -> QHBoxLayout:
        browse = QPushButton("Browse…")
        browse.clicked.connect(lambda: self._choose_folder(edit, title))
        self._browse_buttons.append(browse)
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(browse)
        return row

    def _build_settings(self) -> None:
        self._browse_buttons: list[QPushButton] = []
        self.inits = init_list("Initialisations to map: finished runs of the workspace, ImageNet and random "
                               f"(the first {MAX_MAPS} checked are mapped side by side)", 96, self._on_inits_changed)
        self.stage = QComboBox()
        self.stage.setToolTip("The backbone stage whose features are mapped (layer3: mid-level features)")
        self.method = QComboBox()
        self.method.setToolTip("How the features are drawn in two dimensions")
        self.umap_hint = QLabel()
        self.umap_hint.setEnabled(False)  # greyed: a hint, not a choice
        self._fill_methods()
        mrow = QHBoxLayout()
        mrow.addWidget(self.method)
        mrow.addWidget(self.umap_hint, 1)
        self.data = QLineEdit()
        self.data.setPlaceholderText("the data page's folder")
        self.data.setToolTip("Unlabelled images to map (default: the folder of step 1); points are coloured by "
                             "k-means clusters of the first initialisation's features")
        self.labelled = QLineEdit()
        self.labelled.setPlaceholderText("optional: DIR/<class>/ (coloured by class)")
        self.labelled.setToolTip("A labelled folder (default: that of step 4). When given, its images are "
                                 "mapped instead, coloured by class")
        self.data.textEdited.connect(lambda _t: self._own_folders.__setitem__("data", True))
        self.labelled.textEdited.connect(lambda _t: self._own_folders.__setitem__("labelled", True))
        self.limit = QSpinBox()
        self.limit.setRange(3, MAX_LIMIT)
        self.limit.setSingleStep(500)
        self.limit.setValue(DEFAULT_LIMIT)
        self.limit.setGroupSeparatorShown(True)
        self.limit.setSuffix(" images")
        self.limit.setToolTip("Most images in a map (a seeded subset of a larger folder); fewer is faster")
        self.extras = QCheckBox("Activation maps and shortcut checks")
        self.extras.setChecked(True)
        self.extras.setToolTip("Also draw where each stage responds on one image, and (for a checked run) test "
                               "whether its pretext task could be solved by a shortcut")
        form = settings_form()
        form.addRow("Initialisations", self.inits)
        form.addRow("Stage", self.stage)
        form.addRow("Method", mrow)
        form.addRow("Images", self._folder_row(self.data, "Choose the images to map"))
        form.addRow("Labelled", self._folder_row(self.labelled, "Choose a labelled folder"))
        form.addRow("Limit", self.limit)
        form.addRow("", self.extras)
        controls = run_controls("Explore", "Cancel", "Check one or two initialisations and press Explore.",
                                self.start, self.stop)
        self.run_button, self.stop_button, self.progress, self.status = controls
        self._settings_scroll = settings_column("6 · Explore", "Exploration", form, controls)

    def _fill_methods(self) -> None:
        from sslstudio.explore.embedding import UMAP_INSTALL, available_methods

        methods = available_methods()
        for m in methods:
            self.method.addItem(METHOD_LABELS[m], m)
            self.method.setItemData(self.method.count() - 1, METHOD_TIPS[m], Qt.ItemDataRole.ToolTipRole)
        self.method.setCurrentIndex(max(self.method.findData("tsne"), 0))
        self.umap_hint.setText("" if "umap" in methods else f"UMAP: {UMAP_INSTALL}")
        self.umap_hint.setToolTip("UMAP maps need the umap-learn package" if "umap" not in methods else "")
        self.umap_hint.setVisible("umap" not in methods)

    def _build_results(self) -> None:
        self.intro = QLabel(INTRO)
        self.intro.setWordWrap(True)
        self.maps = [EmbeddingMap() for _ in range(MAX_MAPS)]
        maps = QWidget()
        ml = QHBoxLayout(maps)
        ml.setContentsMargins(0, 0, 0, 0)
        for k, m in enumerate(self.maps):
            m.hovered.connect(lambda index, pos, k=k: self.show_hover(index, pos, k))
            m.clicked.connect(self.select_point)
            ml.addWidget(m, 1)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.map_note = QLabel()
        self.map_note.setWordWrap(True)
        self.map_note.setVisible(False)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(3)
        tl.addWidget(self.intro)
        tl.addWidget(maps, 1)
        tl.addWidget(self.legend)
        tl.addWidget(self.map_note)

        self.gallery = Gallery()
        self.activation_note = QLabel()
        self.activation_note.setWordWrap(True)
        self._activation_content = QWidget()
        self._activation_layout = QVBoxLayout(self._activation_content)
        self._activation_layout.setAlignment(Qt.AlignmentFlag.AlignTop)
        self._activation_layout.addWidget(self.activation_note)
        self.activations = QScrollArea()
        self.activations.setWidgetResizable(True)
        self.activations.setFrameShape(QFrame.Shape.NoFrame)
        self.activations.setWidget(self._activation_content)
        self.activation_images: list[FitImage] = []
        self.shortcut_note = QLabel()
        self.shortcut_note.setWordWrap(True)
        self.shortcut_table = QTableWidget(0, 5)
        self.shortcut_table.setHorizontalHeaderLabels(["defence / check", "with it (%)", "without it (%)",
                                                       "gain without (points)", "95% interval"])
        self.shortcut_table.verticalHeader().setVisible(False)
        for c, tip in enumerate(("The defence switched off, or the cue removed (borders blanked)",
                                 "Pretext accuracy with the defence on / the cue removed",
                                 "Pretext accuracy with the defence off / the cue available",
                                 "Accuracy without minus with: a large gain is a shortcut",
                                 "95% paired-bootstrap interval of the gain")):
            self.shortcut_table.horizontalHeaderItem(c).setToolTip(tip)
        self.shortcut_meanings = QLabel()
        self.shortcut_meanings.setWordWrap(True)
        self.shortcut_meanings.setTextFormat(Qt.TextFormat.RichText)
        self.shortcut_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.shortcut_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.shortcut_table.horizontalHeader().setStretchLastSection(True)
        shortcuts = QWidget()
        sl = QVBoxLayout(shortcuts)
        sl.setContentsMargins(4, 4, 4, 4)
        sl.addWidget(self.shortcut_note)
        sl.addWidget(self.shortcut_table)
        sl.addWidget(self.shortcut_meanings)
        sl.addStretch(1)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.gallery, "Nearest images")
        self.tabs.addTab(self.activations, "Activation maps")
        self.tabs.addTab(shortcuts, "Shortcut checks")
        self.tabs.setTabToolTip(0, f"The {GALLERY_K} images most alike to the selected one (cosine similarity of "
                                   "the stage's features), under each initialisation")
        self.tabs.setTabToolTip(1, "Where each stage responds on the first image, and where a run's pretext head "
                                   "looks (Grad-CAM)")
        self.tabs.setTabToolTip(2, "Does the pretext task have a shortcut its defences close?")
        self.summary = QLabel("Nothing explored yet.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open folder")
        self.open_button.setToolTip("Open the folder the exploration wrote its files to")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_folder)
        srow = QHBoxLayout()
        srow.addWidget(self.summary, 1)
        srow.addWidget(self.open_button)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(self.tabs, 1)
        bl.addLayout(srow)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(top)
        right.addWidget(bottom)
        right.setSizes([470, 300])
        right.setChildrenCollapsible(False)
        self._results = right

    # -- inputs --------------------------------------------------------------------------------
    def _choose_folder(self, edit: QLineEdit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, title, edit.text())
        if folder:
            edit.setText(folder)
            self._own_folders["data" if edit is self.data else "labelled"] = True

    def _follow(self) -> None:
        """Follow the data page's folder (images) and the compare page's labelled folder, unless set here."""
        data = getattr(self.window_, "data_page", None)
        compare = getattr(self.window_, "compare_page", None)
        if data is not None:
            data.scan_started.connect(lambda folder: self.follow_folders(data=folder))
        if compare is not None:
            compare.labelled.textChanged.connect(lambda text: self.follow_folders(labelled=text))

    def follow_folders(self, data: str | None = None, labelled: str | None = None) -> None:
        """Take ``data`` / ``labelled`` (default: the data page's and compare page's, for an empty field) unless
        the folder was typed or browsed here."""
        page = getattr(self.window_, "data_page", None)
        compare = getattr(self.window_, "compare_page", None)
        if data is None and page is not None and not self.data.text().strip():
            data = page.folder or ""
        if labelled is None and compare is not None and not self.labelled.text().strip():
            labelled = compare.labelled.text()
        for key, edit, value in (("data", self.data, data), ("labelled", self.labelled, labelled)):
            if value is not None and not self._own_folders[key] and edit.text() != value.strip():
                edit.setText(value.strip())

    def _add_init_item(self, label: str, key: str, tip: str, checked: bool) -> QListWidgetItem:
        return add_init_item(self.inits, label, key, tip, checked)

    def set_runs(self, runs: list[dict]) -> None:
        """Offer the workspace's finished runs (the newest checked by default), ImageNet and random."""
        self._runs = list(runs)
        previous = checked_states(self.inits)
        with self._holding():
            self.inits.blockSignals(True)
            self.inits.clear()
            for label, key, tip, checked in run_choices(runs, previous):
                self._add_init_item(label, key, tip, checked)
            self._add_init_item("ImageNet", "imagenet", "torchvision's ImageNet weights",
                                previous.get("imagenet") == Qt.CheckState.Checked)
            self._add_init_item("random", "random", "A randomly initialised backbone: what any learning is "
                                "measured against", previous.get("random", Qt.CheckState.Checked)
                                == Qt.CheckState.Checked)
            self.inits.blockSignals(False)
            self._on_inits_changed()

    def checked_inits(self) -> list[str]:
        """The checked initialisations that can be used, in list order (runs first, then ImageNet, random)."""
        out = []
        for i in range(self.inits.count()):
            item = self.inits.item(i)
            if item.checkState() == Qt.CheckState.Checked and item.flags() & Qt.ItemFlag.ItemIsEnabled:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return out

    def mapped_inits(self) -> list[str]:
        """What an exploration started now maps: the first :data:`MAX_MAPS` checked initialisations."""
        return self.checked_inits()[:MAX_MAPS]

    def set_checked_inits(self, keys: list[str]) -> None:
        with self._holding():
            check_only(self.inits, keys)
            self._on_inits_changed()

    def arch(self) -> str:
        """The architecture mapped: that of the first checked run, else the pretraining page's."""
        arch = run_arch(self._runs, self.checked_inits())
        if arch is not None:
            return arch
        pre = getattr(self.window_, "pretrain_page", None)
        return pre.arch.currentText() if pre is not None else "resnet18"

    def _on_inits_changed(self, *_args) -> None:
        with self._holding():
            self.refresh_imagenet()
            self.set_stage_choices(self.arch())

    def set_stage_choices(self, arch: str) -> None:
        """Offer ``arch``'s stages; keep the chosen one if it is still there, else layer3 (or the last)."""
        from sslstudio.gui.compare_page import stage_names

        stages = stage_names(arch) or ["layer3"]
        if stages == [self.stage.itemText(i) for i in range(self.stage.count())]:
            return
        current = self.stage.currentText()
        self.stage.blockSignals(True)
        self.stage.clear()
        self.stage.addItems(stages)
        default = "layer3" if "layer3" in stages else stages[-1]
        self.stage.setCurrentText(current if current in stages else default)
        self.stage.blockSignals(False)
        self._check_selection()

    def imagenet_weights(self) -> str:
        """The ImageNet weights file chosen on the compare page ("" for torchvision's cached file)."""
        compare = getattr(self.window_, "compare_page", None)
        return str(getattr(compare, "imagenet_weights", "") or "")

    def refresh_imagenet(self) -> tuple[bool, str]:
        """Offer ImageNet only when its weights are on this machine (as the compare page decides); else the
        row is greyed out and says why."""
        from sslstudio.models.weights import imagenet_weights_status

        key = (self.arch(), self.imagenet_weights())
        if key not in self._imagenet_statuses:
            self._imagenet_statuses[key] = imagenet_weights_status(key[0], key[1] or None)
        available, reason = self._imagenet_statuses[key]
        for i in range(self.inits.count()):
            item = self.inits.item(i)
            if item.data(Qt.ItemDataRole.UserRole) != "imagenet":
                continue
            self.inits.blockSignals(True)
            flags = item.flags() | Qt.ItemFlag.ItemIsEnabled if available else item.flags() & ~Qt.ItemFlag.ItemIsEnabled
            item.setFlags(flags)
            item.setText("ImageNet" if available else f"ImageNet — {reason}")
            item.setToolTip(f"ImageNet weights for {key[0]}: {reason}" + (
                "" if available else ". Get them on step 4 (“Choose weights file…”) to map them here."))
            if not available:
                item.setCheckState(Qt.CheckState.Unchecked)
            self.inits.blockSignals(False)
        return available, reason

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self.follow_folders()
        self._on_inits_changed()

    def is_running(self) -> bool:
        return self.job is not None and self.job.is_running()

    # -- the selection and the results on screen ---------------------------------------------
    def selection(self) -> dict:
        """What an exploration started now would map: initialisations, stage, method, limit, folders."""
        return {"inits": [_init_key(k) for k in self.mapped_inits()], "stage": self.stage.currentText(),
                "method": self.method.currentData(), "limit": self.limit.value(),
                "data": self.data.text().strip(), "labelled": self.labelled.text().strip()}

    @property
    def shown_selection(self) -> dict | None:
        """What the maps on screen were made for (None when none are shown)."""
        return self._shown_selection

    def _watch_selection(self) -> None:
        self.stage.currentIndexChanged.connect(self._check_selection)
        self.method.currentIndexChanged.connect(self._check_selection)
        self.limit.valueChanged.connect(self._check_selection)
        self.data.textChanged.connect(self._check_selection)
        self.labelled.textChanged.connect(self._check_selection)

    def describe(self, sel: dict) -> str:
        names = [k if k in ("random", "imagenet") else Path(k).name for k in sel.get("inits") or []]
        return (f"{', '.join(names) or 'no initialisation'} · {sel.get('stage')} · "
                f"{METHOD_LABELS.get(sel.get('method'), sel.get('method'))} · {sel.get('limit'):,} images")

    def _check_selection(self, *_args) -> None:
        """Clear the maps, with a note, when they no longer belong to the selection on screen."""
        if self._hold or self._shown_selection is None or self.is_running():
            return
        if self._shown_selection != self.selection():
            note = (f"The maps shown were for {self.describe(self._shown_selection)}; press Explore for the "
                    "current selection.")
            self.clear_results()
            self.stale_note = note
            self.status.setText(note)

    def clear_results(self) -> None:
        self._shown_selection = None
        self.result = None
        self.selected_index = None
        self._thumbs.clear()
        for k, m in enumerate(self.maps):
            m.clear()
            m.setVisible(True)
        self.legend.setText("")
        self.map_note.setVisible(False)
        self.hover_card.hide_card()
        self.gallery.clear_rows()
        self.show_activations([], "")
        self.show_shortcuts(None)
        self.summary.setText("Nothing explored yet.")
        self.open_button.setEnabled(False)

    def _inputs(self) -> list[QWidget]:
        return [self.inits, self.stage, self.method, self.data, self.labelled, *self._browse_buttons, self.limit,
                self.extras]

    def _set_inputs_enabled(self, on: bool) -> None:
        for w in self._inputs():
            w.setEnabled(on)

    # -- the page's state across sessions --------------------------------------------------------
    def state(self) -> dict:
        """The settings a reopened window puts back (folders only when chosen here)."""
        return {"inits": self.checked_inits(), "stage": self.stage.currentText(), "method": self.method.currentData(),
                "limit": self.limit.value(), "extras": self.extras.isChecked(),
                "data": self.data.text() if self._own_folders["data"] else "",
                "labelled": self.labelled.text() if self._own_folders["labelled"] else ""}

    def restore_state(self, state: dict) -> None:
        """Put back what :meth:`state` saved (after the runs are offered); unknown values keep the defaults."""
        if not isinstance(state, dict):
            return
        with self._holding():
            if isinstance(state.get("inits"), list):
                self.set_checked_inits([str(k) for k in state["inits"]])
            if state.get("stage") and self.stage.findText(str(state["stage"])) >= 0:
                self.stage.setCurrentText(str(state["stage"]))
            i = self.method.findData(state.get("method"))
            if i >= 0:
                self.method.setCurrentIndex(i)
            if isinstance(state.get("limit"), int):
                self.limit.setValue(state["limit"])
            if isinstance(state.get("extras"), bool):
                self.extras.setChecked(state["extras"])
            for key, edit in (("data", self.data), ("labelled", self.labelled)):
                if state.get(key):
                    edit.setText(str(state[key]))
                    self._own_folders[key] = True

    # -- running -------------------------------------------------------------------------------
    def config(self, out: Path):
        """The engine's :class:`~sslstudio.explore.ExploreConfig` for the settings on screen."""
        from sslstudio.explore import ExploreConfig

        inits = self.mapped_inits()
        runs = [k for k in inits if k not in ("random", "imagenet")]
        run = runs[0] if runs else None
        others = tuple(k for k in inits if k != run)
        pre = getattr(self.window_, "pretrain_page", None)
        return ExploreConfig(
            out=str(out), run=run, inits=others, data=self.data.text().strip() or None,
            labelled=self.labelled.text().strip() or None, stage=self.stage.currentText(),
            method=self.method.currentData(), limit=self.limit.value(),
            image_size=None if run else (pre.image_size() if pre is not None else None),
            device=pre.device.currentData() if pre is not None else "auto",
            seed=pre.seed.value() if pre is not None else 0, neighbours=GALLERY_K,
            arch=None if run else self.arch(),
            weights=(self.imagenet_weights() or None) if "imagenet" in inits else None, extras=self.extras.isChecked())

    def start(self, out: str | None = None) -> bool:
        """Start an exploration of the selection; False (with a sentence in the status) when it cannot."""
        if self.is_running():
            return False
        checked = self.checked_inits()
        if not checked:
            return self._refuse("Check at least one initialisation (a run, ImageNet or random).")
        if not (self.data.text().strip() or self.labelled.text().strip()):
            return self._refuse("Choose the images to map: a folder on step 1 or here, or a labelled folder.")
        self.out_dir = Path(out) if out else (self.window_.workspace / "explore" /
                                              datetime.now().strftime("%Y%m%d-%H%M%S"))
        config = self.config(self.out_dir)
        self.clear_results()
        self._shown_selection = self.selection()
        self.stale_note = ""
        self._note_more(checked)
        self.job = self.jobs.start("explore", run_exploration, config, on_event=self.on_event,
                                   on_result=self._on_finished, on_error=self._on_failed,
                                   on_cancelled=self._on_cancelled, on_ended=self._on_ended, pass_control=True,
                                   replace=False)
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._set_inputs_enabled(False)
        self.progress.setRange(0, 0)
        self.status.setText("Exploring…")
        return True

    def _refuse(self, message: str) -> bool:
        self.status.setText(message)
        self.exploration_failed.emit(message)
        return False

    def _note_more(self, checked: list[str]) -> None:
        """With more initialisations checked than maps, say which are mapped."""
        self._more_note = ""
        if len(checked) > MAX_MAPS:
            names = [self.inits.item(i).text().split("  (")[0] for i in range(self.inits.count())
                     if self.inits.item(i).data(Qt.ItemDataRole.UserRole) in checked]
            self._more_note = (f"{len(checked)} initialisations are checked; the maps show the first {MAX_MAPS} "
                               f"({', '.join(names[:MAX_MAPS])}). Uncheck one to map another.")
        self.map_note.setText(self._more_note)
        self.map_note.setVisible(bool(self._more_note))

    def stop(self) -> None:
        if self.is_running():
            self.job.cancel()
            self.stop_button.setEnabled(False)
            self.status.setText("Cancelling…")

    def on_event(self, ev) -> None:
        kind = getattr(ev, "kind", None)
        if kind == "progress":
            total = max(int(ev.total or 0), 0)
            self.progress.setRange(0, total)
            self.progress.setValue(min(int(ev.done), total) if total else 0)
            eta = in_words(ev.eta_s) if ev.eta_s else ""
            self.status.setText(" · ".join(p for p in (ev.message or "Exploring", f"about {eta} left" if eta else "")
                                           if p))
        elif kind == "log":
            self.window_.log(ev.message, ev.level)

    def _on_finished(self, result: dict) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.show_result(result)
        self.exploration_finished.emit(result)

    def _on_failed(self, message: str, details: str) -> None:
        from sslstudio.gui.window import window_words

        message = window_words(message)
        self.clear_results()
        self.progress.setRange(0, 1)
        self.status.setText(f"<span style='color:#d62728'>Failed: {message}</span>")
        self.window_.log(details or message, "error")
        self.window_.show_error("Exploration failed", message)
        self.exploration_failed.emit(message)

    def _on_cancelled(self) -> None:
        self.clear_results()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText("Cancelled: nothing is shown. Press Explore to start again.")

    def _on_ended(self) -> None:
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self._set_inputs_enabled(True)
        self.refresh_imagenet()

    def open_folder(self) -> bool:
        if self.out_dir is None or not self.out_dir.is_dir():
            return False
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.out_dir)))

    # -- showing a result --------------------------------------------------------------------------
    def show_result(self, result: dict) -> None:
        """Draw the maps, the legend, the gallery of the engine's query, the activation maps, the shortcut
        table and the summary line of an engine result."""
        self.result = result
        self._thumbs.clear()
        names = list(result["label_names"])
        colours = label_colours(len(names))
        brushes = [pg.mkBrush(c) for c in colours]
        labels = np.asarray(result["labels"], dtype=np.int64)
        method = METHOD_LABELS.get(result["method"], result["method"])
        n = len(result["paths"])
        for m, entry in zip(self.maps, result["inits"][:MAX_MAPS]):
            m.set_map(entry["coords"], labels, brushes, entry["name"])
            m.setToolTip(f"{entry['label']}: {result['stage']} features of {n:,} images, {method}")
        for k, m in enumerate(self.maps):
            if k >= len(result["inits"]):
                m.clear()
            m.setVisible(k < max(1, len(result["inits"])))
        self._set_legend(names, colours, labels, result["colour_by"])
        notes = [self._more_note] if self._more_note else []
        notes += [f"{u['label']} is left out: {u['error']}" for u in result.get("unavailable") or []]
        notes += list(result.get("notes") or [])
        self.map_note.setText(" ".join(notes))
        self.map_note.setVisible(bool(notes))
        extras = result.get("extras") or {}
        self.show_activations(extras.get("activations"), result["query"]["path"])
        self.show_shortcuts(extras.get("shortcuts"))
        files = [Path(f).name for f in result.get("files") or []]
        secs = in_words((result.get("timings") or {}).get("total_s"))
        self.summary.setText(f"{result['stage']} · {method} of {n:,} images in {secs or 'no time'}; wrote "
                             f"{len(files)} files to {self.out_dir}.")
        self.summary.setToolTip("Files written:\n" + "\n".join(files))
        self.open_button.setEnabled(self.out_dir is not None)
        colour = "class" if result["colour_by"] == "class" else f"k-means cluster of {result['inits'][0]['label']}"
        self.status.setText(f"Done: {n:,} images from {result['source']}, coloured by {colour}. Click a point.")
        query = result["query"].get("index")
        self.select_point(0 if query is None else int(query))

    def _set_legend(self, names: list[str], colours: list[QColor], labels: np.ndarray, colour_by: str) -> None:
        counts = np.bincount(labels, minlength=len(names))
        shown = [(i, name) for i, name in enumerate(names) if counts[i]][:30]
        parts = [f"<span style='color:{colours[i].name()}; font-size:14pt'>●</span>&nbsp;{html.escape(name)}"
                 f"&nbsp;({counts[i]})" for i, name in shown]
        more = len([c for c in counts if c]) - len(shown)
        head = "Classes:" if colour_by == "class" else "k-means clusters (groups of the first map's features):"
        self.legend.setText(f"{head} " + " &nbsp; ".join(parts) + (f" … and {more} more" if more > 0 else ""))

    def thumb(self, index: int) -> QImage:
        """Row ``index``'s image as the engine decoded it (cached)."""
        if index not in self._thumbs:
            self._thumbs[index] = to_qimage(self.result["images"][index])
        return self._thumbs[index]

    def caption(self, index: int) -> str:
        """Row ``index``'s class ("" for an unlabelled set)."""
        r = self.result
        return str(r["label_names"][int(r["labels"][index])]) if r and r["colour_by"] == "class" else ""

    def show_hover(self, index: int, global_pos: QPoint, _map: int = 0) -> None:
        """Show row ``index``'s image near ``global_pos`` (-1: hide the card)."""
        if index < 0 or self.result is None:
            self.hover_card.hide_card()
            return
        path = Path(self.result["paths"][index])
        words = [f"#{index} {path.name}"]
        if self.result["colour_by"] == "class":
            words.append(f"class: {self.caption(index)}")
        else:
            words.append(self.result["label_names"][int(self.result["labels"][index])])
        self.hover_card.show_image(index, self.thumb(index), "\n".join(words), global_pos)

    def select_point(self, index: int) -> None:
        """Select row ``index`` in every map (the same image) and show its nearest images under each."""
        from sslstudio.explore.neighbours import nearest

        if self.result is None or not 0 <= int(index) < len(self.result["paths"]):
            return
        index = int(index)
        self.selected_index = index
        rows = []
        for m, entry in zip(self.maps, self.result["inits"][:MAX_MAPS]):
            features = entry["features"]
            found = nearest(features, features[index], GALLERY_K, exclude=index)
            m.set_selection(index, found.indices)
            rows.append((entry["label"], index, found.indices, found.similarities))
        self.gallery.set_rows(rows, self.thumb, self.caption)
        what = f" ({self.caption(index)})" if self.caption(index) else ""
        self.gallery.setToolTip(f"Selected: #{index} {self.result['paths'][index]}{what}")

    def show_activations(self, extras: dict | None, image: str) -> None:
        for w in self.activation_images:
            self._activation_layout.removeWidget(w)
            w.deleteLater()
        self.activation_images = []
        if not extras:
            self.activation_note.setText("" if self.result is None else
                                         "Activation maps were not asked for (“Activation maps and shortcut "
                                         "checks”).")
            return
        files = [Path(f) for f in extras.get("files") or []]
        notes = [f.read_text(encoding="utf-8").strip() for f in files if f.suffix == ".txt" and f.is_file()]
        if extras.get("error") or extras.get("skipped"):
            notes.append(f"No activation maps: {extras.get('error') or extras.get('skipped')}")
        head = (f"Where each stage responds on {Path(image).name} (red: strong; channel mean per stage), and where a "
                "run's pretext head looks (Grad-CAM)." if image else "")
        self.activation_note.setText(" ".join([head] + notes))
        for f in files:
            if f.suffix == ".png" and f.is_file():
                w = FitImage(f)
                self._activation_layout.addWidget(w)
                self.activation_images.append(w)

    def show_shortcuts(self, extras: dict | None) -> None:
        table = self.shortcut_table
        table.setRowCount(0)
        rows = (extras or {}).get("rows") or []
        if extras is None:
            text = "" if self.result is None else "Shortcut checks were not asked for."
        elif rows and rows[0].get("kind") == "none":
            text = (f"No defences declared for the {rows[0].get('task')} task: nothing to switch off, so nothing "
                    "to check.")
            rows = []
        elif extras.get("skipped"):
            text = ("Shortcut checks test a pretraining run's task: check a run of the workspace to see them."
                    if extras["skipped"] == "no run" else f"Shortcut checks skipped: {extras['skipped']}")
        elif extras.get("error"):
            text = f"Shortcut checks could not be made: {extras['error']}"
        else:
            text = (f"The run's pretext accuracy with each defence on (or a cue removed) and without, on "
                    f"{rows[0].get('images', 'the images')}. A large gain without it means the task has a shortcut "
                    "that the defence closes.")
        self.shortcut_note.setText(text)
        table.setVisible(bool(rows))
        self.shortcut_meanings.setText("<br>".join(f"<b>{html.escape(str(r.get('check', '')))}</b>: "
                                                   f"{html.escape(str(r.get('meaning', '')))}" for r in rows))
        self.shortcut_meanings.setVisible(bool(rows))
        for r, row in enumerate(rows):
            table.insertRow(r)
            for c, cell in enumerate(shortcut_cells(row)):
                item = QTableWidgetItem(cell)
                item.setToolTip(str(row.get("meaning", "")))
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(r, c, item)
        if rows:  # as tall as its rows: the meanings follow right under it
            table.setFixedHeight(table.horizontalHeader().height() + sum(table.rowHeight(r) for r in range(len(rows)))
                                 + 2 * table.frameWidth() + 2)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self.hover_card.hide_card()

    def shutdown(self) -> None:
        self.jobs.stop_all()
