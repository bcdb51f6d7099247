"""Tests for loading single images (sslstudio.data.images)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

import sslstudio.data  # noqa: F401 - importing must not enable truncated loading
from sslstudio.data.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    BadImageError,
    is_image_file,
    load_rgb,
    to_square_array,
)


def test_truncated_loading_stays_disabled():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_extensions_are_lower_case_and_matched_in_any_case():
    assert IMAGE_EXTENSIONS == frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
    assert is_image_file("a/B.JPG") and is_image_file("x.Png") and is_image_file("y.TiFf")
    assert not is_image_file("notes.txt") and not is_image_file("jpg")


def test_max_pixels_defaults_to_pil_limit():
    assert MAX_PIXELS == 89_478_485


@pytest.mark.parametrize("kind", ["empty file", "not an image", "truncated", "truncated png", "corrupt"])
def test_bad_files_raise_with_reason(bad_files, kind):
    with pytest.raises(BadImageError) as info:
        load_rgb(bad_files[kind])
    assert info.value.reason == kind.replace(" png", "")
    assert info.value.path == bad_files[kind]


def test_png_with_broken_header_is_corrupt_not_foreign(tmp_path, write_image):
    path = write_image(tmp_path / "a.png")
    data = bytearray(path.read_bytes())
    data[20:28] = b"\x00" * 8  # inside IHDR: the CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(BadImageError) as info:
        load_rgb(path)
    assert info.value.reason == "corrupt"


def test_decompression_bomb_with_small_limit(tmp_path, write_image):
    path = write_image(tmp_path / "big.png", 20, 10)
    with pytest.raises(BadImageError) as info:
        load_rgb(path, max_pixels=199)
    assert info.value.reason == "decompression bomb"
    assert load_rgb(path, max_pixels=200).size == (20, 10)


@pytest.mark.parametrize("shape", [(15, 10), (30, 30)], ids=["pil-warning", "pil-error"])
def test_pil_bomb_warning_and_error_both_count(tmp_path, write_image, monkeypatch, shape):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = write_image(tmp_path / "big.png", *shape)
    with pytest.raises(BadImageError) as info:
        load_rgb(path, max_pixels=10**9)
    assert info.value.reason == "decompression bomb"


def test_module_limit_can_be_patched(tmp_path, write_image, monkeypatch):
    monkeypatch.setattr("sslstudio.data.images.MAX_PIXELS", 50)
    with pytest.raises(BadImageError) as info:
        load_rgb(write_image(tmp_path / "a.bmp", 10, 10))
    assert info.value.reason == "decompression bomb"


@pytest.mark.parametrize(
    ("orientation", "colored_edge"),
    [(6, "right"), (8, "left"), (3, "bottom"), (1, "top")],
)
def test_exif_orientation_is_applied(tmp_path, orientation, colored_edge):
    arr = np.full((40, 60, 3), 128, np.uint8)  # landscape: 60 wide, 40 high
    arr[:6] = (255, 0, 0)  # red top rows
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)

    out = np.asarray(load_rgb(path)).astype(int)
    expected_shape = (60, 40, 3) if orientation in (6, 8) else (40, 60, 3)
    assert out.shape == expected_shape
    edges = {
        "top": out[:3].mean(axis=(0, 1)),
        "bottom": out[-3:].mean(axis=(0, 1)),
        "left": out[:, :3].mean(axis=(0, 1)),
        "right": out[:, -3:].mean(axis=(0, 1)),
    }
    red = [name for name, mean in edges.items() if mean[0] > 200 and mean[1] < 60]
    assert red == [colored_edge]


def _save_and_load(tmp_path, img, name, **save_kwargs):
    path = tmp_path / name
    img.save(path, **save_kwargs)
    out = load_rgb(path)
    assert out.mode == "RGB"
    arr = np.asarray(out)
    assert arr.dtype == np.uint8 and arr.shape == (img.height, img.width, 3)
    return arr


def test_greyscale_l(tmp_path):
    arr = _save_and_load(tmp_path, Image.new("L", (5, 4), 100), "grey.png")
    assert (arr == 100).all()


def test_one_bit(tmp_path):
    img = Image.new("1", (8, 2), 0)
    img.putpixel((0, 0), 1)
    arr = _save_and_load(tmp_path, img, "bits.png")
    assert arr[0, 0].tolist() == [255, 255, 255] and arr[1, 1].tolist() == [0, 0, 0]


def test_palette(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    arr = _save_and_load(tmp_path, img, "pal.png")
    assert (arr == (10, 200, 30)).all()


def test_palette_with_transparency_goes_on_white(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((0, 0), 0)
    arr = _save_and_load(tmp_path, img, "palt.png", transparency=0)
    assert arr[0, 0].tolist() == [255, 255, 255]
    assert arr[1, 1].tolist() == [10, 200, 30]


def test_rgba_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 255, 0))
    img.putpixel((1, 0), (0, 0, 0, 128))
    arr = _save_and_load(tmp_path, img, "alpha.png")
    assert arr[0, 0].tolist() == [255, 255, 255]
    assert arr[3, 3].tolist() == [255, 0, 0]
    assert all(abs(v - 127) <= 1 for v in arr[0, 1])


def test_la_is_composited_on_white(tmp_path):
    img = Image.new("LA", (4, 4), (40, 255))
    img.putpixel((0, 0), (40, 0))
    arr = _save_and_load(tmp_path, img, "la.png")
    assert arr[0, 0].tolist() == [255, 255, 255] and arr[2, 2].tolist() == [40, 40, 40]


def test_cmyk(tmp_path):
    arr = _save_and_load(tmp_path, Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "cmyk.tif")
    assert (arr == (255, 0, 0)).all()


@pytest.mark.parametrize("name", ["deep.png", "deep.tif"])
def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path, name):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    arr = _save_and_load(tmp_path, img, name)
    assert arr[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (arr[..., 0] == arr[..., 2]).all()


def test_32_bit_integer_greyscale_in_16_bit_range(tmp_path):
    values = np.array([[0, 65535]], dtype=np.int32)
    arr = _save_and_load(tmp_path, Image.fromarray(values), "int.tif")
    assert arr[0, :, 0].tolist() == [0, 255]


def test_float_greyscale_in_unit_range(tmp_path):
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    arr = _save_and_load(tmp_path, Image.fromarray(values), "float.tif")
    assert arr[0, :, 0].tolist() == [0, 128, 255]


def test_to_square_array_crops_the_centre_of_a_wide_image():
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left third red
    arr[:, 20:40] = (0, 255, 0)  # centre third green
    arr[:, 40:] = (0, 0, 255)
    out = to_square_array(Image.fromarray(arr), 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert (out[:, 1:-1] == (0, 255, 0)).all()


def test_to_square_array_crops_tall_and_upscales():
    arr = np.zeros((9, 3, 3), np.uint8)
    arr[3:6] = 200
    out = to_square_array(Image.fromarray(arr), 12)
    assert out.shape == (12, 12, 3)
    assert out[2:10].min() >= 190


def test_to_square_array_downscale_averages():
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = to_square_array(Image.fromarray(checker).convert("RGB"), 8)
    assert np.abs(out.astype(int) - 128).max() <= 3


def test_to_square_array_rejects_zero_size():
    with pytest.raises(ValueError):
        to_square_array(Image.new("RGB", (4, 4)), 0)
