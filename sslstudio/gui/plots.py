"""Live training curves: each curve created once, ``setData`` on bounded numpy buffers.

Points are appended from the GUI thread as events arrive (cheap: a numpy write); the curves are
redrawn by :meth:`LiveCurve.flush`, which the window calls from one ~10 Hz timer, so a burst of
steps costs one redraw. A buffer keeps every point up to ``max_points`` (20,000), then halves
its resolution (every second point, always the newest), so a run of millions of steps keeps a
bounded memory and a bounded redraw cost.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

__all__ = ["DataLegend", "GrowingBuffer", "IntegerAxis", "LiveCurve", "MAX_POINTS", "add_chance_line", "apply_palette",
           "find_chance_line", "make_plot", "smooth"]

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

#: Points a live curve keeps at full resolution before it decimates by 2.
MAX_POINTS = 20_000


class GrowingBuffer:
    """x / y arrays that double in capacity as points are appended, bounded by ``max_points``.

    Once ``max_points`` points are stored, every second point is dropped and from then on only
    every ``stride``-th appended point is kept (``stride`` doubles at each decimation); the newest
    point is always present (it overwrites a provisional last point that is off the stride).
    """

    def __init__(self, capacity: int = 1024, max_points: int | None = MAX_POINTS):
        self.max_points = max_points
        if max_points:
            capacity = min(capacity, max_points + 1)
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self.n = 0
        self.stride = 1
        self._count = 0  # points appended since the last clear
        self._provisional = False  # the last stored point is off the stride (replaced by the next)

    def append(self, x: float, y: float | None) -> None:
        on_stride = self._count % self.stride == 0
        self._count += 1
        if self._provisional:
            self.n -= 1
        if self.n == len(self._x):
            grow = len(self._x) if not self.max_points else min(len(self._x), self.max_points + 1 - len(self._x))
            grow = max(grow, 1)
            self._x = np.concatenate([self._x, np.empty(grow)])
            self._y = np.concatenate([self._y, np.empty(grow)])
        self._x[self.n] = x
        self._y[self.n] = np.nan if y is None else y
        self.n += 1
        self._provisional = not on_stride
        if self.max_points and self.n >= self.max_points:
            self._decimate()

    def _decimate(self) -> None:
        kept = self.n - 1 if self._provisional else self.n  # points on the stride
        idx = list(range(0, kept, 2))
        provisional = False
        if self._provisional:
            idx.append(self.n - 1)
            provisional = True
        elif (kept - 1) % 2 == 1:  # the newest point falls off the new stride: keep it provisionally
            idx.append(kept - 1)
            provisional = True
        take = np.asarray(idx, dtype=np.int64)
        m = len(take)
        self._x[:m] = self._x[take]
        self._y[:m] = self._y[take]
        self.n = m
        self.stride *= 2
        self._provisional = provisional

    def clear(self) -> None:
        self.n = 0
        self.stride = 1
        self._count = 0
        self._provisional = False

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.n]


def smooth(y: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """Exponential moving average with bias correction (what TensorBoard's slider does)."""
    out = np.empty_like(y)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(y):
        if np.isfinite(v):
            acc = (1 - alpha) * acc + alpha * v
            weight = (1 - alpha) * weight + alpha
        out[i] = acc / weight if weight else np.nan
    return out


class LiveCurve:
    """One plotted line fed by a bounded :class:`GrowingBuffer`; ``smoothed`` draws an EMA of the data
    (computed as points arrive, so decimation never loses it)."""

    ALPHA = 0.1

    def __init__(self, plot: pg.PlotItem, name: str, color: str, *, width: float = 2.0,
                 alpha: int = 255, smoothed: bool = False, symbol: str | None = None,
                 max_points: int | None = MAX_POINTS):
        self.buffer = GrowingBuffer(max_points=max_points)
        self.smoothed = smoothed
        pen = pg.mkPen(pg.mkColor(color) if alpha == 255 else _with_alpha(color, alpha), width=width)
        kwargs = {"symbol": symbol, "symbolSize": 6, "symbolBrush": color, "symbolPen": None} if symbol else {}
        self.item = plot.plot([], [], pen=pen, name=name, **kwargs)
        self.item.setClipToView(True)
        self.item.setDownsampling(auto=True, method="peak")
        self._dirty = False
        self._acc = 0.0
        self._weight = 0.0

    def append(self, x: float, y: float | None) -> None:
        if self.smoothed:
            if y is not None and np.isfinite(y):
                self._acc = (1 - self.ALPHA) * self._acc + self.ALPHA * y
                self._weight = (1 - self.ALPHA) * self._weight + self.ALPHA
            y = self._acc / self._weight if self._weight else None
        self.buffer.append(x, y)
        self._dirty = True

    def clear(self) -> None:
        self.buffer.clear()
        self._acc = self._weight = 0.0
        self.item.setData([], [])
        self._dirty = False

    def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.item.setData(self.buffer.x, self.buffer.y, connect="finite")

    def points(self) -> int:
        """Points appended (not the points stored: see ``buffer.n``)."""
        return self.buffer._count


def _with_alpha(color, alpha: int):
    c = pg.mkColor(color)
    c.setAlpha(alpha)
    return c


class IntegerAxis(pg.AxisItem):
    """An axis with ticks on whole numbers only (epochs, stage indices); optional text labels."""

    def __init__(self, *args, labels: dict[int, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = dict(labels or {})

    def set_labels(self, labels: dict[int, str]) -> None:
        self.labels = dict(labels)
        self.picture = None
        self.update()

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 - pyqtgraph API
        levels = [(s, [v for v in ticks if abs(v - round(v)) < 1e-6])
                  for s, ticks in super().tickValues(minVal, maxVal, size) if s >= 1]
        levels = [(s, t) for s, t in levels if t]
        if not levels:
            lo, hi = int(np.ceil(minVal)), int(np.floor(maxVal))
            levels = [(1.0, [float(v) for v in range(lo, hi + 1)])]
        if self.labels:
            levels = [(s, [v for v in t if int(round(v)) in self.labels]) for s, t in levels[:1]]
        return levels

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph API
        if self.labels:
            return [self.labels.get(int(round(v)), "") for v in values]
        return [str(int(round(v))) for v in values]


def _has_data(item) -> bool:
    """Whether a legend entry's item draws something (an item without data arrays, e.g. a bar chart's
    sample, counts as drawn)."""
    if not hasattr(item, "xData"):
        return True
    x = item.xData
    return x is not None and len(x) > 0


class DataLegend(pg.LegendItem):
    """A legend that names only what is drawn: the entry of a curve without data (before a run, after a
    clear) is left out, and comes back, in its place, once the curve has points.

    Entries are kept in the order added; the shown ones are rebuilt when a curve's data changes from
    empty to not empty or back (``sigPlotChanged``), which costs nothing otherwise.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._entries: list[tuple[object, str]] = []
        self._shown: tuple[int, ...] = ()

    def addItem(self, item, name):  # noqa: N802 - pyqtgraph API
        self._entries.append((item, name))
        signal = getattr(item, "sigPlotChanged", None)
        if signal is not None:
            signal.connect(self.sync)
        self._shown = None  # rebuild
        self.sync()

    def removeItem(self, item):  # noqa: N802 - pyqtgraph API
        self._entries = [(i, n) for i, n in self._entries if i is not item and n != item]
        self._shown = None
        self.sync()

    def clear(self) -> None:
        self._entries = []
        self._shown = ()
        super().clear()

    def entries(self) -> list[str]:
        """The names of every entry, shown or not."""
        return [name for _item, name in self._entries]

    def sync(self, *_args) -> None:
        """Show the entries of the curves that have data (called when a curve's data changes)."""
        shown = tuple(i for i, (item, _name) in enumerate(self._entries) if _has_data(item))
        if shown == self._shown:
            return
        self._shown = shown
        super().clear()
        for i in shown:
            super().addItem(*self._entries[i])
        self.setVisible(bool(shown))  # no empty frame either


def palette_colours(widget=None) -> tuple:
    """(text colour, base colour) of the application's (or ``widget``'s) palette."""
    pal = widget.palette() if widget is not None else QApplication.palette()
    return pal.color(QPalette.ColorRole.WindowText), pal.color(QPalette.ColorRole.Base)


def apply_palette(widget: pg.PlotWidget) -> None:
    """Axes, title and legend follow the palette (light or dark); the background stays the window's."""
    fg, base = palette_colours(widget)
    item = widget.getPlotItem()
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(fg))
        axis.setTextPen(pg.mkPen(fg))
    title = item.titleLabel
    if title.text:
        title.setText(title.text, color=fg)
    legend = item.legend
    if legend is not None:
        bg = pg.mkColor(base)
        bg.setAlpha(200)
        legend.setBrush(pg.mkBrush(bg))
        edge = pg.mkColor(fg)
        edge.setAlpha(60)
        legend.setPen(pg.mkPen(edge))
        legend.setLabelTextColor(fg)
        for _sample, label in legend.items:
            label.setText(label.text, color=fg)


def make_plot(title: str, x_label: str, y_label: str, *, integer_x: bool = False,
              legend: str = "top-right") -> pg.PlotWidget:
    """A plot with a grid, no SI prefixes, a legend in a corner on a semi-transparent background.

    Args:
        integer_x: Ticks on whole numbers only (per-epoch and per-step plots).
        legend: ``top-right``, ``bottom-right``, ``top-left``, ``bottom-left`` or ``none``; a
            :class:`DataLegend`, which names only the curves that have data.
    """
    axis = {"bottom": IntegerAxis("bottom")} if integer_x else {}
    widget = pg.PlotWidget(axisItems=axis)
    widget.setBackground(None)
    item = widget.getPlotItem()
    item.setTitle(title)
    item.setLabel("bottom", x_label)
    item.setLabel("left", y_label)
    item.showGrid(x=True, y=True, alpha=0.25)
    item.getAxis("left").enableAutoSIPrefix(False)
    item.getAxis("bottom").enableAutoSIPrefix(False)
    if legend != "none":
        dx = 10 if "left" in legend else -10
        dy = 10 if "top" in legend else -10
        item.legend = DataLegend(offset=(dx, dy), verSpacing=-4, labelTextSize="8pt")
        item.legend.setParentItem(item.vb)
    widget.setMinimumHeight(160)
    apply_palette(widget)
    return widget


# -- comparison plots: bands, line styles, tick labels -------------------------------------------

#: Line styles that tell series apart besides their colour (stages, modes), in order of use.
LINE_STYLES = ("solid", "dash", "dot", "dashdot")


def styled_pen(colour: str, style: str = "solid", width: float = 2.0):
    """A pen of ``colour`` in one of :data:`LINE_STYLES`."""
    from PySide6.QtCore import Qt

    styles = {"solid": Qt.PenStyle.SolidLine, "dash": Qt.PenStyle.DashLine, "dot": Qt.PenStyle.DotLine,
              "dashdot": Qt.PenStyle.DashDotLine}
    pen = pg.mkPen(colour, width=width)
    pen.setStyle(styles.get(style, Qt.PenStyle.SolidLine))
    return pen


def add_band(item: pg.PlotItem, x, low, high, colour: str, alpha: int = 55) -> pg.FillBetweenItem:
    """Shade the interval ``low``..``high`` over ``x`` in ``colour`` (no legend entry).

    The two edges are invisible curves added to ``item`` (so they follow its log mode); returns the
    fill, whose ``edges`` attribute holds them (remove all three to clear the band).
    """
    clear = pg.mkPen(_with_alpha(colour, 0))  # drawn (so the fill has a path), but invisible
    lo = pg.PlotDataItem(np.asarray(x, float), np.asarray(low, float), pen=clear)
    hi = pg.PlotDataItem(np.asarray(x, float), np.asarray(high, float), pen=clear)
    item.addItem(lo)
    item.addItem(hi)
    fill = pg.FillBetweenItem(lo, hi, brush=pg.mkBrush(_with_alpha(colour, alpha)))
    fill.setZValue(-10)
    item.addItem(fill)
    fill.edges = (lo, hi)
    return fill


# -- the chance level ----------------------------------------------------------------------------

def _plot_item(plot) -> pg.PlotItem:
    return plot.getPlotItem() if hasattr(plot, "getPlotItem") else plot


def find_chance_line(plot) -> pg.InfiniteLine | None:
    """The chance line :func:`add_chance_line` drew on ``plot`` (a PlotWidget or PlotItem), or None."""
    return getattr(_plot_item(plot), "_chance_line", None)


def add_chance_line(plot, value: float | None, label: str | None = None, *,
                    vertical: bool = False) -> pg.InfiniteLine | None:
    """Draw the chance level on ``plot`` as a horizontal dashed grey line, labelled at its left end.

    One chance line per plot: a second call moves and relabels it; ``value=None`` (or a value that
    is not finite) removes it. The line is not a legend entry; it takes part in the plot's auto
    range (so the y axis always shows how far the curves are above chance), but a plot whose y
    range is set by hand must include ``value`` itself.

    Args:
        plot: A ``pg.PlotWidget`` or ``pg.PlotItem``.
        value: The chance level in the plot's own y units (``10.0`` on a percent axis, ``0.1`` on
            a fraction axis), or None to remove the line.
        label: The text beside the line; default ``"chance 10.0%"`` (``value`` read as a percent).
        vertical: A vertical line at ``x = value`` instead, labelled at its top (accuracy on the x axis,
            as in a bar chart of per-class accuracy).

    Returns:
        The line (its height: ``line.value()``; its text: ``line.label.toPlainText()``), or None
        when removed.

    Example::

        add_chance_line(plot, 100 / n_classes)                   # percent axis
        add_chance_line(plot, 1 / n_classes, f"chance {100 / n_classes:.1f}%")  # fraction axis
    """
    item = _plot_item(plot)
    line = getattr(item, "_chance_line", None)
    if value is None or not np.isfinite(value):
        if line is not None:
            item.removeItem(line)
            item._chance_line = None
        return None
    text = label if label is not None else f"chance {value:.1f}%"
    text = text.replace("{", "{{").replace("}", "}}")  # the label is a format string of pyqtgraph's
    if line is None:
        from PySide6.QtCore import Qt

        fg, base = palette_colours()
        pen = pg.mkPen(_with_alpha(fg, 150), width=1.5)
        pen.setStyle(Qt.PenStyle.DashLine)
        # the text sits above the line's left end (horizontal: a legend in a right corner never hides
        # it) or right of its top (vertical), on a veil of the background so that it stays legible
        # over a curve, a band or a bar
        anchor = (0, 0) if vertical else (0, 1)
        line = pg.InfiniteLine(pos=float(value), angle=90 if vertical else 0, movable=False, pen=pen, label=text,
                               labelOpts={"position": 0.98 if vertical else 0.02, "anchors": [anchor, anchor],
                                          "color": _with_alpha(fg, 220), "fill": _with_alpha(base, 170)})
        line.setZValue(5 if vertical else -5)  # under the curves; over bars (a vertical line crosses them)
        item.addItem(line)
        item._chance_line = line
    else:
        line.setAngle(90 if vertical else 0)
        line.setValue(float(value))
        line.label.setFormat(text)
    return line


def remove_band(item: pg.PlotItem, fill: pg.FillBetweenItem) -> None:
    for edge in getattr(fill, "edges", ()):
        item.removeItem(edge)
    item.removeItem(fill)


def set_tick_labels(axis: pg.AxisItem, ticks: list[tuple[float, str]]) -> None:
    """Fixed ticks ``[(position, text), ...]`` on ``axis`` (positions in the axis' own units: log10 in
    log mode); an empty list restores automatic ticks."""
    axis.setTicks([list(ticks)] if ticks else None)



# -- the kNN monitor plot: stages told apart by colour, line style and marker ---------------------

#: Pen styles of successive stages; plain dashes are kept for reference lines.
STAGE_STYLES = ("solid", "dot", "dashdot", "dashdotdot", "longdash")
#: Markers of successive stages.
STAGE_SYMBOLS = ("o", "s", "t", "d", "x")


def stage_pen(index: int, width: float = 2.0, dashed: bool = False, alpha: int = 255):
    """The pen of the ``index``-th stage: its palette colour and line style (``dashed``: the same colour,
    plain dashes, for the stage's reference line)."""
    from PySide6.QtCore import Qt

    colour = PALETTE[index % len(PALETTE)]
    pen = pg.mkPen(_with_alpha(colour, alpha) if alpha != 255 else pg.mkColor(colour), width=width)
    if dashed:
        pen.setStyle(Qt.PenStyle.CustomDashLine)
        pen.setDashPattern([5.0, 4.0])
        return pen
    style = STAGE_STYLES[index % len(STAGE_STYLES)]
    qt_styles = {"solid": Qt.PenStyle.SolidLine, "dot": Qt.PenStyle.DotLine, "dashdot": Qt.PenStyle.DashDotLine,
                 "dashdotdot": Qt.PenStyle.DashDotDotLine}
    if style in qt_styles:
        pen.setStyle(qt_styles[style])
    else:  # long dashes with short gaps: unlike the reference lines' even dashes
        pen.setStyle(Qt.PenStyle.CustomDashLine)
        pen.setDashPattern([10.0, 2.0])
    return pen


def stage_curve(item: pg.PlotItem, name: str, index: int) -> LiveCurve:
    """A :class:`LiveCurve` for the ``index``-th stage: colour, line style and marker of its own."""
    colour = PALETTE[index % len(PALETTE)]
    curve = LiveCurve(item, name, colour, symbol=STAGE_SYMBOLS[index % len(STAGE_SYMBOLS)])
    curve.item.setPen(stage_pen(index))
    curve.item.setSymbolSize(7)
    return curve


def reference_line(item: pg.PlotItem, name: str, index: int) -> pg.PlotDataItem:
    """A dashed horizontal line in the ``index``-th stage's colour, named in the legend; place it
    with :func:`set_reference_line`."""
    line = item.plot([], [], pen=stage_pen(index, width=1.5, dashed=True, alpha=200), name=name)
    line.setZValue(-5)
    return line


def set_reference_line(line: pg.PlotDataItem, y: float | None, x0: float, x1: float) -> None:
    """Draw ``line`` at height ``y`` from ``x0`` to ``x1`` (``None``: hide it)."""
    if y is None or not np.isfinite(y):
        line.setData([], [])
    else:
        line.setData([float(x0), float(x1)], [float(y), float(y)])


class _RowLegend(DataLegend):
    """A legend laid out by its plot's grid (a row of its own), sized by its entries."""

    def updateSize(self):  # noqa: N802 - pyqtgraph API
        self.layout.invalidate()
        self.updateGeometry()  # the plot's layout asks for the new size hint and places it


def legend_below(widget: pg.PlotWidget, columns: int = 2) -> pg.LegendItem:
    """Put the plot's legend in a row of its own under the x axis, in ``columns`` columns, so that it
    never covers a curve (for plots with many named curves). Curves plotted with a ``name`` after
    this call are added to it."""
    item = widget.getPlotItem()
    if item.legend is not None:
        old, item.legend = item.legend, None
        if old.scene() is not None:
            old.scene().removeItem(old)
    legend = _RowLegend(verSpacing=-4, labelTextSize="8pt", colCount=columns, frame=False)
    item.layout.addItem(legend, 4, 1)
    item.legend = legend
    apply_palette(widget)
    return legend

