import math

import numpy as np
import pytest
import torch
from torch import nn

from sslstudio.errors import ConfigError
from sslstudio.models.normalise import denormalise
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


def batch(task, items, seed=0, index=None):
    """``make_batch`` of uint8 items (all of them, labelled by their position unless ``index`` is given)."""
    images = torch.from_numpy(np.ascontiguousarray(items))
    index = torch.arange(len(items)) if index is None else torch.as_tensor(index)
    return task.make_batch(images, torch.Generator().manual_seed(seed), index)


def transformed(task, region, n, seed):
    """``n`` transformed copies of one uint8 region: (float RGB [n, P, P, 3] in [0, 1], the drawn params)."""
    params = task.draw(n, torch.Generator().manual_seed(seed))
    regions = torch.from_numpy(region)[None].expand(n, *region.shape)
    return task.transform(regions, params).permute(0, 2, 3, 1).numpy(), {k: v.numpy() for k, v in params.items()}


def test_label_is_the_seed_index_for_every_copy():
    task = create_task("exemplar", image_size=32)
    items = task.prepare(textured_images(), 0)
    assert items.shape == (6, task.region, task.region, 3) and task.patch == 16 and task.region == 32
    inputs, target = batch(task, items[[4, 0, 2]], index=[4, 0, 2])
    assert inputs.shape == (3, 4, 3, 16, 16) and inputs.dtype == torch.float32
    assert target.dtype == torch.long and target.tolist() == [[4] * 4, [0] * 4, [2] * 4]
    model = task.build_head(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)), 10)
    assert model.classifier.out_features == 6
    assert model(inputs[:2]).shape == (8, 6)
    with pytest.raises(ValueError, match="indices"):
        task.make_batch(torch.from_numpy(items), torch.Generator().manual_seed(0))


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


def test_prepare_and_batches_are_deterministic_for_a_seed():
    images = textured_images(8)
    a, b = create_task("exemplar", {"classes": 5}, image_size=32), create_task("exemplar", {"classes": 5},
                                                                              image_size=32)
    ia, ib = a.prepare(images, 1), b.prepare(images, 1)
    assert np.array_equal(ia, ib) and np.array_equal(a.sources, b.sources)
    x1, t1 = batch(a, ia, seed=7)
    x2, t2 = batch(b, ib, seed=7)
    assert torch.equal(x1, x2) and torch.equal(t1, t2)
    x3, _ = batch(a, ia, seed=8)
    assert not torch.equal(x1, x3)
    for k in range(1, 4):  # the copies of a seed are different transformations
        assert not torch.allclose(x1[:, 0], x1[:, k])
    c = create_task("exemplar", {"classes": 5}, image_size=32)
    ic = c.prepare(images, 2)
    assert not np.array_equal(ia, ic)  # another seed, other seed patches


def test_batch_is_the_drawn_transformations_normalised():
    task = create_task("exemplar", {"copies": 3}, image_size=32)
    items = task.prepare(textured_images(5), 0)
    inputs, _ = batch(task, items, seed=4)
    params = task.draw(5 * 3, torch.Generator().manual_seed(4))  # the same draws, in the same order
    rgb = task.transform(torch.from_numpy(items).repeat_interleave(3, 0), params)
    assert torch.allclose(denormalise(inputs.flatten(0, 1)), rgb, atol=1e-5)
    assert 0.0 <= float(rgb.min()) and float(rgb.max()) <= 1.0


def test_identity_transform_returns_the_seed():
    task = only()
    items = textured_images(3, 64)
    inputs, _ = batch(task, items)
    seeds = torch.from_numpy(np.stack([task.centre(r) for r in items])).float()
    pixels = denormalise(inputs).permute(0, 1, 3, 4, 2) * 255  # [3, copies, P, P, 3]
    assert (pixels - seeds[:, None]).abs().max() < 1e-3


def test_rotation_stays_within_range():
    task = only(rotation=20.0)
    region = np.zeros((64, 64, 3), np.uint8)
    region[31:33, 8:56] = 255  # a horizontal bar through the centre
    out, params = transformed(task, region, 25, 0)
    angles = []
    for k in range(25):
        cx, cy, measured = moments(out[k].mean(2))
        assert abs(measured - params["angle"][k]) < 2.0
        assert abs(measured) <= 21.0 and abs(cx - 16) < 0.5 and abs(cy - 16) < 0.5
        angles.append(measured)
    assert max(np.abs(angles)) > 10  # the range is really used


def test_translation_stays_within_range():
    task = only(translation=0.2)
    region = np.zeros((64, 64, 3), np.uint8)
    region[30:34, 30:34] = 255  # a dot at the centre
    out, params = transformed(task, region, 20, 1)
    for k in range(20):
        cx, cy, _ = moments(out[k].mean(2))
        assert abs(cx - 16 - params["tx"][k]) < 0.3 and abs(cy - 16 - params["ty"][k]) < 0.3
        assert max(abs(cx - 16), abs(cy - 16)) <= 0.2 * 32 + 0.3
    assert np.abs(params["tx"]).max() > 0.1 * 32


def test_scaling_stays_within_range():
    task = only(scale_min=0.7, scale_max=1.4)
    region = np.zeros((64, 64, 3), np.uint8)
    region[28:36, 28:36] = 255  # an 8 px square
    out, params = transformed(task, region, 20, 2)
    for k in range(20):
        side = math.sqrt(out[k].mean(2).sum()) / 8
        assert 0.7 - 0.03 <= side <= 1.4 + 0.03 and abs(side - params["scale"][k]) < 0.05


def hsv_of(rgb: np.ndarray) -> np.ndarray:
    """HSV [..., H, W, 3] of float RGB [..., H, W, 3] (through the task's torch conversion)."""
    return rgb_to_hsv(torch.from_numpy(np.ascontiguousarray(rgb)).movedim(-1, -3)).movedim(-3, -1).numpy()


def test_colour_transforms_stay_within_range():
    region = np.zeros((64, 64, 3), np.uint8)
    region[..., 0] = 200
    region[..., 1] = np.linspace(40, 160, 64)[None, :]
    region[..., 2] = 60  # saturated, varied hues
    hsv_in = hsv_of(region[16:48, 16:48].astype(np.float32) / 255)
    out, params = transformed(only(hue_shift=0.1), region, 10, 3)
    hsv = hsv_of(out)
    shift = (hsv[..., 0] - hsv_in[..., 0] + 0.5) % 1.0 - 0.5
    assert np.abs(shift - params["hue"][:, None, None]).max() < 1e-4 and np.abs(params["hue"]).max() <= 0.1
    assert np.abs(hsv[..., 1:] - hsv_in[..., 1:]).max() < 1e-4  # S and V untouched
    sv_task = only(power_min=0.25, power_max=4.0, sv_factor_min=0.7, sv_factor_max=1.4, sv_shift=0.1)
    out, params = transformed(sv_task, region, 10, 4)
    assert np.all((params["power"] >= 0.25) & (params["power"] <= 4.0))
    assert np.all((params["sv_factor"] >= 0.7) & (params["sv_factor"] <= 1.4))
    assert np.all(np.abs(params["sv_shift"]) <= 0.1)
    hsv = hsv_of(out)
    per = {k: params[k][:, None, None, :] for k in ("power", "sv_factor", "sv_shift")}
    expected = np.clip(hsv_in[..., 1:] ** per["power"] * per["sv_factor"] + per["sv_shift"], 0, 1)
    assert np.abs(hsv[..., 1:] - expected).max() < 1e-4
    hue_moved = (hsv[..., 0] - hsv_in[..., 0] + 0.5) % 1.0 - 0.5
    assert np.abs(hue_moved[hsv[..., 1] > 0.05]).max() < 1e-3  # hue kept where it is defined


@pytest.mark.parametrize("mode", ["patch", "dataset"])
def test_contrast_scales_principal_component_projections(mode):
    task = only(contrast_min=0.5, contrast_max=2.0, contrast_pca=mode)
    rng = np.random.default_rng(4)
    region = (rng.random((64, 64, 3)) * 80 + 90).astype(np.uint8)  # mid-range: nothing clips
    seed_rgb = task.centre(region).astype(np.float32) / 255
    if mode == "dataset":  # the components of all seed pixels, as prepare computes them
        task.pca = colour_pca(np.stack([seed_rgb, 1.0 - seed_rgb]))
    mean, vecs = task.pca if mode == "dataset" else colour_pca(seed_rgb)
    before = (seed_rgb - mean) @ vecs
    out, params = transformed(task, region, 10, 5)
    assert np.all((params["contrast"] >= 0.5) & (params["contrast"] <= 2.0))
    for k in range(10):
        after = (out[k] - mean) @ vecs
        ratio = (after * before).sum((0, 1)) / (before * before).sum((0, 1))
        assert np.allclose(ratio, params["contrast"][k], rtol=1e-3)


def test_hsv_roundtrip():
    rgb = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-6)
    pure = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]]).T[:, :, None]
    assert torch.allclose(rgb_to_hsv(pure)[:, :, 0].T, torch.tensor([[0.0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1],
                                                                        [0, 0, 0.5]]))


def test_make_batch_without_prepare():
    task = create_task("exemplar", {"copies": 3}, image_size=32)
    assert task.samples_per_image == 3 and task.pca is None  # dataset components unknown: each patch's own
    inputs, target = batch(task, textured_images(2), index=[5, 1])
    assert inputs.shape == (2, 3, 3, 16, 16) and target.tolist() == [[5] * 3, [1] * 3]
    assert torch.isfinite(inputs).all()


def test_batch_on_a_device_equals_the_cpu_batch():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    for options in ({}, {"contrast_pca": "patch"}):
        task = create_task("exemplar", options, image_size=32)
        items = torch.from_numpy(task.prepare(textured_images(8), 0))
        index = torch.arange(8)
        cpu = task.make_batch(items, torch.Generator().manual_seed(1), index)
        gpu = task.make_batch(items.cuda(), torch.Generator().manual_seed(1), index.cuda())
        assert gpu[0].device.type == "cuda" and gpu[1].device.type == "cuda"
        assert torch.allclose(cpu[0], gpu[0].cpu(), atol=1e-3) and torch.equal(cpu[1], gpu[1].cpu())


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
    inputs, target = batch(task, items)
    img = task.render(inputs[1], target[1])
    assert img.width > 4 * 100 and img.height > 100 and np.asarray(img)[-15:-5].max() > 200
    assert to_image(inputs[1, 0]).size == (16, 16)
    preview = task.render_preview(images, items, torch.arange(3), inputs[:3], target[:3], 0)
    assert preview.height > 3 * 100 and preview.width > 6 * 100  # 3 rows: image, seed, 4 copies
    # the copies drawn are the batch's inputs: a changed input changes the picture
    changed = task.render_preview(images, items, torch.arange(3), -inputs[:3], target[:3], 0)
    assert not np.array_equal(np.asarray(preview), np.asarray(changed))


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
