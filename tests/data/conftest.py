"""Helpers that write tiny image files for the data tests."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def noise_image(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    """Return a random RGB image (noise compresses badly, so truncation hits pixel data)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def image_bytes(fmt: str, width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    """Return the encoded bytes of a noise image."""
    buf = io.BytesIO()
    noise_image(width, height, seed).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """Return ``write(path, width=40, height=30, seed=0)`` writing a valid image (format from the suffix)."""

    def write(path: Path, width: int = 40, height: int = 30, seed: int = 0) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        noise_image(width, height, seed).save(path)
        return path

    return write


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """Write one file of every bad kind; return ``{expected reason: path}`` (bomb needs a small limit)."""
    folder = tmp_path / "bad"
    folder.mkdir()
    files: dict[str, Path] = {}

    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    files["empty file"] = empty

    text = folder / "notes.jpg"
    text.write_text("this is a shopping list, not a photo\n" * 20)
    files["not an image"] = text

    jpeg = image_bytes("JPEG")
    trunc_jpg = folder / "cut.jpg"
    trunc_jpg.write_bytes(jpeg[: len(jpeg) // 2])
    files["truncated"] = trunc_jpg

    png = image_bytes("PNG")
    trunc_png = folder / "cut.png"
    trunc_png.write_bytes(png[: len(png) // 2])
    files["truncated png"] = trunc_png

    corrupt = bytearray(png)  # garbage inside the compressed pixel data (JPEG decoders often shrug it off)
    mid = len(corrupt) // 2
    corrupt[mid : mid + 200] = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    corrupt_path = folder / "garbled.png"
    corrupt_path.write_bytes(bytes(corrupt))
    files["corrupt"] = corrupt_path
    return files
