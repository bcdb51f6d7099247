"""Tests for finding image files (sslstudio.data.scan)."""

from __future__ import annotations

import os
import time

import pytest

from sslstudio.data.scan import ScanReport, scan_folder
from sslstudio.errors import DataError


def test_recursive_case_insensitive_sorted_and_hidden_skipped(tmp_path):
    for rel in ["b.JPG", "a.png", "sub/deeper/c.Tiff", "sub/d.webp", "notes.txt", "sub/readme.md"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.jpg").write_bytes(b"x")
    (tmp_path / ".dot.png").write_bytes(b"x")

    report = scan_folder(tmp_path)
    assert isinstance(report, ScanReport)
    assert report.root == tmp_path
    rel = [p.relative_to(tmp_path).as_posix() for p in report.files]
    assert rel == ["a.png", "b.JPG", "sub/d.webp", "sub/deeper/c.Tiff"]
    assert report.ignored == 2
    assert "4 images" in report.summary() and "2 other files ignored" in report.summary()


def test_symlink_loop_terminates(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    report = scan_folder(tmp_path)
    assert [p.name for p in report.files] == ["x.png"]


def test_progress_reports_final_count(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(b"x")
    seen: list[int] = []
    scan_folder(tmp_path, progress=seen.append)
    assert seen[-1] == 3


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_folder(tmp_path / "nope")


def test_file_is_not_a_folder(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match="is not a folder"):
        scan_folder(path)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="No images with the accepted extensions") as info:
        scan_folder(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_folder_without_images(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"\.jpg"):
        scan_folder(tmp_path)


def test_many_files_are_fast(tmp_path):
    n = 5_000
    for d in range(20):
        sub = tmp_path / f"d{d:02d}"
        sub.mkdir()
        for i in range(n // 20):
            (sub / f"{i:05d}.jpg").touch()
    start = time.perf_counter()
    report = scan_folder(tmp_path)
    elapsed = time.perf_counter() - start
    assert len(report.files) == n
    assert elapsed < 1.5  # 100,000 files scan in well under a second


def test_order_is_exactly_the_sorted_full_paths(tmp_path):
    names = ["a.png", "a-b.png", "a0.png", "a/x.png", "a-b/y.png", "A.png", "é.png", "a/b/c.png", "a.b/d.png",
             "ab/e.png", "a/b.png", "b/a/z.png", "b/a.png", "b/a-/q.png", "z/.hidden/q.png", "Z.jpg"]
    for rel in names:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    report = scan_folder(tmp_path)
    expected = sorted(str(tmp_path / rel) for rel in names if ".hidden" not in rel)
    assert [str(p) for p in report.files] == expected


def test_formats_and_stats(tmp_path):
    for i, rel in enumerate(["a.png", "b.PNG", "c.jpg", "d/e.jpeg", "d/f.png", "notes.txt"]):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i + 1))
        os.utime(path, ns=(1_000_000_000, 1_000_000_000 + i))
    plain = scan_folder(tmp_path)
    assert plain.formats == {"png": 3, "jpeg": 1, "jpg": 1}
    assert plain.stats is None
    report = scan_folder(tmp_path, stat=True)
    assert report.files == plain.files
    assert report.stats == [(os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in report.files]
    assert report.stats[0] == (1, 1_000_000_000)


@pytest.mark.slow
def test_progress_is_reported_every_few_thousand_files(tmp_path):
    for d in range(3):
        sub = tmp_path / f"d{d}"
        sub.mkdir()
        for i in range(1_500):
            (sub / f"{i:04d}.png").touch()
    seen: list[int] = []
    report = scan_folder(tmp_path, progress=seen.append)
    assert len(report.files) == 4_500
    assert seen == sorted(seen) and seen[-1] == 4_500 and 2 <= len(seen) <= 4
