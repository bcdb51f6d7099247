"""Live training curves: each curve created once, ``setData`` on growing numpy buffers.

Points are appended from the GUI thread as events arrive (cheap: a numpy write); the curves are
redrawn by :meth:`LiveCurve.flush`, which the window calls from one ~10 Hz timer, so a burst of
steps costs one redraw.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

__all__ = ["GrowingBuffer", "LiveCurve", "make_plot", "smooth"]

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


class GrowingBuffer:
    """x / y arrays that double in capacity as points are appended."""

    def __init__(self, capacity: int = 1024):
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self.n = 0

    def append(self, x: float, y: float) -> None:
        if self.n == len(self._x):
            self._x = np.concatenate([self._x, np.empty_like(self._x)])
            self._y = np.concatenate([self._y, np.empty_like(self._y)])
        self._x[self.n] = x
        self._y[self.n] = np.nan if y is None else y
        self.n += 1

    def clear(self) -> None:
        self.n = 0

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
    """One plotted line fed by a :class:`GrowingBuffer`; ``smoothed`` draws an EMA of the data."""

    def __init__(self, plot: pg.PlotItem, name: str, color: str, *, width: float = 2.0,
                 alpha: int = 255, smoothed: bool = False, symbol: str | None = None):
        self.buffer = GrowingBuffer()
        self.smoothed = smoothed
        pen = pg.mkPen(pg.mkColor(color) if alpha == 255 else _with_alpha(color, alpha), width=width)
        kwargs = {"symbol": symbol, "symbolSize": 6, "symbolBrush": color, "symbolPen": None} if symbol else {}
        self.item = plot.plot([], [], pen=pen, name=name, **kwargs)
        self.item.setClipToView(True)
        self.item.setDownsampling(auto=True, method="peak")
        self._dirty = False
        self._ema_state = (0.0, 0.0, 0)  # incremental EMA: acc, weight, points done
        self._ema = GrowingBuffer() if smoothed else None

    def append(self, x: float, y: float | None) -> None:
        self.buffer.append(x, y)
        self._dirty = True

    def clear(self) -> None:
        self.buffer.clear()
        if self._ema is not None:
            self._ema.clear()
            self._ema_state = (0.0, 0.0, 0)
        self.item.setData([], [])
        self._dirty = False

    def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        if self._ema is not None:
            acc, weight, done = self._ema_state
            alpha = 0.1
            for i in range(done, self.buffer.n):
                v = self.buffer.y[i]
                if np.isfinite(v):
                    acc = (1 - alpha) * acc + alpha * v
                    weight = (1 - alpha) * weight + alpha
                self._ema.append(self.buffer.x[i], acc / weight if weight else np.nan)
            self._ema_state = (acc, weight, self.buffer.n)
            self.item.setData(self._ema.x, self._ema.y, connect="finite")
        else:
            self.item.setData(self.buffer.x, self.buffer.y, connect="finite")

    def points(self) -> int:
        return self.buffer.n


def _with_alpha(color: str, alpha: int):
    c = pg.mkColor(color)
    c.setAlpha(alpha)
    return c


def make_plot(title: str, x_label: str, y_label: str) -> pg.PlotWidget:
    widget = pg.PlotWidget()
    widget.setBackground(None)
    item = widget.getPlotItem()
    item.setTitle(title)
    item.setLabel("bottom", x_label)
    item.setLabel("left", y_label)
    item.showGrid(x=True, y=True, alpha=0.25)
    item.getAxis("left").enableAutoSIPrefix(False)
    item.getAxis("bottom").enableAutoSIPrefix(False)
    item.addLegend(offset=(-10, 10))
    widget.setMinimumHeight(160)
    return widget
