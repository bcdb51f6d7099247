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

Given a ``control`` (:class:`~sslstudio.engine.events.RunControl`), :func:`project` runs a t-SNE or UMAP in
a process of its own (:func:`projection_process_main`, started with ``spawn``: the window has threads), so
that Cancel ends it at once instead of after the minute scikit-learn may take.

Points are coloured by class for a labelled set, else by :func:`cluster_labels` (k-means on the
same rows). :func:`write_embedding_png` and :func:`write_embedding_csv` write the map's files.
No Qt here: the window draws the coordinates itself.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sslstudio.engine.events import Cancelled
from sslstudio.errors import ConfigError, DataError, JobError, SSLStudioError
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
#: Seconds between two looks at the Cancel button while a projection runs in its own process, and the
#: seconds a terminated projection process gets before it is killed.
POLL_S = 0.1
KILL_AFTER_S = 1.0
METHOD_LABELS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


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
            max_iter: int = TSNE_MAX_ITER, n_jobs: int = TSNE_THREADS, control=None) -> Projection:
    """Project rows ``[N, D]`` (already prepared, e.g. :func:`map_features`) to 2-D with ``method``.

    The same rows, method and seed give the same map. Raises :class:`ConfigError` for an unknown or
    unavailable method and :class:`DataError` for fewer than :data:`MIN_IMAGES` rows.

    With ``control`` (a :class:`~sslstudio.engine.events.RunControl`), a t-SNE or UMAP runs in its own
    process: when ``control`` is cancelled the process is ended at once and the call raises what
    ``control.checkpoint()`` raises (:class:`~sslstudio.engine.events.Cancelled`); a failure there is the
    :class:`~sslstudio.errors.SSLStudioError` it raised, or a :class:`~sslstudio.errors.JobError` with one
    sentence. Without ``control``, and for PCA, the map is made in this process.
    """
    name = check_method(method)
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) < MIN_IMAGES:
        raise DataError(f"a map needs at least {MIN_IMAGES} images; {len(x)} could be used.")
    settings = {"perplexity": float(perplexity), "max_iter": int(max_iter), "n_jobs": int(n_jobs)}
    t0 = time.perf_counter()
    if control is not None and name != "pca":
        out = _project_in_child(x, name, seed, settings, control)
    else:
        out = _compute(x, name, seed, settings)
    out.coords = np.ascontiguousarray(out.coords, dtype=np.float32)
    out.seconds = time.perf_counter() - t0
    return out


def _compute(x: np.ndarray, name: str, seed: int, settings: dict) -> Projection:
    if name == "pca":
        return _pca(x, seed)
    if name == "tsne":
        return _tsne(x, seed, settings["perplexity"], settings["max_iter"], settings["n_jobs"])
    return _umap(x, seed)


# -- a projection in its own process (cancellable) ------------------------------------------------------
def projection_process_main(features_conn, reply_conn, method: str, seed: int, settings: dict) -> None:
    """Entry of the process a cancellable projection runs in (module level, so ``spawn`` can import it).

    Reads the rows from ``features_conn``, then sends ``("ok", Projection)`` or ``("error", exception)``
    through ``reply_conn``: an :class:`~sslstudio.errors.SSLStudioError` as raised, anything else as a
    :class:`~sslstudio.errors.JobError` of one sentence (no traceback). Ctrl+C is left to the parent,
    which ends this process.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        x = np.asarray(features_conn.recv(), dtype=np.float32)
        features_conn.close()
        reply = ("ok", _compute(x, check_method(method), seed, settings))
    except SSLStudioError as exc:
        reply = ("error", exc)
    except Exception as exc:  # noqa: BLE001 - the parent shows one sentence, not a traceback
        reply = ("error", JobError(failure_sentence(method, exc)))
    try:
        reply_conn.send(reply)
    finally:
        reply_conn.close()


def failure_sentence(method: str, exc: BaseException) -> str:
    """One sentence for a projection that failed: its first line, first sentence, e.g.
    ``the t-SNE map failed: ValueError: Input X contains NaN.``"""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = re.split(r"(?<=[.!?])\s+", lines[0])[0].rstrip(".") if lines else "no message"
    return f"the {METHOD_LABELS.get(str(method), repr(method))} map failed: {type(exc).__name__}: {first}."


def _project_in_child(x: np.ndarray, name: str, seed: int, settings: dict, control) -> Projection:
    """:func:`projection_process_main` in a ``spawn`` process, watched every :data:`POLL_S` seconds for a Cancel.
    Not a daemon, so scikit-learn may still start its own workers there."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    features_in, features_out = ctx.Pipe(duplex=False)
    reply_in, reply_out = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=projection_process_main, args=(features_in, reply_out, name, seed, settings),
                       name=f"sslstudio-{name}", daemon=False)
    proc.start()
    features_in.close()  # the child holds its own copies: at its end these ends see EOF / a broken pipe
    reply_out.close()
    # the rows go from a thread: a pipe write of megabytes blocks until the child has started and read them
    sender = threading.Thread(target=_send_quietly, args=(features_out, x), daemon=True)
    sender.start()
    reply = None
    try:
        reply = _wait_for_reply(proc, reply_in, control, name)
    finally:  # a reply: the child is ending by itself; none (Ctrl+C here, say): end it now
        _end_process(proc, grace=5.0 if reply is not None else 0.0)
        sender.join(KILL_AFTER_S)
        features_out.close()
        reply_in.close()
    if reply[0] != "ok":
        raise reply[1]
    return reply[1]


def _send_quietly(conn, x: np.ndarray) -> None:
    try:
        conn.send(x)
    except OSError:  # the child ended first (cancelled, or failed while starting): its end says why
        pass


def _wait_for_reply(proc, conn, control, name: str) -> tuple:
    while not conn.poll(POLL_S):  # a reply, or EOF when the child ended without one
        if control.cancelled:
            _end_process(proc, grace=0.0)
            control.checkpoint()  # raises Cancelled
            raise Cancelled()
    try:
        return conn.recv()
    except EOFError:
        proc.join(KILL_AFTER_S)
        raise JobError(f"the {METHOD_LABELS[name]} map failed: its process ended without a result "
                       f"(exit code {proc.exitcode}), perhaps out of memory.") from None


def _end_process(proc, grace: float) -> None:
    """Wait up to ``grace`` seconds for ``proc`` to end, then terminate it, kill it if it is still there after
    :data:`KILL_AFTER_S`, and reap it."""
    proc.join(grace)
    if proc.is_alive():
        proc.terminate()
        proc.join(KILL_AFTER_S)
    if proc.is_alive():
        proc.kill()
    proc.join()


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
           "cluster_names", "colours", "failure_sentence", "l2_normalise", "map_features", "project",
           "projection_process_main", "read_embedding_csv", "tsne_perplexity", "umap_available",
           "write_embedding_png", "write_embedding_csv"]
