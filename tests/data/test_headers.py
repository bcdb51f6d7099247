import numpy as np
from PIL import Image

from sslstudio.data import inspect_images, scan_folder


def test_sizes_and_unreadable_files_from_headers(tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "large.jpg")
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "mid.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(tmp_path / "bomb.png")
    calls = []
    report = inspect_images(scan_folder(tmp_path).files, progress=lambda d, t: calls.append((d, t)),
                            max_pixels=100 * 100)
    assert report.readable == 3
    assert report.size_range() == "30x20 to 50x40 (median 32x24)"
    assert {p.name: r for p, r in report.unreadable} == {"empty.jpg": "empty file", "text.png": "not an image",
                                                         "bomb.png": "decompression bomb"}
    assert report.reasons() == {"empty file": 1, "not an image": 1, "decompression bomb": 1}
    assert calls[-1] == (6, 6)


def test_uniform_sizes_read_as_one(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / f"{i}.png")
    assert inspect_images(sorted(tmp_path.iterdir())).size_range() == "64x64"
