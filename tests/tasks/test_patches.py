import numpy as np
import pytest
import torch
from PIL import Image

from sslstudio.tasks.patches import (GREEN_MAGENTA, crop, crop_channels, detail, display, dominant_channel,
                                     drop_colour, greyscale, pixelate, project_colour, standardise, to_chw)


def noise_image(size=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_crop_takes_the_window_and_refuses_to_leave_the_image():
    img = noise_image(10)
    assert np.array_equal(crop(img, 2, 3, 4), img[2:6, 3:7])
    with pytest.raises(ValueError):
        crop(img, 7, 0, 4)
    with pytest.raises(ValueError):
        crop(img, -1, 0, 4)


def test_crop_channels_shifts_each_channel_and_clamps_at_the_border():
    img = noise_image(12)
    assert np.array_equal(crop_channels(img, 3, 3, 5, np.zeros((3, 2), int)), crop(img, 3, 3, 5))
    shifts = np.array([[1, 0], [0, -2], [-1, 1]])
    out = crop_channels(img, 3, 3, 5, shifts)
    for c, (dy, dx) in enumerate(shifts):
        assert np.array_equal(out[..., c], img[3 + dy:8 + dy, 3 + dx:8 + dx, c])
    clamped = crop_channels(img, 0, 7, 5, np.array([[-2, 2], [0, 0], [0, 0]]))
    assert np.array_equal(clamped[..., 0], img[0:5, 7:12, 0])  # already at the top-right corner


def test_standardise_per_channel_gives_zero_mean_unit_std_per_channel():
    rng = np.random.default_rng(1)
    patches = rng.integers(0, 256, (4, 9, 9, 3)).astype(np.uint8)
    patches[1] = patches[1] // 4 + 100  # low contrast, bright: normalised all the same
    out = standardise(patches, per_channel_std=True)
    assert out.shape == patches.shape and out.dtype == np.float32
    assert np.allclose(out.mean(axis=(1, 2)), 0, atol=1e-5)
    assert np.allclose(out.std(axis=(1, 2)), 1, atol=1e-4)


def test_standardise_whole_patch_keeps_faint_channels_faint():
    x = np.zeros((8, 8, 3), np.float32)
    x[..., 0] = np.linspace(0, 1, 64).reshape(8, 8)
    x[..., 1] = 0.5 + 0.02 * np.random.default_rng(0).normal(size=(8, 8))
    out = standardise(x, per_channel_std=False)
    assert np.allclose(out.mean(axis=(0, 1)), 0, atol=1e-5)
    assert abs(out.std() - 1) < 1e-4
    assert out[..., 1].std() < 0.1 * out[..., 0].std()
    # the per-channel variant would blow the faint channel up to unit variance
    assert abs(standardise(x, per_channel_std=True)[..., 1].std() - 1) < 1e-3


def test_standardise_flat_patch_is_zeros_not_noise():
    flat = np.full((6, 6, 3), 77, np.uint8)
    assert np.array_equal(standardise(flat), np.zeros((6, 6, 3), np.float32))


def test_to_chw_moves_channels_first():
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
    t = to_chw(x)
    assert t.shape == (2, 3, 5, 6) and t.dtype == torch.float32
    assert torch.equal(t[1, 2], torch.from_numpy(x[1, :, :, 2]))


def test_greyscale_matches_pil_luminance():
    img = noise_image(16)
    grey = greyscale(img)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 0], grey[..., 2])
    pil = np.asarray(Image.fromarray(img).convert("L")).astype(np.float32) / 255
    assert np.abs(grey[..., 0] - pil).max() < 1.5 / 255


def test_colour_dropping_keeps_exactly_one_original_channel():
    img = noise_image(16)
    x = img.astype(np.float32) / 255
    kept_seen = set()
    for seed in range(12):
        out, keep = drop_colour(img, np.random.default_rng(seed), noise=0.01)
        same = [c for c in range(3) if np.array_equal(out[..., c], x[..., c])]
        assert same == [keep]
        for c in range(3):
            if c != keep:
                ratio = out[..., c].std() / x[..., keep].std()
                assert 0.005 < ratio < 0.02  # Gaussian noise of ~1/100 the kept channel's deviation
                assert abs(out[..., c].mean() - x[..., keep].mean()) < 0.01
        assert dominant_channel(to_chw(standardise(out, per_channel_std=False))) == keep
        kept_seen.add(keep)
    assert kept_seen == {0, 1, 2}


def test_colour_projection_removes_green_magenta_and_keeps_greys():
    img = noise_image(16)
    out = project_colour(img)
    assert np.abs(out @ GREEN_MAGENTA).max() < 1e-5
    removed = img.astype(np.float32) / 255 - out
    # what is removed lies along the green-magenta axis only
    residual = removed - (removed @ GREEN_MAGENTA)[..., None] * GREEN_MAGENTA
    assert np.abs(residual).max() < 1e-5
    grey = np.full((4, 4, 3), 90, np.uint8)
    assert np.allclose(project_colour(grey), 90 / 255, atol=1e-6)
    assert abs(GREEN_MAGENTA.sum()) < 1e-6  # orthogonal to grey: brightness is kept


def test_pixelation_reduces_detail():
    img = noise_image(24)
    for side in (3, 6, 12):
        out = pixelate(img, side)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert detail(out) < 0.6 * detail(img)
    assert detail(pixelate(img, 3)) < detail(pixelate(img, 12))
    assert np.array_equal(pixelate(img, 24), img)
    one = pixelate(img, 1)
    assert np.ptp(one.reshape(-1, 3), axis=0).max() <= 1  # a single colour: the mean
    assert np.abs(one[0, 0].astype(float) - img.reshape(-1, 3).mean(0)).max() < 1.5


def test_display_is_neutral_across_channels():
    t = torch.zeros(3, 4, 4)
    t[:, 0, 0] = 2.0
    arr = np.asarray(display(t))
    assert arr.shape == (4, 4, 3)
    assert (arr[1, 1] == 128).all() and (arr[0, 0] == 255).all()
    assert dominant_channel(torch.randn(3, 5, 5)) == -1
