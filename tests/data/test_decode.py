"""Tests for decoding many files into square arrays (sslstudio.data.decode)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from sslstudio.data.decode import DecodedImages, decode_folder, decode_images
from sslstudio.errors import ConfigError, DataError


def test_bad_files_are_skipped_and_counted_good_files_kept(tmp_path, bad_files, write_image):
    good = [
        write_image(tmp_path / "bad" / "good1.png", 30, 20, seed=1),
        write_image(tmp_path / "bad" / "good2.jpg", 20, 30, seed=2),
    ]
    big = write_image(tmp_path / "bad" / "huge.bmp", 50, 50)
    with pytest.warns(UserWarning, match="Skipped 6 of 8") as record:
        result = decode_folder(tmp_path / "bad", 16, max_pixels=2000)
    assert len(record) == 1  # one summary, not one warning per file
    assert isinstance(result, DecodedImages)
    assert sorted(result.paths) == sorted(good)
    assert len(result) == 2 and result.size == 16
    assert result.arrays.shape == (2, 16, 16, 3) and result.arrays.dtype == np.uint8
    assert result.skipped_counts() == {
        "empty file": 1,
        "not an image": 1,
        "truncated": 2,
        "corrupt": 1,
        "decompression bomb": 1,
    }
    assert (big, "decompression bomb") in result.skipped


def test_order_is_kept_and_arrays_match_paths(tmp_path, write_image):
    paths = [write_image(tmp_path / f"{i}.png", 8, 8, seed=i) for i in (3, 1, 2)]
    result = decode_images(paths, 8)
    assert result.paths == paths
    for arr, path in zip(result.arrays, paths):
        assert np.array_equal(arr, np.asarray(Image.open(path).convert("RGB")))


def test_threads_give_the_same_result(tmp_path, write_image, bad_files):
    paths = [write_image(tmp_path / f"{i:02d}.png", 12, 9, seed=i) for i in range(40)]
    paths.insert(5, bad_files["truncated"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serial = decode_images(paths, 8)
        threaded = decode_images(paths, 8, workers=3)
    assert threaded.paths == serial.paths
    assert np.array_equal(threaded.arrays, serial.arrays)
    assert threaded.skipped == serial.skipped == [(bad_files["truncated"], "truncated")]


def test_only_bad_files_is_an_error(bad_files):
    with pytest.raises(DataError, match=r"None of the 5 image files in .* could be read: 2 truncated") as info:
        decode_images(list(bad_files.values()), 16)
    assert "not an image" in str(info.value) and "corrupt" in str(info.value)


def test_empty_folder_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match="No images"):
        decode_folder(tmp_path, 16)
    with pytest.raises(DataError, match="does not exist"):
        decode_folder(tmp_path / "missing", 16)


def test_no_paths_is_an_error():
    with pytest.raises(DataError):
        decode_images([], 16)


def test_small_sources_upscaled_or_skipped(tmp_path, write_image):
    small = write_image(tmp_path / "small.png", 10, 12)
    large = write_image(tmp_path / "large.png", 40, 40)

    kept = decode_images([small, large], 32, min_source_size=20, small_policy="upscale")
    assert kept.paths == [small, large] and kept.skipped == []

    with pytest.warns(UserWarning, match="1 too small"):
        skipped = decode_images([small, large], 32, min_source_size=20, small_policy="skip")
    assert skipped.paths == [large]
    assert skipped.skipped == [(small, "too small")]
    assert skipped.arrays.shape == (1, 32, 32, 3)

    with pytest.raises(DataError, match="too small"):
        decode_images([small], 32, min_source_size=20, small_policy="skip")


def test_progress_is_called_up_to_total(tmp_path, write_image):
    paths = [write_image(tmp_path / f"{i}.png", 8, 8, seed=i) for i in range(5)]
    calls: list[tuple[int, int]] = []
    decode_images(paths, 4, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize(
    "kwargs", [{"size": 0}, {"size": 8, "small_policy": "stretch"}, {"size": 8, "workers": -1}]
)
def test_bad_settings(tmp_path, write_image, kwargs):
    path = write_image(tmp_path / "a.png")
    with pytest.raises(ConfigError):
        decode_images([path], **kwargs)
