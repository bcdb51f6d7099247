"""Tests for the decode cache and decoding beyond RAM (sslstudio.data.cache, decode_folder(cache_dir=...))."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import sslstudio.data.cache as cache_mod
import sslstudio.data.decode as decode_mod
from sslstudio.data import cache_entries, clear_cache, decode_folder, decode_images, ram_budget
from sslstudio.data.cache import CACHE_FORMAT_VERSION, cache_key
from sslstudio.errors import DataError


@pytest.fixture
def folder(tmp_path, write_image) -> Path:
    """Nine small images in two sub-folders, a tiny one and an unreadable file."""
    root = tmp_path / "images"
    for i in range(6):
        write_image(root / f"a/{i}.png", 40, 30, seed=i)
    for i in range(3):
        write_image(root / f"b/{i}.jpg", 24, 36, seed=10 + i)
    write_image(root / "tiny.png", 6, 6, seed=20)
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


def entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


def decode(root, size=16, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the unreadable file is reported each time
        return decode_folder(root, size, **kwargs)


def no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(decode_mod, "_decode_one", refuse)
    monkeypatch.setattr(decode_mod, "load_rgb", refuse)


def assert_same(result, reference):
    assert result.arrays.shape == reference.arrays.shape and result.arrays.dtype == np.uint8
    assert np.asarray(result.arrays).tobytes() == np.asarray(reference.arrays).tobytes()
    assert result.paths == reference.paths
    assert result.skipped == reference.skipped


def test_second_call_opens_the_cache_without_decoding(folder, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    reference = decode(folder)
    assert type(reference.arrays) is np.ndarray and reference.storage == "memory"

    first = decode(folder, cache_dir=cache_dir)
    assert not first.from_cache and first.cache_path is not None and first.cache_path.is_file()
    assert isinstance(first.arrays, np.memmap) and first.storage == "cache"
    assert_same(first, reference)
    assert [Path(p).suffix for p in entries(cache_dir)] == [".json", ".npy"]

    no_decoding(monkeypatch)
    calls = []
    with pytest.warns(UserWarning, match="Skipped 1 of 11 image files"):
        second = decode_folder(folder, 16, cache_dir=cache_dir, progress=lambda d, t: calls.append((d, t)))
    assert second.from_cache and isinstance(second.arrays, np.memmap)
    assert not second.arrays.flags.writeable
    assert second.cache_path == first.cache_path
    assert_same(second, reference)
    assert second.skipped == [(folder / "broken.jpg", "not an image")]
    assert calls == [(11, 11)]
    # threads do not change the pixels, so they are not part of the key
    assert decode(folder, cache_dir=cache_dir, workers=2).from_cache


def test_sidecar_lists_relative_paths_settings_and_version(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    result = decode(folder, cache_dir=cache_dir, min_source_size=8, small_policy="skip")
    (info,) = cache_entries(cache_dir)
    assert info["format_version"] == CACHE_FORMAT_VERSION
    assert info["root"] == str(folder.resolve())
    assert info["size"] == 16
    assert info["settings"]["small_policy"] == "skip" and info["settings"]["min_source_size"] == 8
    assert info["kept"] == [str(p.relative_to(folder)) for p in result.paths]
    assert sorted(info["skipped"]) == [["broken.jpg", "not an image"], ["tiny.png", "too small"]]
    assert info["shape"] == [9, 16, 16, 3]
    assert info["npy"] == str(result.cache_path)
    # the header was cut to the 9 kept rows of the 11 files
    assert os.path.getsize(result.cache_path) == info["npy_bytes"] < 11 * 16 * 16 * 3 + 128


@pytest.mark.parametrize("change", ["touch", "rewrite", "add", "remove", "add hidden"])
def test_changes_to_the_folder_invalidate_and_remove_the_stale_entry(folder, tmp_path, write_image, change):
    cache_dir = tmp_path / "cache"
    old = decode(folder, cache_dir=cache_dir)
    if change == "touch":
        st = os.stat(folder / "a/0.png")
        os.utime(folder / "a/0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif change == "rewrite":  # other pixels, same modification time: the size tells
        st = os.stat(folder / "a/1.png")
        write_image(folder / "a/1.png", 41, 30, seed=99)
        os.utime(folder / "a/1.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "add":
        write_image(folder / "b/new.png", 30, 30, seed=50)
    elif change == "remove":
        (folder / "a/2.png").unlink()
    else:
        write_image(folder / ".hidden.png", 30, 30, seed=51)  # not scanned, so not a change
    new = decode(folder, cache_dir=cache_dir)
    reference = decode(folder)
    assert_same(new, reference)
    if change == "add hidden":
        assert new.from_cache and new.cache_path == old.cache_path
        return
    assert not new.from_cache
    assert new.cache_path != old.cache_path
    assert not old.cache_path.exists() and not old.cache_path.with_suffix(".json").exists()
    assert entries(cache_dir) == sorted([new.cache_path.name, new.cache_path.with_suffix(".json").name])
    assert decode(folder, cache_dir=cache_dir).from_cache


def test_different_size_and_settings_are_different_entries(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    small = decode(folder, 16, cache_dir=cache_dir)
    large = decode(folder, 24, cache_dir=cache_dir)
    skip = decode(folder, 16, cache_dir=cache_dir, min_source_size=8, small_policy="skip")
    assert len({small.cache_path, large.cache_path, skip.cache_path}) == 3
    assert len(entries(cache_dir)) == 6  # all kept: none is stale for the others
    assert large.arrays.shape == (10, 24, 24, 3) and skip.arrays.shape == (9, 16, 16, 3)
    assert decode(folder, 16, cache_dir=cache_dir).from_cache
    assert decode(folder, 24, cache_dir=cache_dir).from_cache
    # a minimum size changes nothing when small images are upscaled: the same entry
    assert decode(folder, 16, cache_dir=cache_dir, min_source_size=8).cache_path == small.cache_path
    assert_same(decode(folder, 24, cache_dir=cache_dir), decode(folder, 24))


def test_the_same_folder_by_another_path_shares_the_entry(folder, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = decode(folder, cache_dir=cache_dir)
    monkeypatch.chdir(folder.parent)
    again = decode(Path("images"), cache_dir=cache_dir)
    assert again.from_cache and again.cache_path == first.cache_path
    assert again.paths == [Path("images") / p.relative_to(folder) for p in first.paths]


@pytest.mark.parametrize("damage", ["truncate npy", "garbage npy", "garbage sidecar", "wrong shape",
                                    "missing npy", "sidecar of another file list"])
def test_a_damaged_entry_is_rebuilt_never_trusted(folder, tmp_path, damage):
    cache_dir = tmp_path / "cache"
    first = decode(folder, cache_dir=cache_dir)
    npy, side = first.cache_path, first.cache_path.with_suffix(".json")
    del first
    if damage == "truncate npy":
        with open(npy, "r+b") as fh:
            fh.truncate(os.path.getsize(npy) - 100)
    elif damage == "garbage npy":
        npy.write_bytes(b"\x00" * os.path.getsize(npy))  # right size, no header
    elif damage == "garbage sidecar":
        side.write_text("{not json")
    elif damage == "wrong shape":
        info = json.loads(side.read_text())
        info["shape"] = [9, 16, 16, 3]
        info["kept"] = info["kept"][:9]
        side.write_text(json.dumps(info))
    elif damage == "missing npy":
        npy.unlink()
    else:
        info = json.loads(side.read_text())
        info["kept"][0] = "somewhere/else.png"
        side.write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = decode_folder(folder, 16, cache_dir=cache_dir)
    assert not rebuilt.from_cache
    assert_same(rebuilt, decode(folder))
    assert decode(folder, cache_dir=cache_dir).from_cache


def test_a_half_written_entry_is_decoded_again(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    first = decode(folder, cache_dir=cache_dir)
    first.cache_path.with_suffix(".json").unlink()  # a crash between the two moves
    with open(first.cache_path, "r+b") as fh:
        fh.truncate(200)
    again = decode(folder, cache_dir=cache_dir)
    assert not again.from_cache
    assert_same(again, decode(folder))


@pytest.mark.filterwarnings("ignore:Skipped")
def test_an_unwritable_cache_folder_warns_and_decodes_in_memory(folder, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot be written"):
        result = decode_folder(folder, 16, cache_dir=blocker / "cache")
    assert result.cache_path is None and not result.from_cache and result.storage == "memory"
    assert_same(result, decode(folder))


@pytest.mark.filterwarnings("ignore:Skipped")
def test_a_full_disk_warns_and_decodes_in_memory(folder, tmp_path, monkeypatch):
    def full(path, nbytes):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod, "_reserve", full)
    with pytest.warns(UserWarning, match="cannot be written"):
        result = decode_folder(folder, 16, cache_dir=tmp_path / "cache")
    assert result.storage == "memory"
    assert_same(result, decode(folder))
    assert entries(tmp_path / "cache") == []  # the temporary file is gone


def test_a_cancelled_decode_leaves_nothing_behind(folder, tmp_path):
    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done >= 4:
            raise Cancelled

    cache_dir = tmp_path / "cache"
    with pytest.raises(Cancelled):
        decode(folder, cache_dir=cache_dir, progress=cancel)
    assert entries(cache_dir) == []


def test_decoding_into_the_cache_writes_in_chunks(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(decode_mod, "CHUNK_BYTES", 2 * 16 * 16 * 3)  # two rows per chunk
    flushes = []
    real_flush = cache_mod.MemmapWriter.flush

    def counting_flush(self):
        flushes.append(self.array.shape)
        real_flush(self)

    monkeypatch.setattr(cache_mod.MemmapWriter, "flush", counting_flush)
    result = decode(folder, cache_dir=tmp_path / "cache")
    assert len(flushes) == 5  # 10 kept rows, 2 at a time
    assert_same(result, decode(folder))


def test_over_the_ram_budget_decodes_into_a_temporary_memmap(folder, tmp_path, monkeypatch, bad_files):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(decode_mod, "CHUNK_BYTES", 3 * 16 * 16 * 3)
    reference = decode(folder)
    result = decode(folder, max_ram_bytes=1000)
    assert isinstance(result.arrays, np.memmap) and result.storage == "temporary file"
    assert result.cache_path is None and not result.from_cache
    assert_same(result, reference)
    assert Path(result.arrays.filename).parent == temp
    if os.name == "posix":
        assert list(temp.iterdir()) == []  # unlinked at once; the map keeps the data
    with pytest.raises(DataError):
        decode_images(list(bad_files.values()), 16, max_ram_bytes=0)
    if os.name == "posix":
        assert list(temp.iterdir()) == []
    # a budget that the array fits in, or none: in RAM as before
    assert type(decode(folder, max_ram_bytes=10**9).arrays) is np.ndarray
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        threaded = decode_images(sorted(folder.rglob("*.*")), 16, workers=2, max_ram_bytes=0)
    assert isinstance(threaded.arrays, np.memmap)
    assert np.array_equal(threaded.arrays, decode(folder).arrays)


def test_ram_budget_defaults_to_half_the_available_memory(monkeypatch):
    assert ram_budget(123) == 123 and ram_budget(0) == 0
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 1000)
    assert ram_budget() == 500
    monkeypatch.setattr(cache_mod, "available_memory", lambda: None)
    assert ram_budget() is None
    monkeypatch.undo()
    found = cache_mod.available_memory()
    assert found is None or found > 0


def test_cache_key_depends_on_contents_size_settings_and_root(tmp_path):
    contents = [("a.png", 10, 1), ("b/c.jpg", 20, 2)]
    settings = {"min_source_size": None, "small_policy": "upscale", "max_pixels": 100}
    base = cache_key(tmp_path, 32, settings, contents)
    assert cache_key(tmp_path, 32, dict(settings), list(contents)) == base
    for other in ([("a.png", 10, 1)], [("a.png", 11, 1), ("b/c.jpg", 20, 2)],
                  [("a.png", 10, 2), ("b/c.jpg", 20, 2)], [("a.png", 10, 1), ("b/d.jpg", 20, 2)]):
        changed = cache_key(tmp_path, 32, settings, other)
        assert changed.group == base.group and changed.digest != base.digest
    for key in (cache_key(tmp_path, 16, settings, contents), cache_key(tmp_path / "x", 32, settings, contents),
                cache_key(tmp_path, 32, dict(settings, max_pixels=99), contents)):
        assert key.group != base.group and key.digest != base.digest


def test_clear_cache(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    decode(folder, 16, cache_dir=cache_dir)
    decode(folder, 20, cache_dir=cache_dir)
    (cache_dir / "unrelated.txt").write_text("kept")
    assert len(cache_entries(cache_dir)) == 2
    assert clear_cache(cache_dir) == 4
    assert entries(cache_dir) == ["unrelated.txt"]
