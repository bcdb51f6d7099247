"""Tests for labelled folders (sslstudio.data.labelled)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslstudio.data.labelled import LabelledSplit, load_labelled
from sslstudio.errors import ConfigError, DataError


def make_classes(folder: Path, counts: dict[str, int]) -> None:
    """Create ``folder/<class>/NN.png`` placeholder files (only names matter here)."""
    for name, n in counts.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sub = folder / name / ("nested" if i % 3 == 0 else "")
            sub.mkdir(exist_ok=True)
            (sub / f"{i:03d}.PNG").write_bytes(b"x")


def test_train_and_test_folders(tmp_path):
    make_classes(tmp_path / "train", {"cats": 5, "dogs": 4})
    make_classes(tmp_path / "test", {"cats": 2, "dogs": 3})
    split = load_labelled(tmp_path)
    assert isinstance(split, LabelledSplit)
    assert split.classes == ["cats", "dogs"]
    assert split.test_source == "folder"
    assert [label for _, label in split.train] == [0] * 5 + [1] * 4
    assert [label for _, label in split.test] == [0] * 2 + [1] * 3
    assert all("test" in p.parts for p, _ in split.test)
    assert any("nested" in p.parts for p, _ in split.train)  # recursive
    assert "2 classes" in split.summary() and "9 training" in split.summary()


def test_explicit_test_root(tmp_path):
    make_classes(tmp_path / "lab", {"a": 3, "b": 3})
    make_classes(tmp_path / "elsewhere", {"b": 2})
    with pytest.warns(UserWarning, match="no images for 1 classes: a"):
        split = load_labelled(tmp_path / "lab", tmp_path / "elsewhere")
    assert split.test_source == "folder"
    assert [label for _, label in split.test] == [1, 1]
    assert len(split.train) == 6


def test_unknown_test_class(tmp_path):
    make_classes(tmp_path / "train", {"cats": 3, "dogs": 3})
    make_classes(tmp_path / "test", {"cats": 1, "birds": 1})
    with pytest.raises(DataError, match="birds"):
        load_labelled(tmp_path)


def test_flat_layout_stratified_split(tmp_path):
    make_classes(tmp_path, {"a": 10, "b": 5, "c": 2})
    split = load_labelled(tmp_path, test_fraction=0.2, seed=3)
    assert split.test_source == "split"
    test_counts = {c: sum(1 for _, label in split.test if label == i) for i, c in enumerate(split.classes)}
    train_counts = {c: sum(1 for _, label in split.train if label == i) for i, c in enumerate(split.classes)}
    assert test_counts == {"a": 2, "b": 1, "c": 1}
    assert train_counts == {"a": 8, "b": 4, "c": 1}
    train_paths = {p for p, _ in split.train}
    test_paths = {p for p, _ in split.test}
    assert not train_paths & test_paths and len(train_paths | test_paths) == 17


def test_split_is_deterministic_and_seeded(tmp_path):
    make_classes(tmp_path, {"a": 30, "b": 30})
    first = load_labelled(tmp_path, seed=1)
    again = load_labelled(tmp_path, seed=1)
    other = load_labelled(tmp_path, seed=2)
    assert first.train == again.train and first.test == again.test
    assert first.test != other.test


def test_per_class_subset(tmp_path):
    make_classes(tmp_path / "train", {"a": 12, "b": 9})
    make_classes(tmp_path / "test", {"a": 2, "b": 2})
    one = load_labelled(tmp_path, per_class=5, seed=7)
    two = load_labelled(tmp_path, per_class=5, seed=7)
    other = load_labelled(tmp_path, per_class=5, seed=8)
    assert one.train == two.train
    assert [label for _, label in one.train] == [0] * 5 + [1] * 5
    assert len(set(one.train)) == 10
    assert one.train != other.train
    assert len(one.test) == 4  # the test set is not subsampled


def test_per_class_larger_than_class_keeps_all_with_warning(tmp_path):
    make_classes(tmp_path, {"a": 20, "b": 5})
    with pytest.warns(UserWarning, match=r"b \(4\)"):
        split = load_labelled(tmp_path, per_class=10, seed=0)
    counts = [sum(1 for _, label in split.train if label == i) for i in range(2)]
    assert counts == [10, 4]


def test_single_class(tmp_path):
    make_classes(tmp_path, {"cats": 4})
    with pytest.raises(DataError, match="at least two classes.*1: cats"):
        load_labelled(tmp_path)


def test_empty_class_folder(tmp_path):
    make_classes(tmp_path, {"cats": 4, "dogs": 0})
    (tmp_path / "dogs" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="'dogs'") as info:
        load_labelled(tmp_path)
    assert str(tmp_path / "dogs") in str(info.value)


def test_no_class_folders(tmp_path):
    (tmp_path / "loose.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"DIR/<class>/image\.jpg"):
        load_labelled(tmp_path)


def test_class_with_one_image_cannot_be_split(tmp_path):
    make_classes(tmp_path, {"a": 5, "b": 1})
    with pytest.raises(DataError, match="'b' has only one image"):
        load_labelled(tmp_path)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_labelled(tmp_path / "nothing")


@pytest.mark.parametrize("kwargs", [{"test_fraction": 0.0}, {"test_fraction": 1.0}, {"per_class": 0}])
def test_bad_settings(tmp_path, kwargs):
    make_classes(tmp_path, {"a": 3, "b": 3})
    with pytest.raises(ConfigError):
        load_labelled(tmp_path, **kwargs)
