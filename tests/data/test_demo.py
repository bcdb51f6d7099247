"""Tests for the procedurally drawn demo data (sslstudio.data.demo)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslstudio.data import DEMO_CLASSES, decode_folder, load_labelled, write_demo_data
from sslstudio.data.demo import draw_scene
from sslstudio.errors import DataError

SMALL = {"n_unlabelled": 6, "n_train_per_class": 3, "n_test_per_class": 2, "size": 32}


def digest(folder: Path) -> dict[str, str]:
    """Hash every file under ``folder`` by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_layout_and_counts(tmp_path):
    counts = write_demo_data(tmp_path, seed=0, **SMALL)
    n = len(DEMO_CLASSES)
    assert 4 <= n <= 5
    assert counts == {"unlabelled": 6, "train": 3 * n, "test": 2 * n, "classes": n}
    unlabelled = sorted(p.name for p in (tmp_path / "unlabelled").iterdir())
    assert unlabelled == [f"img_{i:05d}.png" for i in range(6)]
    for split, per in (("train", 3), ("test", 2)):
        assert sorted(p.name for p in (tmp_path / "labelled" / split).iterdir()) == sorted(DEMO_CLASSES)
        for name in DEMO_CLASSES:
            files = list((tmp_path / "labelled" / split / name).glob("*.png"))
            assert len(files) == per
            assert all(name not in f.name for f in files)
    with Image.open(tmp_path / "unlabelled" / "img_00000.png") as img:
        assert img.format == "PNG" and img.size == (32, 32) and img.mode == "RGB"


def test_output_is_usable_by_the_loaders(tmp_path):
    write_demo_data(tmp_path, seed=0, **SMALL)
    assert len(decode_folder(tmp_path / "unlabelled", 32)) == 6
    split = load_labelled(tmp_path / "labelled")
    assert split.classes == sorted(DEMO_CLASSES) and split.test_source == "folder"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    write_demo_data(tmp_path / "a", seed=5, **SMALL)
    write_demo_data(tmp_path / "b", seed=5, **SMALL)
    write_demo_data(tmp_path / "c", seed=6, **SMALL)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


@pytest.mark.parametrize("name", DEMO_CLASSES)
def test_scenes_have_sky_on_top_and_ground_below(name):
    for i in range(5):
        arr = np.asarray(draw_scene(np.random.default_rng([1, i]), name, 64)).astype(int)
        top, bottom = arr[:4].mean(axis=(0, 1)), arr[-3:].mean(axis=(0, 1))
        assert top[2] > top[0] + 40, "the top rows are blue sky"
        if name == "boat":
            assert bottom[2] > bottom[0] + 30, "boats float on blue water"
        elif name != "car":  # cars may stand on a grey road that reaches the bottom
            assert bottom[1] > bottom[0] + 20 and bottom[1] > bottom[2] + 20, "houses and trees stand on green grass"


@pytest.mark.slow
def test_default_counts_are_fast(tmp_path):
    import time

    start = time.perf_counter()
    counts = write_demo_data(tmp_path)
    assert time.perf_counter() - start < 5.0
    assert counts["unlabelled"] == 400
    assert len(list((tmp_path / "unlabelled").iterdir())) == 400


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        write_demo_data(target, **SMALL)
