import math

import numpy as np
import pytest
import torch
from torch import nn

from sslstudio.errors import ConfigError
from sslstudio.tasks import create_task, get_task
from sslstudio.tasks.base import make_config, to_image
from sslstudio.tasks.exemplar import ExemplarConfig, colour_pca, hsv_to_rgb, rgb_to_hsv

#: Options that switch every transformation off (each test switches one back on).
IDENTITY = {"translation": 0.0, "scale_min": 1.0, "scale_max": 1.0, "rotation": 0.0, "contrast_min": 1.0,
            "contrast_max": 1.0, "power_min": 1.0, "power_max": 1.0, "sv_factor_min": 1.0,
            "sv_factor_max": 1.0, "sv_shift": 0.0, "hue_shift": 0.0}


def textured_images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def only(**options):
    """A task with a 32 px patch (region 64) and only the given transformations on."""
    return create_task("exemplar", {**IDENTITY, "min_patch": 32, **options}, image_size=32)


def moments(weights):
    """Centroid (x, y) and orientation (degrees, counter-clockwise on screen) of a weight image."""
    h, w = weights.shape
    y, x = np.mgrid[0:h, 0:w] + 0.5
    m = weights.sum()
    cx, cy = (weights * x).sum() / m, (weights * y).sum() / m
    mu20 = (weights * (x - cx) ** 2).sum()
    mu02 = (weights * (y - cy) ** 2).sum()
    mu11 = (weights * (x - cx) * (y - cy)).sum()
    angle = 0.5 * math.degrees(math.atan2(2 * mu11, mu20 - mu02))
    return cx, cy, -angle  # image y points down: a clockwise-looking angle is negative on screen


def test_label_is_the_seed_index_for_every_copy():
    task = create_task("exemplar", image_size=32)
    items = task.prepare(textured_images(), 0)
    assert items.shape == (6, task.region, task.region, 3) and task.patch == 16 and task.region == 32
    for index in range(len(items)):
        inputs, target = task.make_item(index, items[index], np.random.default_rng(index))
        assert inputs.shape == (4, 3, 16, 16)
        assert target.tolist() == [index] * 4
    model = task.build_head(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)), 10)
    assert model.classifier.out_features == 6
    batch = torch.stack([task.make_item(i, items[i], np.random.default_rng(i))[0] for i in range(2)])
    assert model(batch).shape == (8, 6)


def test_seeds_come_from_different_images_and_hold_their_pixels():
    images = textured_images(10, 48)
    task = create_task("exemplar", {"classes": 7}, image_size=48)
    items = task.prepare(images, 3)
    assert len(items) == 7 and len(set(task.sources.tolist())) == 7
    p = task.patch
    for k in range(7):
        y, x = task.positions[k]
        assert np.array_equal(task.centre(items[k]), images[task.sources[k], y:y + p, x:x + p])


def test_number_of_classes_is_capped_by_the_images():
    task = create_task("exemplar", image_size=32)  # 8000 classes by default
    items = task.prepare(textured_images(5), 0)
    assert len(items) == 5 and task.run_info()["surrogate_classes"] == 5


def test_seeds_lie_where_the_gradients_are():
    size = 48
    img = np.full((size, size, 3), 120, np.uint8)
    img[size // 2:, size // 2:] = np.random.default_rng(0).integers(0, 256, (size // 2, size // 2, 3))
    task = create_task("exemplar", image_size=size)
    p = task.patch
    overlaps = []
    for seed in range(20):
        task.prepare(img[None], seed)
        y, x = task.positions[0]
        inside = max(0, y + p - size // 2) * max(0, x + p - size // 2) if y + p > size // 2 else 0
        overlaps.append(min(inside, p * p) / (p * p))
    assert min(overlaps) > 0  # never a flat patch
    assert np.mean(overlaps) > 0.5
    # a perfectly flat image still gets a (uniformly placed) seed
    task.prepare(np.full((1, size, size, 3), 90, np.uint8), 0)
    assert len(task.positions) == 1


def test_prepare_and_samples_are_deterministic_for_a_seed():
    images = textured_images(8)
    a, b = create_task("exemplar", {"classes": 5}, image_size=32), create_task("exemplar", {"classes": 5},
                                                                              image_size=32)
    ia, ib = a.prepare(images, 1), b.prepare(images, 1)
    assert np.array_equal(ia, ib) and np.array_equal(a.sources, b.sources)
    x1, _ = a.make_item(0, ia[0], np.random.default_rng(7))
    x2, _ = b.make_item(0, ib[0], np.random.default_rng(7))
    assert torch.equal(x1, x2)
    x3, _ = a.make_item(0, ia[0], np.random.default_rng(8))
    assert not torch.equal(x1, x3)
    c = create_task("exemplar", {"classes": 5}, image_size=32)
    ic = c.prepare(images, 2)
    assert not np.array_equal(ia, ic)  # another seed, other seed patches


def test_identity_transform_returns_the_seed():
    task = only()
    region = textured_images(1, 64)[0]
    out = task.transform(region, task.sample_params(np.random.default_rng(0)))
    assert np.abs(out * 255 - task.centre(region)).max() < 1e-3


def test_rotation_stays_within_range():
    task = only(rotation=20.0)
    region = np.zeros((64, 64, 3), np.uint8)
    region[31:33, 8:56] = 255  # a horizontal bar through the centre
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(25):
        params = task.sample_params(rng)
        out = task.transform(region, params)
        cx, cy, measured = moments(out.mean(2))
        assert abs(measured - params["angle"]) < 2.0
        assert abs(measured) <= 21.0 and abs(cx - 16) < 0.5 and abs(cy - 16) < 0.5
        angles.append(measured)
    assert max(np.abs(angles)) > 10  # the range is really used


def test_translation_stays_within_range():
    task = only(translation=0.2)
    region = np.zeros((64, 64, 3), np.uint8)
    region[30:34, 30:34] = 255  # a dot at the centre
    rng = np.random.default_rng(1)
    for _ in range(20):
        params = task.sample_params(rng)
        cx, cy, _ = moments(task.transform(region, params).mean(2))
        assert abs(cx - 16 - params["tx"]) < 0.3 and abs(cy - 16 - params["ty"]) < 0.3
        assert max(abs(cx - 16), abs(cy - 16)) <= 0.2 * 32 + 0.3


def test_scaling_stays_within_range():
    task = only(scale_min=0.7, scale_max=1.4)
    region = np.zeros((64, 64, 3), np.uint8)
    region[28:36, 28:36] = 255  # an 8 px square
    rng = np.random.default_rng(2)
    for _ in range(20):
        params = task.sample_params(rng)
        area = task.transform(region, params).mean(2).sum()
        side = math.sqrt(area) / 8
        assert 0.7 - 0.03 <= side <= 1.4 + 0.03 and abs(side - params["scale"]) < 0.05


def test_colour_transforms_stay_within_range():
    rng = np.random.default_rng(3)
    region = np.zeros((64, 64, 3), np.uint8)
    region[..., 0] = 200
    region[..., 1] = np.linspace(40, 160, 64)[None, :]
    region[..., 2] = 60  # saturated, varied hues
    hsv_in = rgb_to_hsv(region[16:48, 16:48].astype(np.float32) / 255)
    hue_task = only(hue_shift=0.1)
    for _ in range(10):
        params = hue_task.sample_params(rng)
        hsv = rgb_to_hsv(hue_task.transform(region, params))
        shift = (hsv[..., 0] - hsv_in[..., 0] + 0.5) % 1.0 - 0.5
        assert np.abs(shift - params["hue"]).max() < 1e-4 and abs(params["hue"]) <= 0.1
        assert np.abs(hsv[..., 1:] - hsv_in[..., 1:]).max() < 1e-4  # S and V untouched
    sv_task = only(power_min=0.25, power_max=4.0, sv_factor_min=0.7, sv_factor_max=1.4, sv_shift=0.1)
    for _ in range(10):
        params = sv_task.sample_params(rng)
        assert np.all((params["power"] >= 0.25) & (params["power"] <= 4.0))
        assert np.all((params["sv_factor"] >= 0.7) & (params["sv_factor"] <= 1.4))
        assert np.all(np.abs(params["sv_shift"]) <= 0.1)
        hsv = rgb_to_hsv(sv_task.transform(region, params))
        expected = np.clip(hsv_in[..., 1:] ** params["power"] * params["sv_factor"] + params["sv_shift"], 0, 1)
        assert np.abs(hsv[..., 1:] - expected).max() < 1e-4
        hue_moved = (hsv[..., 0] - hsv_in[..., 0] + 0.5) % 1.0 - 0.5
        assert np.abs(hue_moved[hsv[..., 1] > 0.05]).max() < 1e-3  # hue kept where it is defined


def test_contrast_scales_principal_component_projections():
    task = only(contrast_min=0.5, contrast_max=2.0, contrast_pca="patch")
    rng = np.random.default_rng(4)
    region = (rng.random((64, 64, 3)) * 80 + 90).astype(np.uint8)  # mid-range: nothing clips
    seed_rgb = task.centre(region).astype(np.float32) / 255
    mean, vecs = colour_pca(seed_rgb)
    before = (seed_rgb - mean) @ vecs
    for _ in range(10):
        params = task.sample_params(rng)
        assert np.all((params["contrast"] >= 0.5) & (params["contrast"] <= 2.0))
        after = (task.transform(region, params) - mean) @ vecs
        ratio = (after * before).sum((0, 1)) / (before * before).sum((0, 1))
        assert np.allclose(ratio, params["contrast"], rtol=1e-3)


def test_hsv_roundtrip():
    rgb = np.random.default_rng(5).random((50, 3))
    assert np.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-6)


def test_make_sample_without_prepare():
    task = create_task("exemplar", {"copies": 3}, image_size=32)
    assert task.samples_per_image == 3
    inputs, target = task.make_sample(textured_images(1)[0], np.random.default_rng(0))
    assert inputs.shape == (3, 3, 16, 16) and target.tolist() == [0, 0, 0]


def test_loss_metric_and_holdout():
    task = create_task("exemplar", image_size=32)
    items = task.prepare(textured_images(12), 0)
    held = task.holdout_items(items, textured_images(2, seed=9))
    assert len(held) == 8 and np.array_equal(held, items[:8])  # a prefix: index == surrogate class
    target = torch.tensor([[0, 0], [2, 2]])
    perfect = torch.eye(3)[[0, 0, 2, 2]] * 20
    assert task.metric(perfect, target) == (4.0, 4)
    assert task.loss(perfect, target).item() < 1e-6
    assert task.metric(perfect.roll(1, dims=1), target) == (0.0, 4)


def test_render_and_preview():
    task = create_task("exemplar", image_size=32)
    images = textured_images(4)
    items = task.prepare(images, 0)
    inputs, target = task.make_item(1, items[1], np.random.default_rng(0))
    img = task.render(inputs, target)
    assert img.width > 4 * 100 and img.height > 100 and np.asarray(img)[-15:-5].max() > 200
    assert to_image(inputs[0]).size == (16, 16)
    preview = task.render_preview(images, 3, 0)
    assert preview.height > 3 * 100 and preview.width > 6 * 100  # 3 rows: image, seed, 4 copies


def test_config_validation_and_paper_defaults():
    with pytest.raises(ConfigError, match="scale_min"):
        make_config(ExemplarConfig, {"scale_min": 0.9, "scale_max": 0.8})
    with pytest.raises(ConfigError, match="rotation"):
        make_config(ExemplarConfig, {"rotation": 400.0})
    with pytest.raises(ConfigError, match="contrast_pca"):
        make_config(ExemplarConfig, {"contrast_pca": "image"})
    cfg = ExemplarConfig()
    assert (cfg.classes, cfg.translation, cfg.scale_min, cfg.scale_max, cfg.rotation) == (8000, 0.2, 0.7, 1.4, 20.0)
    assert (cfg.contrast_min, cfg.contrast_max, cfg.power_min, cfg.power_max) == (0.5, 2.0, 0.25, 4.0)
    assert (cfg.sv_factor_min, cfg.sv_factor_max, cfg.sv_shift, cfg.hue_shift) == (0.7, 1.4, 0.1, 0.1)
    assert get_task("exemplar").optim.lr == 0.01
    # patch size follows the image size: 1/3 of it, at least 16 px
    assert create_task("exemplar", image_size=96).patch == 32
    assert create_task("exemplar", image_size=64).patch == 21
    assert create_task("exemplar", image_size=16).patch == 16
