"""Tests for lazy row subsets (sslstudio.data.arrays.IndexedImages)."""

from __future__ import annotations

import numpy as np
import pytest

from sslstudio.data import IndexedImages


def _images(n: int = 12) -> np.ndarray:
    return np.arange(n * 4 * 4 * 3, dtype=np.uint8).reshape(n, 4, 4, 3)


@pytest.fixture(params=["ndarray", "memmap"])
def base(request, tmp_path):
    data = _images()
    if request.param == "ndarray":
        return data
    path = tmp_path / "images.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=data.shape)
    out[:] = data
    out.flush()
    del out
    mapped = np.load(path, mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    return mapped


INDEX = np.array([7, 2, 9, 2, 0, 11, 5])

KEYS = [
    0, 3, -1, -7, np.int64(4),
    slice(None), slice(1, 5), slice(None, None, -1), slice(5, 1, -2), slice(2, 3), slice(4, 4), slice(-3, None),
    np.array([6, 0, 3]), np.array([-1, 0, -1]), np.array([], dtype=np.int64), [2, 1], np.array([[0, 1], [2, 3]]),
    np.array([True, False, True, True, False, False, True]), np.array(4),
    (1, 2), (slice(1, 3), 0), (np.array([3, 1]), slice(None), 1, 2), (Ellipsis, 0), (2, Ellipsis),
]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k).replace("\n", "") for k in KEYS])
def test_indexing_matches_numpy_on_the_materialised_array(base, key):
    view = IndexedImages(base, INDEX)
    expected = np.asarray(base)[INDEX][key]
    got = view[key]
    assert isinstance(got, np.ndarray)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert np.array_equal(got, expected)


def test_array_attributes_and_materialising(base):
    view = IndexedImages(base, INDEX)
    assert len(view) == len(INDEX)
    assert view.shape == (len(INDEX), 4, 4, 3) and view.ndim == 4
    assert view.dtype == np.uint8
    assert view.nbytes == len(INDEX) * 4 * 4 * 3
    full = np.asarray(view)
    assert type(full) is np.ndarray and np.array_equal(full, _images()[INDEX])
    assert np.asarray(view, dtype=np.float32).dtype == np.float32
    assert [int(row[0, 0, 0]) for row in view] == [int(r[0, 0, 0]) for r in _images()[INDEX]]
    assert "7 of 12 rows" in repr(view)


def test_negative_index_and_masks_in_the_constructor(base):
    assert np.array_equal(np.asarray(IndexedImages(base, [-1, 0])), _images()[[11, 0]])
    mask = np.zeros(12, dtype=bool)
    mask[[1, 4]] = True
    assert np.array_equal(np.asarray(IndexedImages(base, mask)), _images()[[1, 4]])
    empty = IndexedImages(base, [])
    assert len(empty) == 0 and np.asarray(empty).shape == (0, 4, 4, 3)


def test_out_of_range_and_bad_indices(base):
    view = IndexedImages(base, INDEX)
    with pytest.raises(IndexError):
        view[7]
    with pytest.raises(IndexError):
        view[-8]
    with pytest.raises(IndexError):
        view[np.array([0, 7])]
    with pytest.raises(IndexError):
        view[np.ones(3, dtype=bool)]
    with pytest.raises(IndexError):
        IndexedImages(base, [12])
    with pytest.raises(IndexError):
        IndexedImages(base, np.zeros((2, 2), dtype=int))
    with pytest.raises(TypeError):
        IndexedImages(base, [0.5])
    with pytest.raises(ValueError):
        np.array(view, copy=False)


def test_rows_of_a_memmap_come_back_as_writable_arrays(base):
    view = IndexedImages(base, INDEX)
    for got in (view[0], view[1:3], view[np.array([2, 0])], next(iter(view)), np.asarray(view)):
        assert type(got) is np.ndarray
    if isinstance(base, np.memmap):
        assert view[0].flags.writeable and not base.flags.writeable
    else:
        assert np.shares_memory(view[0], base)  # a row of an in-memory array is a view, as in numpy


def test_subsets_compose_without_copying(base):
    train = IndexedImages(base, INDEX)
    part = train.subset([4, 0, -1])
    assert part.base is base  # the base, not the intermediate view
    assert np.array_equal(part.index, INDEX[[4, 0, -1]])
    assert np.array_equal(np.asarray(part), _images()[INDEX][[4, 0, -1]])
    nested = IndexedImages(part, np.array([2, 2]))
    assert nested.base is base and np.array_equal(np.asarray(nested), _images()[[5, 5]])
    assert not part.index.flags.writeable


class SpyRows:
    """An array-like that records what it is asked for (stands for a memory map on disk)."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.keys: list = []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key):
        self.keys.append(key)
        return self.data[key]


def test_reads_only_the_rows_asked_for_in_increasing_order():
    spy = SpyRows(_images(100))
    view = IndexedImages(spy, np.arange(99, -1, -1))  # reversed: view row i is base row 99 - i
    assert spy.keys == []  # creating a view reads nothing
    got = view[np.array([10, 90, 50, 10])]
    assert np.array_equal(got, _images(100)[[89, 9, 49, 89]])
    (key,) = spy.keys
    assert list(key) == [9, 49, 89, 89]  # sorted reads, only those rows
    spy.keys.clear()
    assert np.array_equal(view[95:99], _images(100)[[4, 3, 2, 1]])
    assert [list(k) for k in spy.keys] == [[1, 2, 3, 4]]
    spy.keys.clear()
    contiguous = IndexedImages(spy, np.arange(20, 40))
    assert np.array_equal(contiguous[5:10], _images(100)[25:30])
    assert spy.keys == [slice(25, 30)]  # a contiguous block is one plain read


def test_memmap_split_gathers_without_materialising_the_base(tmp_path):
    path = tmp_path / "big.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(1000, 8, 8, 3))
    out[:] = (np.arange(1000, dtype=np.uint32) % 251).astype(np.uint8)[:, None, None, None]
    out.flush()
    del out
    mapped = np.load(path, mmap_mode="r")
    order = np.random.default_rng(0).permutation(1000)
    train, held = IndexedImages(mapped, np.sort(order[100:])), IndexedImages(mapped, np.sort(order[:100]))
    assert len(train) + len(held) == 1000
    batch = train[np.array([5, 3, 800])]
    assert type(batch) is np.ndarray
    expected = (np.sort(order[100:])[[5, 3, 800]] % 251).astype(np.uint8)
    assert np.array_equal(batch[:, 0, 0, 0], expected)
