"""Embedding maps: a backbone stage's features of many images, projected to two dimensions.

The rows projected are :func:`map_features`: the stage's pooled features averaged per channel
(:func:`~sslstudio.evaluation.features.global_pool`, what the kNN probe reads) and **L2-normalised**,
so that Euclidean distances between rows follow their cosine similarity, the geometry of the kNN
probe and of the nearest-neighbour gallery (:mod:`sslstudio.explore.neighbours`).

Methods (:func:`available_methods`):

``pca``
    the first two principal components (scikit-learn ``PCA``): instant, linear, global structure;
``tsne``
    scikit-learn's Barnes-Hut t-SNE after a PCA reduction to 50 dimensions (the usual pre-step),
    PCA initialisation, 500 iterations, 2 threads (10,000 x 512 in well under a minute on 2 cores,
    ``benchmarks/tsne_bench.py``); the perplexity (30) is lowered to fit a small set and the
    note says so;
``umap``
    ``umap-learn`` (optional: ``pip install "sslstudio[umap]"``), 15 neighbours.

Points are coloured by class for a labelled set, else by :func:`cluster_labels` (k-means on the
same rows). :func:`write_embedding_png` and :func:`write_embedding_csv` write the map's files.
No Qt here: the window draws the coordinates itself.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sslstudio.errors import ConfigError, DataError
from sslstudio.evaluation.features import global_pool
from sslstudio.runs import atomic_write_bytes

METHODS = ("pca", "tsne", "umap")
UMAP_INSTALL = 'pip install "sslstudio[umap]"'
#: t-SNE settings (see the module doc): perplexity, iterations, PCA pre-reduction, threads.
TSNE_PERPLEXITY = 30.0
TSNE_MAX_ITER = 500
TSNE_PCA_DIMS = 50
TSNE_THREADS = 2
UMAP_NEIGHBOURS = 15
#: The fewest images a map is drawn from.
MIN_IMAGES = 3


@dataclass
class Projection:
    """A 2-D map: ``coords`` float32 ``[N, 2]`` (row i is image i), how it was made, and notes for the user
    (a lowered perplexity, say)."""

    coords: np.ndarray
    method: str
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def umap_available() -> bool:
    """Whether ``umap-learn`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec("umap") is not None
    except (ImportError, ValueError):
        return False


def available_methods() -> list[str]:
    """The projection methods usable here: ``pca`` and ``tsne`` always, ``umap`` when umap-learn is installed."""
    return [m for m in METHODS if m != "umap" or umap_available()]


def check_method(method: str) -> str:
    """``method`` in lower case if it is known and usable here; else :class:`ConfigError` with one sentence."""
    name = str(method or "").strip().lower()
    if name not in METHODS:
        raise ConfigError(f"unknown projection method {method!r}; use pca, tsne or umap.")
    if name == "umap" and not umap_available():
        raise ConfigError(f"UMAP maps need the umap-learn package, which is not installed here; install it with "
                          f"{UMAP_INSTALL}, or choose pca or tsne.")
    return name


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32; an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def map_features(features: np.ndarray, channels: int) -> np.ndarray:
    """What maps and galleries read: a stage's cached features ``[N, C*g*g]`` averaged per channel
    (``[N, C]``) and L2-normalised (cosine geometry, as the kNN probe)."""
    return l2_normalise(global_pool(np.asarray(features, dtype=np.float32), channels))


def tsne_perplexity(n: int, wanted: float = TSNE_PERPLEXITY) -> float:
    """The perplexity t-SNE can use on ``n`` points: ``wanted``, lowered to ``(n - 1) / 3`` for a small set
    (scikit-learn needs it below ``n``; each point then still has about 3 x perplexity neighbours)."""
    return float(max(1.0, min(wanted, (n - 1) / 3.0)))


def project(features: np.ndarray, method: str = "pca", seed: int = 0, *, perplexity: float = TSNE_PERPLEXITY,
            max_iter: int = TSNE_MAX_ITER, n_jobs: int = TSNE_THREADS) -> Projection:
    """Project rows ``[N, D]`` (already prepared, e.g. :func:`map_features`) to 2-D with ``method``.

    The same rows, method and seed give the same map. Raises :class:`ConfigError` for an unknown or
    unavailable method and :class:`DataError` for fewer than :data:`MIN_IMAGES` rows.
    """
    name = check_method(method)
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) < MIN_IMAGES:
        raise DataError(f"a map needs at least {MIN_IMAGES} images; {len(x)} could be used.")
    t0 = time.perf_counter()
    if name == "pca":
        out = _pca(x, seed)
    elif name == "tsne":
        out = _tsne(x, seed, perplexity, max_iter, n_jobs)
    else:
        out = _umap(x, seed)
    out.coords = np.ascontiguousarray(out.coords, dtype=np.float32)
    out.seconds = time.perf_counter() - t0
    return out


def _pca(x: np.ndarray, seed: int) -> Projection:
    from sklearn.decomposition import PCA

    k = min(2, x.shape[1], len(x))
    pca = PCA(n_components=k, random_state=seed)
    coords = pca.fit_transform(x.astype(np.float64))
    if coords.shape[1] < 2:  # one feature: the second axis is flat
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    explained = [float(v) for v in pca.explained_variance_ratio_]
    return Projection(coords, "pca", {"explained_variance": explained})


def _tsne(x: np.ndarray, seed: int, perplexity: float, max_iter: int, n_jobs: int) -> Projection:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    notes = []
    n = len(x)
    used = tsne_perplexity(n, perplexity)
    if used < perplexity:
        notes.append(f"t-SNE perplexity lowered from {perplexity:g} to {used:.3g} to fit {n} images "
                     "(it must stay well below the number of points).")
    dims = min(TSNE_PCA_DIMS, x.shape[1], n)
    if x.shape[1] > dims:
        x = PCA(n_components=dims, random_state=seed).fit_transform(x).astype(np.float32)
    tsne = TSNE(n_components=2, perplexity=used, init="pca", learning_rate="auto", max_iter=max(250, max_iter),
                method="barnes_hut", random_state=seed, n_jobs=n_jobs)
    coords = tsne.fit_transform(x)
    params = {"perplexity": used, "max_iter": max(250, max_iter), "pca_dims": int(x.shape[1]),
              "kl_divergence": float(tsne.kl_divergence_)}
    return Projection(coords, "tsne", params, notes)


def _umap(x: np.ndarray, seed: int) -> Projection:
    try:
        import umap
    except ImportError:
        raise ConfigError(f"UMAP maps need the umap-learn package, which could not be imported here; install it "
                          f"with {UMAP_INSTALL}, or choose pca or tsne.") from None
    k = int(min(UMAP_NEIGHBOURS, len(x) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=k, random_state=seed)
    return Projection(reducer.fit_transform(x), "umap", {"n_neighbors": k})


def cluster_labels(features: np.ndarray, k: int = 10, seed: int = 0) -> np.ndarray:
    """k-means cluster (0 .. k-1, int64) of each row, seeded; ``k`` is lowered to the number of rows.
    Clusters are numbered by size, largest first, so the same data give the same numbers."""
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float32)
    k = int(max(1, min(k, len(x))))
    raw = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
    order = np.argsort(-np.bincount(raw, minlength=k), kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[raw]


def cluster_names(k: int) -> list[str]:
    """``["cluster 0", "cluster 1", ...]``."""
    return [f"cluster {i}" for i in range(k)]


def colours(n: int) -> list:
    """``n`` distinct RGBA colours (tab10, tab20, then evenly spaced hues)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def write_embedding_png(path: Path, coords: np.ndarray, labels: np.ndarray, names: Sequence[str], title: str,
                        notes: Sequence[str] = ()) -> Path:
    """A scatter of ``coords`` coloured by ``labels`` (indices into ``names``), with a legend of the names."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 6.0), dpi=110)
    ax = fig.add_axes((0.06, 0.08, 0.66, 0.82))
    n = len(coords)
    size = float(np.clip(4000.0 / max(n, 1), 3.0, 30.0))
    palette = colours(len(names))
    for i, name in enumerate(names):
        mask = labels == i
        if mask.any():
            ax.scatter(coords[mask, 0], coords[mask, 1], s=size, color=palette[i], alpha=0.75, linewidths=0,
                       label=f"{name} ({int(mask.sum())})")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(names) <= 40:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                  markerscale=max(1.0, 6 / size), ncol=1 if len(names) <= 20 else 2)
    if notes:
        fig.text(0.01, 0.01, " ".join(notes), fontsize=7, color="#555555", wrap=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def write_embedding_csv(path: Path, paths: Sequence[str], coords: np.ndarray, label_texts: Sequence[str]) -> Path:
    """``path,x,y,label`` per image, in the order of ``paths`` (row i of the map)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "x", "y", "label"])
    for p, (x, y), label in zip(paths, coords, label_texts):
        writer.writerow([str(p), repr(float(x)), repr(float(y)), label])
    atomic_write_bytes(Path(path), buf.getvalue().encode("utf-8"))
    return Path(path)


def read_embedding_csv(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """``(paths, coords [N, 2], labels)`` from a file :func:`write_embedding_csv` wrote."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    coords = np.array([[float(r["x"]), float(r["y"])] for r in rows], dtype=np.float64).reshape(-1, 2)
    return [r["path"] for r in rows], coords, [r["label"] for r in rows]


__all__ = ["METHODS", "MIN_IMAGES", "Projection", "available_methods", "check_method", "cluster_labels",
           "cluster_names", "colours", "l2_normalise", "map_features", "project", "read_embedding_csv",
           "tsne_perplexity", "umap_available", "write_embedding_png", "write_embedding_csv"]
