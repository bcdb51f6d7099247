import numpy as np
import pytest
import torch
from PIL import Image

from sslstudio.tasks.patches import (GREEN_MAGENTA, crop_batch, display, dominant_channel, greyscale_batch,
                                     pixelate_batch, pixelation_matrices, project_colour_batch, standardise_batch)
from tests.tasks.reference import detail, noise_images


def noise_image(size=24, seed=0):
    return noise_images(1, size, seed)[0]


def chw(x):
    return torch.from_numpy(np.ascontiguousarray(x)).movedim(-1, -3)


def test_crop_batch_takes_the_windows_and_refuses_to_leave_the_image():
    img = noise_image(10)
    out = crop_batch(torch.from_numpy(img)[None], torch.tensor([[2]]), torch.tensor([[3]]), 4)
    assert np.array_equal(out[0, 0].permute(1, 2, 0).numpy(), img[2:6, 3:7])
    for y in (7, -1):
        with pytest.raises(ValueError):
            crop_batch(torch.from_numpy(img)[None], torch.tensor([[y]]), torch.tensor([[0]]), 4)


def test_crop_batch_shifts_each_channel_and_clamps_at_the_border():
    img = noise_image(12)
    images = torch.from_numpy(img)[None]
    shifts = torch.tensor([[1, 0], [0, -2], [-1, 1]])
    out = crop_batch(images, torch.tensor([[3]]), torch.tensor([[3]]), 5, shifts.view(1, 1, 3, 2))[0, 0]
    for c, (dy, dx) in enumerate(shifts.tolist()):
        assert np.array_equal(out[c].numpy(), img[3 + dy:8 + dy, 3 + dx:8 + dx, c])
    clamped = crop_batch(images, torch.tensor([[0]]), torch.tensor([[7]]), 5,
                         torch.tensor([[-2, 2], [0, 0], [0, 0]]).view(1, 1, 3, 2))[0, 0]
    assert np.array_equal(clamped[0].numpy(), img[0:5, 7:12, 0])  # already at the top-right corner


def test_standardise_per_channel_gives_zero_mean_unit_std_per_channel():
    rng = np.random.default_rng(1)
    patches = rng.integers(0, 256, (4, 9, 9, 3)).astype(np.uint8)
    patches[1] = patches[1] // 4 + 100  # low contrast, bright: normalised all the same
    out = standardise_batch(chw(patches), per_channel_std=True)
    assert out.shape == (4, 3, 9, 9) and out.dtype == torch.float32
    assert torch.allclose(out.mean(dim=(-2, -1)), torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(out.std(dim=(-2, -1), unbiased=False), torch.ones(4, 3), atol=1e-4)


def test_standardise_whole_patch_keeps_faint_channels_faint():
    x = np.zeros((8, 8, 3), np.float32)
    x[..., 0] = np.linspace(0, 1, 64).reshape(8, 8)
    x[..., 1] = 0.5 + 0.02 * np.random.default_rng(0).normal(size=(8, 8))
    out = standardise_batch(chw(x), per_channel_std=False)
    assert torch.allclose(out.mean(dim=(-2, -1)), torch.zeros(3), atol=1e-5)
    assert abs(float(out.std(unbiased=False)) - 1) < 1e-4
    assert out[1].std() < 0.1 * out[0].std()
    # the per-channel variant would blow the faint channel up to unit variance
    assert abs(float(standardise_batch(chw(x), per_channel_std=True)[1].std(unbiased=False)) - 1) < 1e-3


def test_standardise_flat_patch_is_zeros_not_noise():
    flat = np.full((6, 6, 3), 77, np.uint8)
    assert torch.equal(standardise_batch(chw(flat)), torch.zeros(3, 6, 6))


def test_greyscale_matches_pil_luminance():
    img = noise_image(16)
    grey = greyscale_batch(chw(img))
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])
    pil = np.asarray(Image.fromarray(img).convert("L")).astype(np.float32) / 255
    assert np.abs(grey[0].numpy() - pil).max() < 1.5 / 255


def test_colour_projection_removes_green_magenta_and_keeps_greys():
    img = noise_image(16)
    axis = torch.from_numpy(GREEN_MAGENTA).view(3, 1, 1)
    out = project_colour_batch(chw(img))
    assert float((out * axis).sum(0).abs().max()) < 1e-5
    removed = chw(img).float() / 255 - out
    # what is removed lies along the green-magenta axis only
    residual = removed - (removed * axis).sum(0, keepdim=True) * axis
    assert float(residual.abs().max()) < 1e-5
    grey = np.full((4, 4, 3), 90, np.uint8)
    assert torch.allclose(project_colour_batch(chw(grey)), torch.full((3, 4, 4), 90 / 255), atol=1e-6)
    assert abs(GREEN_MAGENTA.sum()) < 1e-6  # orthogonal to grey: brightness is kept


def test_pixelation_reduces_detail():
    img = noise_image(24)
    sides = [1, 3, 6, 12, 24]
    down, up = pixelation_matrices(24, sides)
    out = pixelate_batch(chw(img)[None].expand(len(sides), -1, -1, -1), down, up)
    views = [o.permute(1, 2, 0).numpy().astype(np.uint8) for o in out]
    for k in (1, 2, 3):
        assert views[k].shape == img.shape and detail(views[k]) < 0.6 * detail(img)
    assert detail(views[1]) < detail(views[3])
    assert np.array_equal(views[4], img)
    one = views[0]
    assert np.ptp(one.reshape(-1, 3), axis=0).max() <= 1  # a single colour: the mean
    assert np.abs(one[0, 0].astype(float) - img.reshape(-1, 3).mean(0)).max() < 1.5


def test_display_is_neutral_across_channels():
    t = torch.zeros(3, 4, 4)
    t[:, 0, 0] = 2.0
    arr = np.asarray(display(t))
    assert arr.shape == (4, 4, 3)
    assert (arr[1, 1] == 128).all() and (arr[0, 0] == 255).all()
    assert dominant_channel(torch.randn(3, 5, 5)) == -1
