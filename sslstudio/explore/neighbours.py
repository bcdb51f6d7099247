"""The nearest-neighbour gallery: the images a backbone stage finds most alike to a query image.

Similarity is the cosine of the stage's globally pooled features (the rows of
:func:`sslstudio.explore.embedding.map_features`, L2-normalised, so it is their dot product), as in the
kNN probe. The query itself is never among its neighbours: a query from the set is excluded by its row,
and a query from outside the set (``--query PATH``) has its features computed by the same backbone.
Ties are broken by row order, so the same features always give the same gallery.

:func:`write_gallery_png` draws one row per initialisation: the query at left, then its neighbours with
their class (when labelled) and similarity under each thumbnail.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sslstudio.errors import DataError
from sslstudio.runs import atomic_write_bytes

#: Neighbours shown per initialisation.
DEFAULT_K = 8
#: Gallery layout: pixels per thumbnail cell (width, height incl. the caption), the header, the dpi.
CELL_W, CELL_H, HEADER_H, DPI = 130, 170, 40, 100


@dataclass
class Neighbours:
    """The ``k`` nearest rows to a query: ``indices`` (int64, nearest first) and their cosine ``similarities``."""

    indices: np.ndarray
    similarities: np.ndarray

    def as_json(self) -> dict:
        return {"indices": [int(i) for i in self.indices],
                "similarities": [round(float(s), 6) for s in self.similarities]}


def nearest(features: np.ndarray, query: np.ndarray, k: int = DEFAULT_K, exclude: int | None = None) -> Neighbours:
    """The ``k`` rows of ``features`` ``[N, D]`` (L2-normalised) most similar to ``query`` ``[D]`` (L2-normalised),
    row ``exclude`` (the query's own row, when it is in the set) left out; fewer when the set is smaller."""
    x = np.asarray(features, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    if x.ndim != 2 or x.shape[1] != q.shape[0]:
        raise ValueError(f"features {x.shape} and query {q.shape} do not match")
    sims = x @ q
    rows = np.arange(len(x))
    if exclude is not None:
        keep = rows != int(exclude)
        rows, sims = rows[keep], sims[keep]
    order = np.lexsort((rows, -sims))[: max(0, int(k))]  # most similar first, ties by row
    return Neighbours(rows[order].astype(np.int64), sims[order].astype(np.float32))


def gallery_size(n_rows: int, k: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of a gallery of ``n_rows`` initialisations and ``k`` neighbours."""
    return (1 + k) * CELL_W, HEADER_H + n_rows * CELL_H


@dataclass
class GalleryRow:
    """One initialisation's row: its name and its neighbours."""

    label: str
    neighbours: Neighbours


def write_gallery_png(path: Path, query_image: np.ndarray, query_caption: str, rows: Sequence[GalleryRow],
                      images: np.ndarray, captions: Sequence[str] | None, k: int, title: str = "") -> Path:
    """Draw the gallery (:func:`gallery_size` pixels): per row the query, then its neighbours' thumbnails
    from ``images`` (uint8 ``[N, S, S, 3]``) with ``captions[i]`` (a class, or none) and the similarity."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if not rows:
        raise DataError("the gallery needs at least one initialisation.")
    width, height = gallery_size(len(rows), k)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    if title:
        fig.text(0.5, 1 - 0.5 * HEADER_H / height, title, ha="center", va="center", fontsize=9)
    for r, row in enumerate(rows):
        _cell(fig, r, 0, len(rows), k, query_image, f"{query_caption}", row.label)
        for j, (i, s) in enumerate(zip(row.neighbours.indices, row.neighbours.similarities)):
            text = f"{captions[i]}\n" if captions else ""
            _cell(fig, r, j + 1, len(rows), k, images[i], f"{text}#{int(i)}  cos {float(s):.3f}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _cell(fig, r: int, c: int, n_rows: int, k: int, image: np.ndarray, caption: str, row_label: str = "") -> None:
    width, height = gallery_size(n_rows, k)
    pad, pad_top = 8, 18  # room for the row's name above the query
    side = CELL_W - 2 * pad
    left = c * CELL_W + pad
    top = HEADER_H + r * CELL_H + pad_top
    ax = fig.add_axes((left / width, 1 - (top + side) / height, side / width, side / height))
    ax.imshow(np.asarray(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if c == 0:
        for spine in ax.spines.values():
            spine.set_color("#d62728")
            spine.set_linewidth(2)
        if row_label:
            ax.set_title(row_label[:22], fontsize=8, color="#d62728", pad=2)
    ax.text(0.5, -0.04, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7)


__all__ = ["CELL_H", "CELL_W", "DEFAULT_K", "DPI", "HEADER_H", "GalleryRow", "Neighbours", "gallery_size",
           "nearest", "write_gallery_png"]
