"""The gallery's neighbours are the true nearest by cosine similarity, the query excluded; its layout."""

import numpy as np
from PIL import Image

from sslstudio.explore.neighbours import GalleryRow, gallery_size, nearest, write_gallery_png


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(x, q, k, exclude=None):
    sims = [(float(np.dot(x[i], q) / (np.linalg.norm(x[i]) * np.linalg.norm(q))), i) for i in range(len(x))
            if i != exclude]
    best = sorted(sims, key=lambda t: (-t[0], t[1]))[:k]
    return [i for _, i in best], [s for s, _ in best]


def test_neighbours_of_a_row_are_the_brute_force_nearest_without_the_row_itself():
    rng = np.random.default_rng(0)
    x = unit(rng.normal(size=(50, 12)).astype(np.float32))
    for row in (0, 17, 49):
        got = nearest(x, x[row], k=8, exclude=row)
        idx, sims = brute_force(x, x[row], 8, exclude=row)
        assert row not in got.indices
        assert got.indices.tolist() == idx
        assert np.allclose(got.similarities, sims, atol=1e-6)


def test_neighbours_of_an_outside_query_and_ties_by_row():
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(30, 6)).astype(np.float32))
    q = rng.normal(size=6).astype(np.float32)
    got = nearest(x, q / np.linalg.norm(q), k=5)
    assert got.indices.tolist() == brute_force(x, q, 5)[0]
    dup = np.vstack([x, x[3:4], x[3:4]])  # rows 3, 30, 31 are the same vector
    assert nearest(dup, x[3], k=3).indices.tolist() == [3, 30, 31]
    assert nearest(dup, x[3], k=2, exclude=3).indices.tolist() == [30, 31]
    assert len(nearest(x[:4], x[0], k=8, exclude=0).indices) == 3  # fewer rows than k


def test_the_gallery_has_one_row_per_initialisation(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, size=(12, 16, 16, 3), dtype=np.uint8)
    x = unit(rng.normal(size=(12, 4)))
    rows = [GalleryRow(name, nearest(x, x[0], k=4, exclude=0)) for name in ("run", "random", "imagenet")]
    path = write_gallery_png(tmp_path / "g.png", images[0], "query", rows, images, [f"c{i % 3}" for i in range(12)],
                             k=4, title="t")
    with Image.open(path) as im:
        assert im.size == gallery_size(3, 4)
        two = write_gallery_png(tmp_path / "g2.png", images[0], "query", rows[:1], images, None, k=4)
        with Image.open(two) as im2:
            assert im2.size[0] == im.size[0] and im.size[1] - im2.size[1] == 2 * (gallery_size(2, 4)[1] -
                                                                                 gallery_size(1, 4)[1])
