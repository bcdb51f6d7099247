"""Projections to 2-D keep clusters apart; k-means colours; UMAP is optional; the map's files; a t-SNE
in its own process gives the same map and ends at once on Cancel."""

import multiprocessing
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from sslstudio.errors import ConfigError, DataError, JobError
from sslstudio.explore import embedding
from sslstudio.explore.embedding import (available_methods, check_method, cluster_labels, map_features, project,
                                         read_embedding_csv, tsne_perplexity, write_embedding_csv,
                                         write_embedding_png)


def two_clusters(n=30, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=dim), rng.normal(size=dim)
    x = np.vstack([a + 0.35 * rng.normal(size=(n, dim)), b + 0.35 * rng.normal(size=(n, dim))])
    return map_features(x.astype(np.float32), dim), np.repeat([0, 1], n)


def separation(coords, y):
    """Distance between the two centroids over the mean distance of a point to its own centroid."""
    c0, c1 = coords[y == 0].mean(0), coords[y == 1].mean(0)
    spread = np.mean([np.linalg.norm(coords[y == k] - c, axis=1).mean() for k, c in ((0, c0), (1, c1))])
    return np.linalg.norm(c0 - c1) / spread


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_a_projection_keeps_two_clusters_apart(method):
    from sklearn.linear_model import LogisticRegression

    x, y = two_clusters()
    result = project(x, method, seed=0)
    assert result.coords.shape == (60, 2) and result.coords.dtype == np.float32
    assert separation(result.coords, y) > 3.0
    assert LogisticRegression().fit(result.coords, y).score(result.coords, y) == 1.0
    # and the same rows and seed give the same map
    assert np.array_equal(project(x, method, seed=0).coords, result.coords)


def test_a_mixed_set_does_not_separate():
    """The figure of merit above fails on one blob split at random (so it can fail)."""
    rng = np.random.default_rng(1)
    x = map_features(rng.normal(size=(60, 64)).astype(np.float32), 64)
    y = rng.permutation(np.repeat([0, 1], 30))
    assert separation(project(x, "pca").coords, y) < 1.0


def test_tsne_lowers_its_perplexity_for_a_small_set_and_says_so():
    x, _ = two_clusters(n=6)
    result = project(x, "tsne")
    assert result.params["perplexity"] == tsne_perplexity(12) < 30
    assert result.notes and "perplexity lowered" in result.notes[0]
    assert not project(*two_clusters(n=60)[:1], "tsne").notes  # 120 points: 30 fits
    with pytest.raises(DataError, match="at least 3 images"):
        project(x[:2], "tsne")


def test_features_are_pooled_per_channel_and_l2_normalised():
    raw = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 12)  # 3 channels x 2x2 grid, channel-major
    rows = map_features(raw, 3)
    means = raw.reshape(2, 3, 4).mean(axis=2)
    assert np.allclose(rows, means / np.linalg.norm(means, axis=1, keepdims=True))
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0)


def test_kmeans_finds_well_separated_groups_numbered_by_size():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    sizes = [5, 12, 8]
    truth = np.repeat([0, 1, 2], sizes)
    x = centres[truth] + 0.1 * rng.normal(size=(25, 16))
    labels = cluster_labels(x, k=3, seed=0)
    # the same partition as the truth, and cluster 0 is the largest group (truth 1), then truth 2, then 0
    assert {tuple(np.flatnonzero(labels == k)) for k in range(3)} == {tuple(np.flatnonzero(truth == k))
                                                                      for k in range(3)}
    assert np.all(labels[truth == 1] == 0) and np.all(labels[truth == 2] == 1) and np.all(labels[truth == 0] == 2)
    assert cluster_labels(x[:2], k=10).max() <= 1  # k is lowered to the number of rows


def test_umap_is_listed_only_when_installed_and_asking_for_it_otherwise_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # an import of umap now fails
    assert "umap" not in available_methods() and available_methods()[:2] == ["pca", "tsne"]
    with pytest.raises(ConfigError) as info:
        check_method("umap")
    message = str(info.value)
    assert 'pip install "sslstudio[umap]"' in message and message.count(". ") == 0 and message.endswith(".")
    with pytest.raises(ConfigError, match="umap-learn"):
        project(two_clusters()[0], "umap")
    # found by the import system but broken on import: the same sentence
    monkeypatch.setattr(embedding, "umap_available", lambda: True)
    with pytest.raises(ConfigError, match=r'sslstudio\[umap\]'):
        project(two_clusters()[0], "umap")
    with pytest.raises(ConfigError, match="unknown projection method"):
        check_method("isomap")


def test_the_csv_holds_the_rows_and_the_png_is_an_image(tmp_path):
    x, y = two_clusters(n=5)
    coords = project(x, "pca").coords
    paths = [f"/data/img_{i}.png" for i in range(10)]
    texts = ["a" if k == 0 else "b, with a comma" for k in y]
    write_embedding_csv(tmp_path / "e.csv", paths, coords, texts)
    got_paths, got_coords, got_labels = read_embedding_csv(tmp_path / "e.csv")
    assert got_paths == paths and got_labels == texts
    assert np.array_equal(got_coords.astype(np.float32), coords)
    png = write_embedding_png(tmp_path / "e.png", coords, y, ["a", "b"], "title")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (880, 660)


# -- t-SNE / UMAP in their own process, so that Cancel ends them at once --------------------------------
@pytest.mark.slow
def test_a_projection_in_its_own_process_gives_the_same_map_as_in_process():
    from sslstudio.engine.events import RunControl

    x = np.random.default_rng(3).normal(size=(200, 16)).astype(np.float32)
    here = project(x, "tsne", seed=5, max_iter=250)
    there = project(x, "tsne", seed=5, max_iter=250, control=RunControl())
    assert there.coords.dtype == np.float32 and there.coords.shape == (200, 2)
    assert np.array_equal(there.coords, here.coords) and there.params == here.params
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_cancel_ends_a_running_tsne_at_once_and_leaves_no_process():
    """6,000 x 64 points take about a minute on 2 cores; a Cancel 5 s in (after the 2-4 s the process takes to
    start and import its libraries, so scikit-learn is at work) ends the call within seconds."""
    from sslstudio.engine.events import Cancelled, RunControl

    x = np.random.default_rng(0).normal(size=(6000, 64)).astype(np.float32)
    control, outcome = RunControl(), {}

    def job():
        try:
            outcome["result"] = project(x, "tsne", seed=0, control=control)
        except BaseException as exc:  # noqa: BLE001 - the test reads what was raised
            outcome["error"] = exc
        outcome["ended"] = time.perf_counter()

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    time.sleep(5.0)
    assert thread.is_alive() and len(multiprocessing.active_children()) == 1  # the projection is running
    asked = time.perf_counter()
    control.cancel()
    thread.join(30)
    assert not thread.is_alive() and "result" not in outcome
    assert isinstance(outcome["error"], Cancelled)
    assert outcome["ended"] - asked < 8.0
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_a_projection_that_fails_in_its_process_is_one_sentence():
    from sslstudio.engine.events import RunControl

    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    x[7, 3] = np.nan
    with pytest.raises(JobError) as info:
        project(x, "tsne", control=RunControl())
    message = str(info.value)
    assert message.startswith("the t-SNE map failed: ValueError:") and "NaN" in message
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message
    assert "Traceback" not in message
    assert multiprocessing.active_children() == []


def test_the_process_entry_answers_an_unknown_method_with_the_usual_sentence():
    features_in, features_out = multiprocessing.Pipe(duplex=False)
    reply_in, reply_out = multiprocessing.Pipe(duplex=False)
    features_out.send(np.zeros((10, 4), dtype=np.float32))
    embedding.projection_process_main(features_in, reply_out, "isomap", 0, {})
    kind, error = reply_in.recv()
    assert kind == "error" and isinstance(error, ConfigError)
    assert str(error) == "unknown projection method 'isomap'; use pca, tsne or umap."
    # anything else that fails there becomes one sentence: the first line's first sentence
    long = ValueError("Input X contains NaN.\nTSNE does not accept missing values. See the docs.")
    assert embedding.failure_sentence("tsne", long) == "the t-SNE map failed: ValueError: Input X contains NaN."
