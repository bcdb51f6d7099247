import math

import numpy as np
import pytest
import torch

from sslstudio.errors import ConfigError
from sslstudio.models import build_backbone
from sslstudio.tasks import create_task, get_task
from sslstudio.tasks.base import make_config, to_tensor
from sslstudio.tasks.decoders import PSNR_CAP_DB, normalise
from sslstudio.tasks.inpainting import InpaintingConfig, center_mask, random_block_masks
from tests.tasks.reference import sample


def image(size=32, seed=0):
    return np.random.default_rng(seed).integers(40, 216, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_center_mask_is_the_central_quarter(size):
    mask = center_mask(size)
    assert mask.sum() == size * size // 4
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (size // 4, 3 * size // 4, size // 4, 3 * size // 4)


def test_center_sample_drops_the_hole_and_keeps_the_rest():
    task = create_task("inpainting", image_size=32)
    img = image()
    inputs, target = sample(task, img, 0)
    assert inputs.shape == (3, 32, 32) and target.shape == (5, 32, 32)
    original = to_tensor(img)
    hole = target[3] > 0.5
    assert int(hole.sum()) == 32 * 32 // 4
    assert torch.all(inputs[:, hole] == 0)  # the dataset mean after normalisation
    assert torch.equal(inputs[:, ~hole], original[:, ~hole])
    assert torch.equal(target[:3], original)


def test_overlap_band_scales_with_the_image_and_weighs_ten():
    for size, px in ((32, 2), (64, 4), (128, 7)):
        task = create_task("inpainting", image_size=size)
        assert task.overlap_px() == px
        _, target = sample(task, image(size), 0)
        weight, hole = target[4], target[3] > 0.5
        assert torch.all(weight[hole] == 1.0)
        band = (weight == 10.0)
        assert int(band.sum()) == (size // 2 + 2 * px) ** 2 - (size // 2) ** 2
        assert int((weight > 0).sum()) == (size // 2 + 2 * px) ** 2
    off = create_task("inpainting", {"overlap": 0.0}, image_size=32)
    _, target = sample(off, image(), 0)
    assert torch.equal(target[4] > 0, target[3] > 0.5)


@pytest.mark.parametrize("coverage, block", [(0.25, 0.125), (0.1, 0.25), (0.5, 0.0625)])
def test_random_blocks_stay_in_bounds_and_cover_the_configured_fraction(coverage, block):
    size = 32
    side = int(round(block * size))
    holes, _ = random_block_masks(20, size, coverage, side, torch.Generator().manual_seed(0))
    assert holes.shape == (20, size, size)
    for frac in holes.double().mean(dim=(1, 2)).tolist():
        assert coverage - side * side / size ** 2 < frac <= coverage + 1e-12
    task = create_task("inpainting", {"mask": "random_blocks", "coverage": coverage, "block_size": block},
                       image_size=size)
    masks = [sample(task, image(), i)[1][3] > 0.5 for i in range(4)]
    assert not all(torch.equal(masks[0], m) for m in masks[1:])  # random per sample
    assert all(coverage - side * side / size ** 2 < float(m.float().mean()) <= coverage for m in masks)


def test_loss_ignores_pixels_outside_the_loss_region():
    task = create_task("inpainting", image_size=32)
    batch = [sample(task, image(seed=i), i) for i in range(2)]
    target = torch.stack([t for _, t in batch])
    out = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    region = (target[:, 4:5] > 0).expand(-1, 3, -1, -1)
    changed = out.clone()
    changed[~region] += 7.0
    assert torch.isclose(task.loss(out, target), task.loss(changed, target))
    inside = out.clone()
    inside[region] += 0.5
    assert not torch.isclose(task.loss(out, target), task.loss(inside, target))
    assert task.loss(target[:, :3], target).item() == 0.0
    # weighted mean: a unit error in the hole only vs in the band only
    hole_err = target[:, :3] + (target[:, 3:4] > 0.5).float()
    band_err = target[:, :3] + ((target[:, 4:5] > 0) & (target[:, 3:4] < 0.5)).float()
    w = target[:, 4:5]
    assert torch.isclose(task.loss(hole_err, target), (w == 1).sum() / w.sum())
    assert torch.isclose(task.loss(band_err, target), 10 * (w == 10).sum() / w.sum())


def test_psnr_of_perfect_and_known_error_on_the_hole_only():
    task = create_task("inpainting", image_size=32)
    _, target = sample(task, image(), 0)
    target = target[None]
    total, count = task.metric(target[:, :3], target)
    assert count == 1 and total == pytest.approx(PSNR_CAP_DB)
    pixels = torch.from_numpy(image()).permute(2, 0, 1).float()[None] / 255.0
    hole = target[:, 3:4] > 0.5
    wrong = pixels + 0.1 * hole.float()  # error 0.1 in the hole
    wrong_outside = wrong + 0.3 * (~hole).float()  # errors outside the hole are not scored
    for out in (wrong, wrong_outside):
        total, count = task.metric(normalise(out), target)
        assert total == pytest.approx(10 * math.log10(1 / 0.01), abs=1e-3)


def test_render_before_and_after_training():
    task = create_task("inpainting", image_size=32)
    inputs, target = sample(task, image(), 0)
    before = task.render(inputs, target)
    assert before.width > 3 * 100 and before.height > 100
    after = task.render(inputs, target, target[:3] + 0.05)
    assert np.asarray(after).shape == np.asarray(before).shape
    assert not np.array_equal(np.asarray(after), np.asarray(before))
    blocks = create_task("inpainting", {"mask": "random_blocks"}, image_size=32)
    assert blocks.render(*sample(blocks, image(), 0)).width == before.width


@pytest.mark.parametrize("arch", ["resnet18", "resnet18_small"])
@pytest.mark.parametrize("size", [32, 64])
def test_decoder_fills_the_whole_image(arch, size):
    torch.manual_seed(0)
    task = create_task("inpainting", image_size=size)
    backbone = build_backbone(arch)
    model = task.build_head(backbone, backbone.feature_dim)
    inputs, target = zip(*[sample(task, image(size, i), i) for i in range(2)])
    out = model(torch.stack(inputs))
    assert out.shape == (2, 3, size, size)
    task.loss(out, torch.stack(target)).backward()
    assert backbone.conv1.weight.grad.abs().sum() > 0


def test_config_validation_and_paper_defaults():
    with pytest.raises(ConfigError, match="mask"):
        make_config(InpaintingConfig, {"mask": "ring"})
    with pytest.raises(ConfigError, match="coverage"):
        make_config(InpaintingConfig, {"coverage": 1.5})
    c = InpaintingConfig()
    assert (c.mask, c.coverage, c.overlap_weight) == ("center", 0.25, 10.0)
    assert round(c.overlap * 128) == 7
    assert get_task("inpainting").metric_name == "psnr"
