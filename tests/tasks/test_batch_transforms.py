"""The transforms (``make_batch``) of jigsaw, context, colorization, inpainting and autoencoder.

Each is checked against plain numpy/PIL oracles (``tests/tasks/reference.py``): shapes, dtypes,
normalisation, label semantics, distributions of the random choices; each keeps its task's
invariant and draws all randomness from the generator it is given.
"""

import numpy as np
import pytest
import torch

from sslstudio.tasks import create_task
from sslstudio.tasks.base import to_tensor
from sslstudio.tasks.colorization import lightness_of
from sslstudio.tasks.context import OFFSETS
from sslstudio.tasks.decoders import normalise, unnormalise
from sslstudio.tasks.inpainting import center_mask, dilate, random_block_masks
from sslstudio.tasks.lab import rgb8_to_lab, rgb_to_lab_np
from sslstudio.tasks.patches import crop_batch, pixelate_batch, pixelation_matrices
from tests.tasks.reference import (batch, crop, crop_channels, greyscale, noise_images, pixelate, random_block_mask,
                                   sample, standardise)


def roughly_uniform(labels: torch.Tensor, classes: int, tolerance: float = 0.3) -> bool:
    counts = torch.bincount(labels.reshape(-1), minlength=classes).double()
    expected = labels.numel() / classes
    return len(counts) == classes and bool(((counts - expected).abs() <= tolerance * expected).all())


CASES = [("jigsaw", {}), ("context", {}), ("context", {"colour": "project"}), ("colorization", {}),
         ("inpainting", {}), ("inpainting", {"mask": "center"}), ("inpainting", {"mask": "random_blocks"}),
         ("autoencoder", {}),
         ("autoencoder", {"corruption": "gaussian"})]
RANDOM = {"jigsaw", "context", "autoencoder", "colorization"}  # the centre mask draws nothing
#: Colorization without its random crop and mirror: a plain function of each whole image.
PLAIN_COLOUR = {"crop_fraction": 1.0, "mirror": False}


# -- all five ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", CASES)
def test_batch_leads_with_the_item_and_a_sample_has_one_items_shape(name, options):
    task = create_task(name, options, image_size=32)
    images = noise_images(6)
    inputs, target = batch(task, images)
    one_inputs, one_target = sample(task, images[0])
    assert inputs.shape == (6, *one_inputs.shape) and target.shape == (6, *one_target.shape)
    assert inputs.dtype == torch.float32
    assert target.dtype == (torch.float32 if task.metric_name == "psnr" or name == "colorization" else torch.long)
    assert torch.isfinite(inputs).all() and torch.isfinite(target.float()).all()


@pytest.mark.parametrize("name,options", CASES)
def test_batch_is_a_function_of_the_generator_seed(name, options):
    task = create_task(name, options, image_size=32)
    images = noise_images(8)
    a, ta = batch(task, images, seed=3)
    b, tb = batch(task, images, seed=3)
    c, tc = batch(task, images, seed=4)
    assert torch.equal(a, b) and torch.equal(ta, tb)
    random = name in RANDOM or (name == "inpainting" and options.get("mask") != "center")
    if random:
        assert not (torch.equal(a, c) and torch.equal(ta, tc))
    else:
        assert torch.equal(a, c) and torch.equal(ta, tc)


@pytest.mark.parametrize("name,options", CASES)
def test_batch_on_a_device_equals_the_cpu_batch(name, options):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    task = create_task(name, options, image_size=32)
    images = torch.from_numpy(noise_images(8))
    cpu = task.make_batch(images, torch.Generator().manual_seed(1))
    gpu = task.make_batch(images.cuda(), torch.Generator().manual_seed(1))
    assert gpu[0].device.type == "cuda" and gpu[1].device.type == "cuda"
    assert torch.allclose(cpu[0], gpu[0].cpu(), atol=1e-3) and torch.allclose(cpu[1].float(), gpu[1].cpu().float(),
                                                                              atol=1e-3)


# -- patch helpers ----------------------------------------------------------------------------
def test_crop_batch_equals_crop_and_crop_channels():
    images = noise_images(3, size=20)
    y = torch.tensor([[0, 5], [11, 3], [2, 2]])
    x = torch.tensor([[4, 0], [11, 7], [9, 1]])
    shifts = torch.randint(-3, 4, (3, 2, 3, 2), generator=torch.Generator().manual_seed(0))
    plain = crop_batch(torch.from_numpy(images), y, x, 9)
    shifted = crop_batch(torch.from_numpy(images), y, x, 9, shifts)
    assert plain.shape == (3, 2, 3, 9, 9) and plain.dtype == torch.uint8
    for b in range(3):
        for n in range(2):
            expected = crop(images[b], int(y[b, n]), int(x[b, n]), 9)
            assert np.array_equal(plain[b, n].permute(1, 2, 0).numpy(), expected)
            expected = crop_channels(images[b], int(y[b, n]), int(x[b, n]), 9, shifts[b, n].numpy())
            assert np.array_equal(shifted[b, n].permute(1, 2, 0).numpy(), expected)
    with pytest.raises(ValueError):
        crop_batch(torch.from_numpy(images), y + 1, x, 9)  # 11 + 9 > 20


def test_pixelate_batch_is_pil_pixelate_within_two_levels():
    size = 15
    sides = list(range(3, size + 1))
    down, up = pixelation_matrices(size, sides)
    patches = noise_images(len(sides), size=size, seed=2)
    out = pixelate_batch(torch.from_numpy(patches).permute(0, 3, 1, 2), down, up)
    for k, side in enumerate(sides):
        expected = pixelate(patches[k], side).astype(np.float32)
        got = out[k].permute(1, 2, 0).numpy()
        assert np.abs(got - expected).max() <= 2.0, side
    assert np.array_equal(out[-1].permute(1, 2, 0).numpy(), patches[-1])  # side = size: untouched


# -- jigsaw -----------------------------------------------------------------------------------
def test_jigsaw_tiles_put_back_by_argsort_restore_the_cells():
    """Tiles filling their cells (no gap, no jitter): undoing perm[label] gives the cells in order."""
    task = create_task("jigsaw", {"tile_fraction": 1.0, "channel_jitter": 0.0, "greyscale_probability": 0.0,
                                  "permutations": 20}, image_size=30)
    images = noise_images(12, size=30, seed=1)
    inputs, target = batch(task, images, seed=0)
    assert inputs.shape == (12, 9, 3, 10, 10) and target.shape == (12,)
    for b in range(12):
        perm = task.permutations[int(target[b])]
        solved = task.solve(inputs[b], perm)
        for c in range(9):
            r, k = divmod(c, 3)
            cell = images[b, r * 10:(r + 1) * 10, k * 10:(k + 1) * 10]
            expected = torch.from_numpy(standardise(cell, per_channel_std=True)).permute(2, 0, 1)
            assert torch.allclose(solved[c], expected, atol=1e-4), (b, c)
            assert torch.allclose(inputs[b, list(perm).index(c)], expected, atol=1e-4)


@pytest.mark.parametrize("size,jitter", [(32, 2 / 64), (64, 0.25)])
def test_jigsaw_input_i_is_the_tile_of_cell_perm_i(size, jitter):
    """Rebuilt from the batch's drawn geometry with the numpy oracles."""
    task = create_task("jigsaw", {"channel_jitter": jitter, "greyscale_probability": 0.5}, image_size=size)
    images = noise_images(10, size=size, seed=5)
    inputs, target = batch(task, images, seed=9)
    r = task.batch_geometry(size, 10, torch.Generator().manual_seed(9))  # the same draws
    assert torch.equal(r["label"], target)
    assert 0 < int(r["grey"].sum()) < 10 and (task.shift > 0) == bool(r["shifts"].abs().sum() > 0)
    for b in range(10):
        perm = task.permutations[int(target[b])]
        for i in range(9):
            c = int(perm[i])
            row, col = divmod(c, 3)
            y = int(r["origin"][b, 0]) + row * task.cell + int(r["offsets"][b, c, 0])
            x = int(r["origin"][b, 1]) + col * task.cell + int(r["offsets"][b, c, 1])
            tile = crop_channels(images[b], y, x, task.tile, r["shifts"][b, c].numpy())
            if r["grey"][b]:
                tile = greyscale(tile)
            expected = torch.from_numpy(standardise(tile, per_channel_std=True)).permute(2, 0, 1)
            assert torch.allclose(inputs[b, i], expected, atol=1e-4), (b, i)


def test_jigsaw_batch_tiles_are_standardised_per_tile_and_channel_and_grey_at_the_rate():
    task = create_task("jigsaw", image_size=32)
    images = noise_images(400, seed=3)
    inputs, target = batch(task, images)
    assert inputs.mean(dim=(-2, -1)).abs().max() < 1e-4
    assert (inputs.std(dim=(-2, -1), unbiased=False) - 1).abs().max() < 1e-3
    grey = (inputs[:, :, 0] == inputs[:, :, 1]).all(-1).all(-1).all(-1) & (inputs[:, :, 1] == inputs[:, :, 2]).all(
        -1).all(-1).all(-1)
    assert 0.2 < float(grey.float().mean()) < 0.4  # greyscale_probability 0.3


def test_jigsaw_labels_cover_the_permutation_set_uniformly():
    task = create_task("jigsaw", {"permutations": 10}, image_size=18)
    _, target = batch(task, noise_images(3000, size=18))
    assert int(target.min()) == 0 and int(target.max()) == 9
    assert roughly_uniform(target, 10)


def test_jigsaw_grid_offset_and_tile_positions_are_uniform():
    task = create_task("jigsaw", image_size=32)  # 3 * 10 px cells in 32 px: grid offset 0..2
    r = task.batch_geometry(32, 3000, torch.Generator().manual_seed(0))
    assert set(r["origin"].unique().tolist()) == {0, 1, 2}
    assert set(r["offsets"].unique().tolist()) == set(range(task.cell - task.tile + 1))
    assert roughly_uniform(r["origin"], 3, 0.1)


# -- context ----------------------------------------------------------------------------------
def locate(image: np.ndarray, patch: torch.Tensor, side: int) -> tuple[int, int]:
    """Top-left pixel of the window of a noise image whose standardised crop is ``patch``."""
    windows = np.lib.stride_tricks.sliding_window_view(image, (side, side), axis=(0, 1))  # [h, w, 3, p, p]
    windows = np.moveaxis(windows, 2, -1)  # [h, w, p, p, 3]
    std = standardise(windows, per_channel_std=False)
    d = np.abs(std - patch.permute(1, 2, 0).numpy()).reshape(*std.shape[:2], -1).max(-1)
    y, x = np.unravel_index(np.argmin(d), d.shape)
    assert d[y, x] < 1e-3  # an exact match
    return int(y), int(x)


@pytest.mark.slow
@pytest.mark.parametrize("jitter", [0.0, 7 / 96])
def test_context_neighbour_lies_at_the_labelled_offset(jitter):
    task = create_task("context", {"colour": "none", "pixelation_probability": 0.0, "jitter_fraction": jitter},
                       image_size=64)
    images = noise_images(24, size=64, seed=4)
    inputs, target = batch(task, images, seed=2)
    j = task.jitter
    assert (j == 0) == (jitter == 0)
    for b in range(24):
        centre = locate(images[b], inputs[b, 0], task.patch)
        neighbour = locate(images[b], inputs[b, 1], task.patch)
        dr, dc = OFFSETS[int(target[b])]
        dy, dx = neighbour[0] - centre[0] - dr * task.step, neighbour[1] - centre[1] - dc * task.step
        assert abs(dy) <= 2 * j and abs(dx) <= 2 * j, (b, int(target[b]))
        if j == 0:
            assert (dy, dx) == (0, 0)


def test_context_batch_matches_its_choices_with_the_oracles():
    """Pixelation (PIL within 2 levels), no colour handling: rebuilt from the drawn choices with the oracles."""
    task = create_task("context", {"colour": "none", "pixelation_probability": 0.5}, image_size=64)
    images = noise_images(20, size=64, seed=6)
    inputs, target = batch(task, images, seed=1)
    r = task.batch_choices(64, 20, torch.Generator().manual_seed(1))
    assert torch.equal(r["label"], target)
    pixelated = r["side"] < task.patch
    assert 0 < int(pixelated.sum()) < 40
    assert int(r["side"][pixelated].min()) >= task.min_side
    for b in range(20):
        cell0 = r["origin"][b] + task.jitter
        off = torch.tensor(OFFSETS[int(target[b])])
        positions = [cell0 + task.step + r["jitters"][b, 0], cell0 + (1 + off) * task.step + r["jitters"][b, 1]]
        for k, (y, x) in enumerate(positions):
            raw = crop(images[b], int(y), int(x), task.patch)
            side = int(r["side"][b, k])
            patch = pixelate(raw, side) if side < task.patch else raw
            expected = torch.from_numpy(standardise(patch, per_channel_std=False)).permute(2, 0, 1)
            tolerance = 1e-4 if side == task.patch else 2.5 / 255 / max(float(patch.std()) / 255, 1e-2) + 1e-3
            assert torch.allclose(inputs[b, k], expected, atol=tolerance), (b, k, side)


def test_context_colour_dropping_keeps_a_uniform_channel_with_faint_noise():
    task = create_task("context", {"pixelation_probability": 0.0}, image_size=32)
    images = noise_images(600, seed=7)
    inputs, _ = batch(task, images)
    std = inputs.flatten(-2).std(-1)  # [B, 2, 3]
    kept = std.argmax(-1)
    ratio = std.max(-1).values / std.sort(-1).values[..., 1]
    assert float(ratio.min()) > 30  # the others: noise of 1/100 of the kept channel's deviation
    assert roughly_uniform(kept, 3, 0.15)
    others = std.sort(-1).values[..., :2] / std.max(-1).values[..., None]
    assert 0.005 < float(others.mean()) < 0.015  # drop_noise 0.01


def test_context_patches_are_normalised_each_on_its_own():
    task = create_task("context", {"colour": "project"}, image_size=32)
    inputs, _ = batch(task, noise_images(50, seed=8))
    assert inputs.mean(dim=(-2, -1)).abs().max() < 1e-4  # zero mean per channel
    assert (inputs.flatten(2).std(-1, unbiased=False) - 1).abs().max() < 1e-3  # one deviation per patch
    assert not torch.allclose(inputs.flatten(3).std(-1), torch.ones(1), atol=0.05)  # not per channel


def test_context_labels_and_pixelation_follow_the_configured_distributions():
    task = create_task("context", image_size=64)
    r = task.batch_choices(64, 4000, torch.Generator().manual_seed(0))
    assert roughly_uniform(r["label"], 8, 0.15)
    assert abs(float((r["side"] < task.patch).float().mean()) - 1 / 3) < 0.03
    sides = r["side"][r["side"] < task.patch]
    assert set(sides.unique().tolist()) == set(range(task.min_side, task.patch))
    _, target = batch(task, noise_images(2000, size=64, seed=1))
    assert roughly_uniform(target, 8)


# -- colorization -----------------------------------------------------------------------------
def test_colorization_images_are_made_each_on_its_own_and_greys_carry_no_loss():
    task = create_task("colorization", PLAIN_COLOUR, image_size=32)
    images = noise_images(5, seed=9)
    images[1] = images[1, :, :, :1]  # a greyscale image: no loss
    images[2] = 0
    images[3] = 255
    inputs, target = batch(task, images)
    for b in range(5):  # no image's sample depends on the others of its batch
        alone = sample(task, images[b])
        assert torch.allclose(inputs[b], alone[0], atol=1e-6) and torch.allclose(target[b], alone[1], atol=1e-6)
    assert target[:, 2].amax(dim=(1, 2)).tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_colorization_batch_round_trips_through_lab():
    task = create_task("colorization", PLAIN_COLOUR, image_size=32)
    images = noise_images(4, seed=10)
    inputs, target = batch(task, images)
    lab = rgb_to_lab_np(images)  # [B, S, S, 3], the numpy reference
    assert np.allclose(rgb8_to_lab(torch.from_numpy(images)).numpy(), lab, atol=1e-4)
    for b in range(4):
        assert np.allclose(lightness_of(inputs[b])[0].numpy(), lab[b, ..., 0], atol=0.05)
        ab = lab[b, 0::4, 0::4, 1:]  # the 8 x 8 target: pixels 0, 4, 8, ... (point samples)
        assert np.allclose(target[b, :2].permute(1, 2, 0).numpy(), ab, atol=1e-3)
    grey = unnormalise(inputs)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])


# -- inpainting -------------------------------------------------------------------------------
def test_inpainting_centre_batch_is_the_image_with_the_centre_dropped():
    task = create_task("inpainting", {"mask": "center"}, image_size=32)
    images = noise_images(4)
    inputs, target = batch(task, images)
    original = torch.stack([to_tensor(img) for img in images])
    hole = torch.from_numpy(center_mask(32))
    assert torch.allclose(target[:, :3], original, atol=1e-6)
    assert torch.allclose(inputs, original * ~hole, atol=1e-6)
    band = torch.from_numpy(dilate(center_mask(32), task.overlap_px())) & ~hole
    assert torch.equal(target[:, 4], torch.where(hole, 1.0, torch.where(band, 10.0, 0.0)).expand(4, 32, 32))
    assert torch.equal(target[:, 3] > 0.5, hole.expand(4, 32, 32)) and float(target[0, 3].mean()) == 0.25


@pytest.mark.parametrize("coverage,block", [(0.25, 0.125), (0.4, 0.2)])
def test_inpainting_random_blocks_zero_the_hole_and_weigh_the_band(coverage, block):
    task = create_task("inpainting", {"mask": "random_blocks", "coverage": coverage, "block_size": block},
                       image_size=32)
    images = noise_images(16, seed=11)
    inputs, target = batch(task, images, seed=5)
    k = int(round(block * 32))
    for b in range(16):
        original = to_tensor(images[b])
        hole = target[b, 3] > 0.5
        assert torch.equal(target[b, 3], hole.float())
        assert coverage - k * k / 32**2 < float(hole.float().mean()) <= coverage
        assert torch.allclose(target[b, :3], original, atol=1e-6)
        assert torch.equal(inputs[b][:, hole], torch.zeros(3, int(hole.sum())))
        assert torch.allclose(inputs[b][:, ~hole], original[:, ~hole], atol=1e-6)
        band = torch.from_numpy(dilate(hole.numpy(), task.overlap_px())) & ~hole
        expected = torch.where(hole, 1.0, torch.where(band, 10.0, 0.0))
        assert torch.equal(target[b, 4], expected)
        ys, xs = torch.nonzero(hole, as_tuple=True)  # blocks, not a centre square
        assert len(ys) > 0


def test_random_block_masks_have_the_plain_procedures_distribution():
    n, size, k = 300, 32, 4
    masks, grown = random_block_masks(n, size, 0.25, k, torch.Generator().manual_seed(0), band=2)
    rng = np.random.default_rng(0)
    reference = np.stack([random_block_mask(size, 0.25, k, rng) for _ in range(n)])
    for m in range(5):
        assert np.array_equal(dilate(masks[m].numpy(), 2), grown[m].numpy())
    cover, ref_cover = masks.float().mean(dim=(1, 2)), reference.mean(axis=(1, 2))
    assert abs(float(cover.mean()) - float(ref_cover.mean())) < 0.002
    assert float(cover.min()) > 0.25 - k * k / size**2 and float(cover.max()) <= 0.25
    # where holes fall: a pixel's frequency, border ring against the inside, as in the plain procedure
    freq, ref_freq = masks.float().mean(0).numpy(), reference.mean(0)
    ring = np.ones((size, size), bool)
    ring[k:-k, k:-k] = False
    assert abs(freq[ring].mean() - ref_freq[ring].mean()) < 0.02
    assert abs(freq[~ring].mean() - ref_freq[~ring].mean()) < 0.02
    assert freq[~ring].mean() > freq[ring].mean()  # uniform block positions cover the inside more


# -- autoencoder ------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.4])
def test_autoencoder_masking_blacks_out_exactly_the_configured_fraction(fraction):
    task = create_task("autoencoder", {"mask_fraction": fraction}, image_size=32)
    images = noise_images(64, seed=12, low=1)  # no black pixels of their own
    inputs, target = batch(task, images)
    clean = torch.stack([to_tensor(img) for img in images])
    assert torch.allclose(target, clean, atol=1e-6)
    pixels = unnormalise(inputs)
    black = (pixels.abs() < 1e-5).all(dim=1)  # [B, S, S]
    assert (black.sum(dim=(1, 2)) == round(fraction * 32 * 32)).all()
    kept = ~black[:, None].expand_as(inputs)
    assert torch.allclose(inputs[kept], clean[kept], atol=1e-5)
    assert abs(float(black.float().mean(0).std()) - (fraction * (1 - fraction) / 64) ** 0.5) < 0.02  # uniform


def test_autoencoder_gaussian_noise_has_the_configured_sigma_and_is_clipped():
    task = create_task("autoencoder", {"corruption": "gaussian", "noise_std": 0.1}, image_size=32)
    mid = np.full((32, 32, 32, 3), 128, np.uint8)
    inputs, target = batch(task, mid)
    noise = unnormalise(inputs) - unnormalise(target)
    assert abs(float(noise.std()) - 0.1) < 0.003 and abs(float(noise.mean())) < 0.003
    white = np.full((4, 32, 32, 3), 255, np.uint8)
    inputs, _ = batch(task, white)
    pixels = unnormalise(inputs)
    assert float(pixels.max()) <= 1.0 + 1e-5 and float(pixels.min()) < 0.9
    assert torch.allclose(normalise(pixels.clamp(0, 1)), inputs, atol=1e-5)
