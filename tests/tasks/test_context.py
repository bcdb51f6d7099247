import math

import numpy as np
import pytest
import torch

from sslstudio.errors import ConfigError
from sslstudio.models import build_backbone
from sslstudio.tasks import create_task, get_task
from sslstudio.tasks.base import make_config
from sslstudio.tasks.context import DIRECTIONS, OFFSETS, ContextConfig
from sslstudio.engine.preview import preview_batch
from sslstudio.tasks.patches import GREEN_MAGENTA
from tests.tasks.reference import batch, crop, detail, sample, standardise

PLAIN = {"jitter_fraction": 0.0, "colour": "none", "pixelation_probability": 0.0}


def coded_image(size=64):
    """Red = 4 * column, green = 4 * row: every pixel says where it is."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0] = 4 * x
    img[..., 1] = 4 * y
    img[..., 2] = 60
    return img


def where(patch: np.ndarray) -> tuple[int, int]:
    """(row, column) of a coded patch's top-left pixel."""
    return int(patch[0, 0, 1]) // 4, int(patch[0, 0, 0]) // 4


def noise_image(size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_geometry_scales_with_the_image_and_fits():
    for size in (20, 32, 48, 64, 100, 398):
        task = create_task("context", image_size=size)
        p, g, j = task.patch, task.gap, task.jitter
        assert p == math.floor(size / (3 + 1 + 14 / 96)) or 3 * (p + 1) + 2 * round((p + 1) / 2) > size
        assert g == round(p / 2) and j == round(p * 7 / 96)
        assert 3 * p + 2 * g + 2 * j == task.extent <= size
    paper = create_task("context", image_size=398)
    assert (paper.patch, paper.gap, paper.jitter) == (96, 48, 7)
    assert paper.min_side == 10  # 100 total pixels
    assert create_task("context", image_size=32).min_side == 3


def positions(task, b):
    """``(cell0, centre, neighbour)`` top-left pixels where make_batch cut sample ``b`` of its last batch."""
    return [tuple(int(v) for v in task.last_positions[key][b]) for key in ("cell0", "centre", "neighbour")]


def test_label_is_the_neighbour_position():
    """Decoded from the pixels: the neighbour lies OFFSETS[label] cells from the centre."""
    task = create_task("context", PLAIN, image_size=64)
    img = coded_image(64)
    step = task.patch + task.gap
    inputs, target = batch(task, np.stack([img] * 80), 0)
    for b in range(80):
        label = int(target[b])
        _, centre, neighbour = positions(task, b)
        raw = np.stack([crop(img, *centre, task.patch), crop(img, *neighbour, task.patch)])
        assert where(raw[0]) == centre and where(raw[1]) == neighbour
        dr, dc = OFFSETS[label]
        assert (neighbour[0] - centre[0], neighbour[1] - centre[1]) == (dr * step, dc * step), DIRECTIONS[label]
        expected = torch.from_numpy(standardise(raw, per_channel_std=False)).permute(0, 3, 1, 2)
        assert torch.allclose(inputs[b], expected, atol=1e-5)
    assert set(target.tolist()) == set(range(8))


def test_direction_words_match_offsets():
    assert DIRECTIONS[0] == "top-left" and OFFSETS[0] == (-1, -1)
    assert DIRECTIONS[4] == "right" and OFFSETS[4] == (0, 1)
    assert DIRECTIONS[5] == "bottom-left" and OFFSETS[5] == (1, -1)
    assert DIRECTIONS[6] == "bottom" and OFFSETS[6] == (1, 0)
    assert len(set(OFFSETS)) == 8 and (0, 0) not in OFFSETS


def test_gap_and_jitter_bounds():
    task = create_task("context", {"colour": "none", "pixelation_probability": 0.0}, image_size=96)
    p, g, j, step = task.patch, task.gap, task.jitter, task.patch + task.gap
    assert j >= 1
    deviations = []
    _, target = batch(task, np.stack([noise_image(96, k % 3) for k in range(300)]), 0)
    for b in range(300):
        cell0, centre, neighbour = positions(task, b)
        dr, dc = OFFSETS[int(target[b])]
        for pos, (r, c) in ((centre, (1, 1)), (neighbour, (1 + dr, 1 + dc))):
            nominal = (cell0[0] + r * step, cell0[1] + c * step)
            dy, dx = pos[0] - nominal[0], pos[1] - nominal[1]
            assert abs(dy) <= j and abs(dx) <= j
            deviations.append((dy, dx))
            assert 0 <= pos[0] and pos[0] + p <= 96 and 0 <= pos[1] and pos[1] + p <= 96
        # the two patches never touch: along the offset the gap is at least g - 2j > 0
        gaps = []
        if dr:
            gaps.append(abs(neighbour[0] - centre[0]) - p)
        if dc:
            gaps.append(abs(neighbour[1] - centre[1]) - p)
        assert max(gaps) >= g - 2 * j > 0
    deviations = np.array(deviations)
    assert deviations.min() == -j and deviations.max() == j  # the whole jitter range is used


def test_colour_dropping_keeps_one_channel():
    task = create_task("context", {"pixelation_probability": 0.0}, image_size=64)
    images = np.stack([noise_image(64, k) for k in range(10)])
    inputs, _ = batch(task, images, 3)
    keep = task.batch_choices(64, 10, torch.Generator().manual_seed(3))["keep"]  # the same draws
    for b in range(10):
        for k in range(2):
            kept = int(keep[b, k])
            stds = inputs[b, k].reshape(3, -1).std(dim=1)
            others = [c for c in range(3) if c != kept]
            assert (stds[others] < 0.05 * stds[kept]).all()
            # the kept channel is the crop's own channel, normalised
            raw = crop(images[b], *positions(task, b)[1 + k], task.patch)[..., kept].astype(np.float64)
            ref = (raw - raw.mean()) / raw.std()
            got = inputs[b, k, kept].double().numpy()
            assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.9999
    assert set(keep.flatten().tolist()) == {0, 1, 2}


def test_colour_projection_option():
    task = create_task("context", {"colour": "project", "pixelation_probability": 0.0}, image_size=64)
    inputs, _ = batch(task, np.stack([noise_image(64, k) for k in range(4)]), 0)
    assert "keep" not in task.batch_choices(64, 4, torch.Generator().manual_seed(0))
    along = torch.einsum("bnchw,c->bnhw", inputs, torch.from_numpy(GREEN_MAGENTA))
    assert along.abs().max() < 1e-4


def test_pixelation_reduces_detail():
    task = create_task("context", {"colour": "none", "pixelation_probability": 1.0}, image_size=64)
    images = np.stack([noise_image(64, k) for k in range(6)])
    inputs, _ = batch(task, images, 0)
    side = task.batch_choices(64, 6, torch.Generator().manual_seed(0))["side"]
    for b in range(6):
        for k in range(2):
            assert task.min_side <= int(side[b, k]) < task.patch
            plain = standardise(crop(images[b], *positions(task, b)[1 + k], task.patch), per_channel_std=False)
            assert detail(inputs[b, k].permute(1, 2, 0).numpy()) < 0.8 * detail(plain)
    none = create_task("context", {"colour": "none", "pixelation_probability": 0.0}, image_size=64)
    assert (none.batch_choices(64, 50, torch.Generator().manual_seed(0))["side"] == none.patch).all()
    default = create_task("context", image_size=64)
    share = float((default.batch_choices(64, 150, torch.Generator().manual_seed(0))["side"][:, 0]
                   < default.patch).float().mean())
    assert 0.2 < share < 0.47  # a third by default


@pytest.mark.parametrize("colour", ["drop", "project", "none"])
def test_patches_are_normalised_on_their_own(colour):
    task = create_task("context", {"colour": colour}, image_size=64)
    img = noise_image(64, 4)
    img[:, :32] = img[:, :32] // 4 + 150  # bright, low-contrast left half
    for seed in range(4):
        inputs, target = sample(task, img, seed)
        assert inputs.shape == (2, 3, task.patch, task.patch) and target.shape == ()
        flat = inputs.reshape(2, 3, -1)
        assert torch.allclose(flat.mean(-1), torch.zeros(2, 3), atol=1e-4)
        assert torch.allclose(inputs.reshape(2, -1).std(-1, unbiased=False), torch.ones(2), atol=1e-3)


@pytest.mark.parametrize("arch,size", [("resnet18", 32), ("resnet18_small", 32), ("resnet18", 64)])
def test_model_shapes(arch, size):
    torch.manual_seed(0)
    task = create_task("context", image_size=size)
    model = task.build_head(build_backbone(arch), 512)
    assert sum(1 for name, _ in model.named_children() if name == "backbone") == 1
    batch = [sample(task, noise_image(size, k), k) for k in range(3)]
    inputs = torch.stack([b[0] for b in batch])
    target = torch.stack([b[1] for b in batch])
    assert inputs.shape == (3, 2, 3, task.patch, task.patch)
    out = model(inputs)
    assert out.shape == (3, 8)
    loss = task.loss(out, target)
    assert torch.isfinite(loss)
    loss.backward()


def test_centre_and_neighbour_are_told_apart():
    torch.manual_seed(0)
    task = create_task("context", {"dropout": 0.0}, image_size=32)
    model = task.build_head(build_backbone("resnet18_small"), 512).eval()
    x = torch.randn(1, 2, 3, task.patch, task.patch)
    assert not torch.allclose(model(x), model(x.flip(1)))


def test_loss_and_metric():
    task = create_task("context", image_size=32)
    target = torch.tensor([0, 5, 7, 2])
    perfect = torch.nn.functional.one_hot(target, 8).float() * 20
    assert task.metric(perfect, target) == (4.0, 4)
    assert task.loss(perfect, target).item() < 1e-6
    assert task.metric(perfect.roll(1, dims=1), target) == (0.0, 4)


def test_render_and_preview():
    task = create_task("context", image_size=32)
    inputs, target = sample(task, noise_image(32), 0)
    img = task.render(inputs, target)
    assert img.width > 300 and img.height > 100
    pred = task.render(inputs, target, output=torch.nn.functional.one_hot((target + 1) % 8, 8).float()[None])
    assert pred.size == img.size and not np.array_equal(np.asarray(pred), np.asarray(img))
    images = np.stack([noise_image(32, k) for k in range(2)])
    grid = preview_batch(task, images, 4, seed=0).own_drawing(task)  # drawn from the batch it made
    # one row per sample: the source with its grid beside the sample's drawing
    assert grid.width > img.width + 150 and grid.height > 4 * img.height
    arr = np.asarray(grid).reshape(-1, 3)
    # both outline colours are drawn on the sources
    assert (arr == (255, 200, 0)).all(axis=1).any() and (arr == (0, 200, 255)).all(axis=1).any()


def test_config_validation():
    with pytest.raises(ConfigError):
        make_config(ContextConfig, {"colour": "grey"})
    with pytest.raises(ConfigError):
        make_config(ContextConfig, {"gap_fraction": 2.0})
    with pytest.raises(ConfigError):
        make_config(ContextConfig, {"patch": 9})
    with pytest.raises(ConfigError):
        create_task("context", image_size=16)
    assert get_task("context").optim.batch_size == 128
