import json
import time

import numpy as np
import pytest
import torch

from sslstudio.errors import ConfigError
from sslstudio.models import build_backbone
from sslstudio.tasks import create_task, get_task
from sslstudio.tasks.jigsaw import (ARTIFACT_NAME, JigsawConfig, all_permutations, hamming_matrix,
                                    hamming_to_all, load_permutations, mean_hamming_distance,
                                    min_hamming_distance, select_permutations)
from sslstudio.tasks.base import make_config
from tests.tasks.reference import batch, crop, sample, standardise

PLAIN = {"greyscale_probability": 0.0, "channel_jitter": 0.0}
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                    [0, 255, 255], [128, 0, 0], [0, 128, 0], [0, 0, 128]], dtype=np.uint8)


def cell_image(size=30):
    """Nine flat-coloured cells of ``size // 3`` px (cell c has colour COLOURS[c])."""
    cell = size // 3
    img = np.zeros((size, size, 3), np.uint8)
    for c in range(9):
        r, k = divmod(c, 3)
        img[r * cell:(r + 1) * cell, k * cell:(k + 1) * cell] = COLOURS[c]
    return img


def noise_image(size=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# -- the permutation set ---------------------------------------------------------------------
def test_all_permutations_are_the_9_factorial_distinct_ones():
    perms = all_permutations()
    assert perms.shape == (362880, 9)
    assert (np.sort(perms, axis=1) == np.arange(9)).all()
    assert len(np.unique(perms, axis=0)) == len(perms)
    p = perms[12345]
    assert np.array_equal(hamming_to_all(p), (perms != p).sum(axis=1))


def test_set_has_requested_size_distinct_permutations_and_is_seeded():
    for size in (10, 100):
        s = select_permutations(size, seed=3)
        assert s.shape == (size, 9)
        assert (np.sort(s, axis=1) == np.arange(9)).all()
        assert len({tuple(r) for r in s.tolist()}) == size
    assert np.array_equal(select_permutations(100, seed=3), select_permutations(100, seed=3))
    assert not np.array_equal(select_permutations(100, seed=3), select_permutations(100, seed=4))


def test_maximal_set_beats_a_random_set():
    ours = min_hamming_distance(select_permutations(100, seed=5, criterion="min"))  # the max-min rule
    papers = mean_hamming_distance(select_permutations(100, seed=5, criterion="mean"))  # Algorithm 1
    rng = np.random.default_rng(0)
    perms = all_permutations()
    for _ in range(3):
        random_set = perms[rng.choice(len(perms), 100, replace=False)]
        assert ours >= min_hamming_distance(random_set)
        assert ours > min_hamming_distance(random_set) or ours == 9
        assert papers > mean_hamming_distance(random_set)


def greedy_by_sum(size, seed):
    """Algorithm 1 written out directly: start from a seeded random permutation, then add the
    permutation with the largest summed Hamming distance to those chosen (ties: a seeded random one)."""
    perms = all_permutations().astype(np.int64)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(perms)))]
    while len(chosen) < size:
        total = sum((perms != perms[c]).sum(axis=1) for c in chosen)
        total[chosen] = -1
        best = np.flatnonzero(total == total.max())
        chosen.append(int(best[rng.integers(len(best))]))
    return perms[chosen]


@pytest.mark.parametrize("seed", [0, 3])
def test_the_default_rule_is_algorithm_1_summed_distance(seed):
    """The paper's rule is the default and equals the direct computation on a small set."""
    assert JigsawConfig().hamming_criterion == "mean"
    s = select_permutations(5, seed=seed)
    assert np.array_equal(s, select_permutations(5, seed=seed, criterion="mean"))
    assert np.array_equal(s, greedy_by_sum(5, seed))
    # by hand: the second permutation moves every tile of the first (distance 9), and the third
    # moves every tile of both (summed distance 18: such permutations exist)
    assert (s[1] != s[0]).all() and (s[2] != s[0]).all() and (s[2] != s[1]).all()
    assert "ours" in JigsawConfig.__dataclass_fields__["hamming_criterion"].metadata["help"]


def test_the_set_is_deterministic_for_a_seed():
    """The default set is a function of the seed: the direct computation, made afresh, gives it again."""
    first = select_permutations(12, seed=4)
    assert np.array_equal(greedy_by_sum(12, 4), first)
    assert not np.array_equal(select_permutations(12, seed=5), first)
    task = create_task("jigsaw", {"permutations": 12}, image_size=30)
    task.prepare(noise_image()[None], seed=4)
    assert np.array_equal(task.permutations, first)


@pytest.mark.parametrize("criterion", ["min", "mean"])
def test_each_step_picks_the_best_permutation(criterion):
    """Algorithm 1: every added permutation maximises the criterion over all 9! candidates."""
    s = select_permutations(8, seed=11, criterion=criterion)
    perms = all_permutations()
    for k in range(1, len(s)):
        d = np.stack([hamming_to_all(p) for p in s[:k]]).astype(np.int32)
        score = d.min(axis=0) if criterion == "min" else d.sum(axis=0)
        if criterion == "mean":
            score[d.min(axis=0) == 0] = -1  # already chosen
        picked = int(np.flatnonzero((perms == s[k]).all(axis=1))[0])
        assert score[picked] == score.max(), f"step {k} did not pick a best permutation"


def test_hamming_helpers():
    s = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8], [1, 0, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1, 0]])
    d = hamming_matrix(s)
    assert d[0, 1] == 2 and d[0, 2] == 8 and (np.diag(d) == 0).all()
    assert min_hamming_distance(s) == 2


def test_a_new_set_of_100_is_quick():
    start = time.perf_counter()
    select_permutations(100, seed=987654)
    assert time.perf_counter() - start < 5.0


def test_prepare_builds_the_set_from_the_run_seed_and_reports_it(tmp_path):
    task = create_task("jigsaw", {"permutations": 20}, image_size=30)
    assert np.array_equal(task.permutations, select_permutations(20, 0))  # usable before prepare
    images = noise_image()[None]
    assert task.prepare(images, seed=7) is images
    assert np.array_equal(task.permutations, select_permutations(20, 7))
    info = task.run_info()
    assert info["permutations"] == 20 and info["hamming_criterion"] == "mean"
    assert info["min_hamming_distance"] == min_hamming_distance(task.permutations)
    d = np.array([[int((p != q).sum()) for q in task.permutations] for p in task.permutations])
    assert info["min_hamming_distance"] == d[~np.eye(20, dtype=bool)].min()
    assert info["mean_hamming_distance"] == pytest.approx(d.sum() / (20 * 19), abs=1e-4)
    paths = task.save_artifacts(tmp_path)
    assert paths == [tmp_path / ARTIFACT_NAME]
    assert np.array_equal(load_permutations(paths[0]), task.permutations)
    data = json.loads(paths[0].read_text())
    assert data["seed"] == 7 and data["min_hamming_distance"] == info["min_hamming_distance"]
    assert data["mean_hamming_distance"] == info["mean_hamming_distance"]


# -- samples ---------------------------------------------------------------------------------
def test_geometry_scales_with_the_image():
    for size, cell in ((30, 10), (32, 10), (64, 21), (225, 75)):
        task = create_task("jigsaw", image_size=size)
        assert task.cell == cell and task.tile == round(cell * 64 / 75) < cell
    assert create_task("jigsaw", image_size=225).tile == 64
    assert create_task("jigsaw", image_size=64).shift == 1 and create_task("jigsaw", image_size=32).shift == 0


def tile_positions(task, size, n, seed):
    """The batch's geometry (drawn as make_batch draws it) and each cell's tile position ``[n, 9, 2]``."""
    r = task.batch_geometry(size, n, torch.Generator().manual_seed(seed))
    cells = torch.tensor([divmod(c, 3) for c in range(9)]) * task.cell
    return r, r["origin"][:, None] + cells + r["offsets"]


def test_tiles_come_from_their_cells():
    task = create_task("jigsaw", PLAIN, image_size=30)
    img = cell_image(30)
    _, pos = tile_positions(task, 30, 5, 0)
    for b in range(5):
        for c in range(9):
            y, x = pos[b, c].tolist()
            assert (crop(img, y, x, task.tile) == COLOURS[c]).all(), f"tile {c} is not from cell {c}"


def test_label_is_the_permutation_applied():
    """inputs[i] is the (normalised) tile of cell perm[i], perm = permutations[label]."""
    task = create_task("jigsaw", PLAIN, image_size=32)
    images = np.stack([noise_image(32, seed=1)] * 6)
    inputs, target = batch(task, images, 0)
    r, pos = tile_positions(task, 32, 6, 0)
    assert torch.equal(r["label"], target) and len(set(target.tolist())) > 1
    for b in range(6):
        perm = task.permutations[int(target[b])]
        for c in range(9):  # each tile lies inside its cell
            y, x = pos[b, c].tolist()
            r_, k = divmod(c, 3)
            assert 0 <= y - r_ * task.cell <= task.cell - task.tile + 2
            assert 0 <= x - k * task.cell <= task.cell - task.tile + 2
        for i in range(9):
            y, x = pos[b, int(perm[i])].tolist()
            expected = torch.from_numpy(standardise(crop(images[b], y, x, task.tile))).permute(2, 0, 1)
            assert torch.allclose(inputs[b, i], expected, atol=1e-5)


def test_inverting_the_permutation_solves_the_puzzle():
    task = create_task("jigsaw", PLAIN, image_size=30)
    images = np.stack([cell_image(30), noise_image(30, 2)] * 2)
    inputs, target = batch(task, images, 0)
    _, pos = tile_positions(task, 30, 4, 0)
    for b in range(4):
        solved = task.solve(inputs[b], task.permutations[int(target[b])])
        for c in range(9):
            y, x = pos[b, c].tolist()
            expected = torch.from_numpy(standardise(crop(images[b], y, x, task.tile))).permute(2, 0, 1)
            assert torch.allclose(solved[c], expected, atol=1e-5)


def test_tiles_are_normalised_on_their_own():
    task = create_task("jigsaw", {"greyscale_probability": 0.0}, image_size=64)
    img = noise_image(64, 3)
    img[:32] = img[:32] // 3  # dark top half: normalisation removes the difference
    inputs, _ = sample(task, img, 0)
    assert inputs.shape == (9, 3, 18, 18)
    flat = inputs.reshape(9, 3, -1)
    assert torch.allclose(flat.mean(-1), torch.zeros(9, 3), atol=1e-4)
    assert torch.allclose(flat.std(-1, unbiased=False), torch.ones(9, 3), atol=1e-3)


def is_grey(inputs):
    return (inputs[:, :, 0] == inputs[:, :, 1]).flatten(1).all(1) & (inputs[:, :, 1] == inputs[:, :, 2]).flatten(1).all(1)


def test_greyscale_puzzles():
    images = np.stack([noise_image(32, k) for k in range(200)])
    always, _ = batch(create_task("jigsaw", {"greyscale_probability": 1.0}, image_size=32), images[:8])
    assert is_grey(always).all()
    never, _ = batch(create_task("jigsaw", {"greyscale_probability": 0.0}, image_size=32), images[:8])
    assert not is_grey(never).any()
    often = int(is_grey(batch(create_task("jigsaw", image_size=32), images)[0]).sum())
    assert 30 < often < 90  # default 0.3


def test_samples_are_reproducible_from_the_generator():
    task = create_task("jigsaw", image_size=64)
    img = noise_image(64)
    a = sample(task, img, 5)
    b = sample(task, img, 5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# -- model, scores, drawing, config ----------------------------------------------------------
@pytest.mark.parametrize("arch,size", [("resnet18", 32), ("resnet18_small", 32), ("resnet18", 64)])
def test_model_shapes(arch, size):
    torch.manual_seed(0)
    task = create_task("jigsaw", {"permutations": 10}, image_size=size)
    model = task.build_head(build_backbone(arch), 512)
    assert sum(1 for name, _ in model.named_children() if name == "backbone") == 1
    batch = [sample(task, noise_image(size, k), k) for k in range(2)]
    inputs = torch.stack([b[0] for b in batch])
    target = torch.stack([b[1] for b in batch])
    out = model(inputs)
    assert out.shape == (2, 10)
    loss = task.loss(out, target)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()


def test_features_are_concatenated_in_input_order():
    torch.manual_seed(0)
    task = create_task("jigsaw", {"permutations": 10, "dropout": 0.0}, image_size=32)
    model = task.build_head(build_backbone("resnet18_small"), 512).eval()
    x = torch.randn(1, 9, 3, task.tile, task.tile)
    swapped = x[:, [1, 0, 2, 3, 4, 5, 6, 7, 8]]
    assert not torch.allclose(model(x), model(swapped))  # the head knows which input is which


def test_loss_and_metric():
    task = create_task("jigsaw", {"permutations": 5}, image_size=32)
    target = torch.tensor([0, 3, 4])
    perfect = torch.nn.functional.one_hot(target, 5).float() * 20
    assert task.metric(perfect, target) == (3.0, 3)
    assert task.loss(perfect, target).item() < 1e-6
    assert task.metric(perfect.roll(1, dims=1), target) == (0.0, 3)


def test_render_shows_shuffled_and_solved_grids_with_the_label():
    task = create_task("jigsaw", image_size=32)
    inputs, target = sample(task, noise_image(32), 0)
    img = task.render(inputs, target)
    assert img.width > 300 and img.height > 180
    arr = np.asarray(img)
    assert arr[-30:].max() > 200  # the label line
    with_pred = task.render(inputs, target, output=torch.nn.functional.one_hot(target, 100).float()[None])
    assert with_pred.size == img.size and not np.array_equal(np.asarray(with_pred), arr)


def test_config_validation():
    with pytest.raises(ConfigError):
        make_config(JigsawConfig, {"permutations": 1})
    with pytest.raises(ConfigError):
        make_config(JigsawConfig, {"hamming_criterion": "max"})
    with pytest.raises(ConfigError):
        make_config(JigsawConfig, {"tiles": 4})
    with pytest.raises(ConfigError):
        create_task("jigsaw", image_size=12)
    cls = get_task("jigsaw")
    assert cls.optim.lr == 0.01 and cls.optim.lr_decay == 0.1 and cls.samples_per_image == 1
