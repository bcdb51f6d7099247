"""Honest counts: every unusable file is counted under the right reason, and nothing vanishes silently.

A file without read permission is "unreadable (permission denied)", not "corrupt", and is not cached
as bad for good; a class whose images are all unusable stops the job with a sentence naming it; the
fine-tuning summary lists skipped files like pretraining's; ``sslstudio bench`` skips bad files.

Tests run as root read files whatever their mode, so there the permission error is simulated: the
builtin ``open`` (which PIL uses) raises :class:`PermissionError` for the locked paths.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslstudio.data import decode_folder, decode_images
from sslstudio.errors import DataError

UNREADABLE = "unreadable (permission denied)"


def _image(path: Path, seed: int = 0, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(path)
    return path


def _not_an_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is a shopping list, not a photo\n" * 5)
    return path


@pytest.fixture
def lock(monkeypatch):
    """``lock(path)`` removes read permission from a file; ``lock.release(path)`` gives it back."""
    locked: set[str] = set()
    real_open = builtins.open
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(os.fspath(file)) in locked:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    class Lock:
        def __call__(self, path: Path) -> Path:
            os.chmod(path, 0)
            locked.add(os.path.abspath(path))
            if as_root:  # root reads anything: make open() refuse as it would for a user
                monkeypatch.setattr(builtins, "open", guarded_open)
            return path

        def release(self, path: Path) -> None:
            os.chmod(path, 0o644)
            locked.discard(os.path.abspath(path))

    lock = Lock()
    yield lock
    for name in list(locked):
        lock.release(Path(name))


# -- permission denied ------------------------------------------------------------------------------
def test_a_file_without_read_permission_is_skipped_as_unreadable_not_corrupt(tmp_path, lock):
    good = [_image(tmp_path / f"{k}.png", k) for k in range(2)]
    locked = lock(_image(tmp_path / "locked.png", 9))
    with pytest.warns(UserWarning, match=r"1 unreadable \(permission denied\)"):
        result = decode_images([*good, locked], 16)
    assert result.paths == good
    assert result.skipped == [(locked, UNREADABLE)]


def test_a_folder_of_only_unreadable_files_says_to_check_permissions(tmp_path, lock):
    files = [lock(_image(tmp_path / f"{k}.png", k)) for k in range(2)]
    with pytest.raises(DataError) as info:
        decode_images(files, 16)
    message = str(info.value)
    assert "2 unreadable (permission denied)" in message and "Check the files' permissions" in message
    assert "corrupt" not in message


def test_an_unreadable_file_is_not_cached_as_bad_for_good(tmp_path, lock):
    root = tmp_path / "images"
    for k in range(2):
        _image(root / f"{k}.png", k)
    locked = lock(_image(root / "locked.png", 9))
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        first = decode_folder(root, 16, cache_dir=cache)
    assert first.skipped == [(locked, UNREADABLE)] and first.cache_path is not None

    with pytest.warns(UserWarning):
        still = decode_folder(root, 16, cache_dir=cache)  # nothing changed: the entry is used
    assert still.from_cache and still.skipped == [(locked, UNREADABLE)]

    lock.release(locked)  # chmod changes neither the size nor the mtime, so the key is the same
    again = decode_folder(root, 16, cache_dir=cache)
    assert not again.from_cache
    assert len(again) == 3 and again.skipped == []
    assert decode_folder(root, 16, cache_dir=cache).from_cache  # and that result is cached


@pytest.fixture
def lock_folder(monkeypatch):
    """``lock_folder(path)`` removes the permission to list a folder (simulated for root)."""
    locked: set[str] = set()
    real_scandir = os.scandir
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0

    def guarded_scandir(path="."):
        if os.path.abspath(os.fspath(path)) in locked:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def lock_folder(path: Path) -> Path:
        os.chmod(path, 0)
        locked.add(os.path.abspath(path))
        if as_root:
            monkeypatch.setattr(os, "scandir", guarded_scandir)
        return path

    yield lock_folder
    for name in locked:
        os.chmod(name, 0o755)


def test_a_folder_that_cannot_be_listed_is_named_not_silently_left_out(tmp_path, lock_folder):
    from sslstudio.data import scan_folder

    good = _image(tmp_path / "a" / "1.png")
    _image(tmp_path / "b" / "2.png")
    locked = lock_folder(tmp_path / "b")
    with pytest.warns(UserWarning, match=r"1 folder in .* cannot be read \(permission denied\) and its images "
                                         r"are left out: .*b\."):
        report = scan_folder(tmp_path)
    assert report.files == [good]
    assert report.unreadable_folders == [locked]


def test_an_image_folder_that_cannot_be_listed_says_so(tmp_path, lock_folder):
    from sslstudio.data import scan_folder

    _image(tmp_path / "images" / "1.png")
    folder = lock_folder(tmp_path / "images")
    with pytest.raises(DataError, match=r"The image folder .*images cannot be read \(permission denied\); "
                                        "check its permissions"):
        scan_folder(folder)


# -- a class with no usable image -------------------------------------------------------------------
def _labelled(root: Path, bad_class: str | None = None, n: int = 4) -> Path:
    for c, name in enumerate(("ants", "bees", "cats")):
        for k in range(n):
            if name == bad_class:
                _not_an_image(root / name / f"{k}.jpg")
            else:
                _image(root / name / f"{k}.png", 10 * c + k)
    return root


def test_a_class_whose_images_are_all_unusable_stops_the_job_naming_it(tmp_path):
    from sslstudio.evaluation import load_labelled_data

    root = _labelled(tmp_path / "lab", bad_class="cats")
    with pytest.warns(UserWarning), pytest.raises(DataError) as info:
        load_labelled_data(str(root), None, 16)
    message = str(info.value)
    assert "class 'cats'" in message and str(root / "cats") in message
    assert "no usable image (4 files skipped: 4 not an image)" in message
    assert message.endswith(".")


def test_a_class_with_only_test_images_usable_has_no_usable_training_image(tmp_path):
    from sslstudio.evaluation import load_labelled_data

    root = tmp_path / "lab"
    _labelled(root / "train", bad_class="cats", n=3)
    _labelled(root / "test", n=2)
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"class 'cats' in .*train.cats has no usable "
                                                                  r"training image \(3 files skipped: 3 not an"):
        load_labelled_data(str(root), None, 16)


def test_a_class_without_a_usable_test_image_is_named_as_untested(tmp_path):
    from sslstudio.evaluation import load_labelled_data

    root = tmp_path / "lab"
    _labelled(root / "train", n=3)
    _labelled(root / "test", bad_class="ants", n=2)
    with pytest.warns(UserWarning, match=r"1 class \(ants\) has no usable test image and is not tested"):
        data = load_labelled_data(str(root), None, 16)
    assert sorted(set(data.test_y.tolist())) == [1, 2]
    assert [r for _, r in data.skipped] == ["not an image"] * 2


def test_a_class_with_no_usable_image_stops_finetuning(tmp_path):
    from sslstudio.evaluation import FinetuneConfig, finetune

    root = _labelled(tmp_path / "lab", bad_class="bees")
    config = FinetuneConfig(init="random", labelled=str(root), arch="resnet18", image_size=16, epochs=1,
                            device="cpu", batch_size=8)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="class 'bees'"):
        finetune(config)


# -- the fine-tuning summary ------------------------------------------------------------------------
def test_the_finetuning_summary_lists_skipped_files_like_pretraining(tmp_path):
    from sslstudio.evaluation import FinetuneConfig, finetune

    root = _labelled(tmp_path / "lab", n=3)
    bad = _not_an_image(root / "ants" / "zz-shopping.jpg")
    out = tmp_path / "ft"
    config = FinetuneConfig(init="random", labelled=str(root), arch="resnet18", image_size=16, epochs=1,
                            device="cpu", batch_size=8, out=str(out), test_fraction=0.3)
    with pytest.warns(UserWarning, match="not an image"):
        summary = finetune(config)
    assert summary["skipped"] == 1
    assert summary["skipped_by_reason"] == {"not an image": 1}
    assert summary["skipped_files"] == [{"path": str(bad), "reason": "not an image"}]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["skipped_files"] == summary["skipped_files"]
    assert saved["skipped_by_reason"] == {"not an image": 1}


# -- sslstudio bench --------------------------------------------------------------------------------
@pytest.fixture
def quick_bench(monkeypatch):
    import sslstudio.engine.bench as bench

    monkeypatch.setattr(bench, "LOADER_SECONDS", 0.0)

    def run(folder: Path) -> dict:
        return bench.run_bench(str(folder), "rotation", "resnet18", image_size=16, batch_size=4, device="cpu",
                               precision="fp32", workers=0, steps=1, warmup=1, train_images=None)

    return run


@pytest.mark.slow
def test_bench_skips_bad_images_and_counts_them(tmp_path, quick_bench, lock):
    from sslstudio.engine.bench import format_bench

    folder = tmp_path / "images"
    for k in range(6):
        _image(folder / f"{k}.png", k)
    _not_an_image(folder / "notes.jpg")
    lock(_image(folder / "locked.png", 9))
    with pytest.warns(UserWarning, match="Skipped 2 of 8"):
        result = quick_bench(folder)
    assert result["images"] == 6 and result["images_found"] == 8 and result["train_images"] == 6
    assert result["skipped"] == 2
    assert result["skipped_by_reason"] == {"not an image": 1, UNREADABLE: 1}
    assert result["naive"] > 0 and result["train"] > 0
    assert "2 skipped (1 not an image, 1 unreadable (permission denied))" in format_bench(result)


def test_bench_on_a_folder_without_a_usable_image_says_so(tmp_path, quick_bench):
    folder = tmp_path / "images"
    for k in range(3):
        _not_an_image(folder / f"{k}.jpg")
    with pytest.raises(DataError, match=r"None of the 3 image files in .* could be read: 3 not an image"):
        quick_bench(folder)
