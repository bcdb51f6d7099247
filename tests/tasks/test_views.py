"""The two-view augmentations (sslstudio.tasks.views): both views come from the source image, every
parameter drawn is the one applied, and a batch is a function of its generator's seed."""

import numpy as np
import pytest
import torch

from sslstudio.models.normalise import normalise
from sslstudio.tasks.views import COL, FIELDS, ViewRecipe, augment, draw_params, two_views

OFF = ViewRecipe(min_scale=1.0, flip_probability=0.0, jitter_probability=0.0, grey_probability=0.0)


def images(n=4, size=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def test_with_augmentations_off_both_views_are_the_image():
    x = images()
    inputs, params = two_views(x, torch.Generator().manual_seed(0), (OFF, OFF))
    assert inputs.shape == (4, 2, 3, 16, 16) and params.shape == (4, 2, len(FIELDS))
    for v in range(2):
        assert torch.allclose(inputs[:, v], normalise(x), atol=1e-5)
    assert torch.equal(params[..., COL["height"]], torch.ones(4, 2))


def test_a_mirrored_whole_crop_is_the_mirrored_image():
    x = images()
    recipe = ViewRecipe(min_scale=1.0, flip_probability=1.0, jitter_probability=0.0, grey_probability=0.0)
    inputs, params = two_views(x, torch.Generator().manual_seed(1), (recipe, OFF))
    assert torch.allclose(inputs[:, 0], normalise(x.flip(2)), atol=1e-5)
    assert params[:, 0, COL["flip"]].eq(1).all() and params[:, 1, COL["flip"]].eq(0).all()


def test_crop_boxes_lie_in_the_source_with_the_drawn_area_and_aspect():
    p = draw_params(2000, ViewRecipe(min_scale=0.2), torch.Generator().manual_seed(2))
    top, left, h, w = (p[:, COL[k]] for k in ("top", "left", "height", "width"))
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 1 + 1e-6).all() and (left + w <= 1 + 1e-6).all()
    area = h * w
    assert (area >= 0.2 - 1e-5).all() and (area <= 1 + 1e-5).all()
    assert ((w / h >= 3 / 4 - 1e-4) & (w / h <= 4 / 3 + 1e-4)).all()
    assert area.min() < 0.25 and area.max() > 0.9  # the whole range is drawn


def test_a_view_samples_the_source_inside_its_crop_box():
    """On a horizontal ramp (value = column), a view's pixel j reads the source at the box's column
    left + (j + 0.5) / S * width (bilinear interpolation is exact on a ramp)."""
    size = 32
    ramp = torch.arange(size, dtype=torch.float32).mul(255 / (size - 1)).round()
    x = ramp.view(1, 1, size, 1).expand(3, size, size, 3).to(torch.uint8).contiguous()
    recipe = ViewRecipe(min_scale=0.3, max_scale=0.5, flip_probability=0.0, jitter_probability=0.0,
                        grey_probability=0.0)
    params = draw_params(3, recipe, torch.Generator().manual_seed(3))
    views = augment(x, params)
    for b in range(3):
        left, width = float(params[b, COL["left"]]), float(params[b, COL["width"]])
        where = (left + (torch.arange(size) + 0.5) / size * width) * size - 0.5  # source column (pixel units)
        inside = (where >= 0) & (where <= size - 1)
        expected = np.interp(where.numpy(), np.arange(size), ramp.numpy()) / 255
        row = views[b, 0, size // 2].numpy()
        assert np.allclose(row[inside.numpy()], expected[inside.numpy()], atol=1e-4)


def test_every_applied_colour_operation_matches_its_parameter():
    x = images(8, 16, seed=4)
    bright = ViewRecipe(min_scale=1.0, flip_probability=0.0, jitter_probability=1.0, brightness=0.5, contrast=0.0,
                        saturation=0.0, hue=0.0, grey_probability=0.0)
    params = draw_params(8, bright, torch.Generator().manual_seed(5))
    factor = params[:, COL["brightness"]].view(-1, 1, 1, 1)
    assert ((factor >= 0.5) & (factor <= 1.5)).all() and params[:, COL["contrast"]].eq(1).all()
    source = x.permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(augment(x, params), (source * factor).clamp(0, 1), atol=1e-5)

    grey = ViewRecipe(min_scale=1.0, flip_probability=0.0, jitter_probability=0.0, grey_probability=1.0)
    out = augment(x, draw_params(8, grey, torch.Generator().manual_seed(6)))
    luma = (source * torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert torch.allclose(out, luma.unsqueeze(1).expand_as(out), atol=1e-5)

    solar = ViewRecipe(min_scale=1.0, flip_probability=0.0, jitter_probability=0.0, grey_probability=0.0,
                       solarize_probability=1.0)
    out = augment(x, draw_params(8, solar, torch.Generator().manual_seed(7)))
    assert torch.allclose(out, torch.where(source >= 0.5, 1 - source, source), atol=1e-6)


def test_hue_shift_by_a_full_turn_keeps_the_image_and_a_blur_smooths_it():
    x = images(4, 32, seed=8)
    source = x.permute(0, 3, 1, 2).float() / 255
    params = draw_params(4, OFF, torch.Generator().manual_seed(9))
    params[:, COL["jitter"]] = 1.0  # jitter on with identity factors: the RGB -> HSV -> RGB round trip
    assert torch.allclose(augment(x, params), source, atol=1e-5)
    params[:, COL["jitter"]] = 0.0
    params[:, COL["blur"]] = torch.tensor([0.0, 1.5, 0.0, 1.5])
    out = augment(x, params)
    assert torch.equal(out[0], augment(x, draw_params(4, OFF, torch.Generator().manual_seed(9)))[0])
    smooth = (out[1:2, :, :, 1:] - out[1:2, :, :, :-1]).abs().mean()
    assert smooth < 0.5 * (source[1:2, :, :, 1:] - source[1:2, :, :, :-1]).abs().mean()


def test_a_batch_is_a_function_of_its_seed():
    x = images()
    recipe = ViewRecipe(blur_probability=0.5, solarize_probability=0.5)
    a = two_views(x, torch.Generator().manual_seed(10), (recipe, recipe))
    b = two_views(x, torch.Generator().manual_seed(10), (recipe, recipe))
    c = two_views(x, torch.Generator().manual_seed(11), (recipe, recipe))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[1][:, 0], a[1][:, 1])  # the two views draw their own parameters


def test_two_views_refuse_non_square_images():
    with pytest.raises(ValueError, match="square"):
        two_views(torch.zeros(2, 16, 20, 3, dtype=torch.uint8), torch.Generator(), (OFF, OFF))
