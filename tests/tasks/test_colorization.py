import numpy as np
import pytest
import torch

from sslstudio.errors import ConfigError, RunError
from sslstudio.models import build_backbone
from sslstudio.tasks import create_task, get_task
from sslstudio.tasks.base import make_config
from sslstudio.tasks.colorization import ColorizationConfig, lightness_of, rebalance_weights
from sslstudio.tasks.lab import (EXPECTED_GAMUT_BINS, chebyshev_distance, convex_hull, gamut_bins, occupied_bins,
                                 rgb_to_lab_np, soft_encode, srgb_ab_hull)
from tests.tasks.reference import batch, sample

#: No crop and no mirror: the target is a plain function of the whole image.
PLAIN = {"crop_fraction": 1.0, "mirror": False}


def colour_image(size=32, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    img[: size // 2] = (200, 40, 30)  # a red half
    return img


def grey_image(size=32, seed=1):
    g = np.random.default_rng(seed).integers(0, 256, (size, size, 1), dtype=np.uint8)
    return np.repeat(g, 3, axis=2)


def one_hot_logits(bins: torch.Tensor, q: int) -> torch.Tensor:
    """Scores [N, Q, h, w] peaked on ``bins`` [N, h, w]."""
    out = torch.full((*bins.shape[:1], q, *bins.shape[1:]), -20.0)
    out.scatter_(1, bins[:, None], 20.0)
    return out


def test_paper_defaults_and_registration():
    cls = get_task("colorization")
    c = ColorizationConfig()
    assert (c.output_stride, c.neighbours, c.sigma, c.rebalance_lambda, c.prior_sigma, c.temperature) == \
        (4, 5, 5.0, 0.5, 5.0, 0.38)
    assert (c.crop_fraction, c.mirror) == (176 / 256, True)  # the released training prototxt
    assert cls.metric_name == "accuracy" and cls.needs_colour
    import sslstudio.tasks.colorization as module
    assert "Q = 313" in module.__doc__ and "10 nearest bins" in module.__doc__
    assert create_task("colorization", image_size=64).crop_size == 44
    assert create_task("colorization", image_size=32).crop_size == 24
    with pytest.raises(ConfigError, match="temperature"):
        make_config(ColorizationConfig, {"temperature": 0.0})


def test_sample_is_grey_input_and_point_sampled_ab_target():
    task = create_task("colorization", PLAIN, image_size=32)
    img = colour_image()
    inputs, target = sample(task, img, 0)
    assert inputs.shape == (3, 32, 32) and target.shape == (3, 8, 8)
    # the three input channels show the same grey (un-normalised)
    from sslstudio.tasks.decoders import unnormalise
    pix = unnormalise(inputs)
    assert torch.allclose(pix[0], pix[1], atol=1e-5) and torch.allclose(pix[1], pix[2], atol=1e-5)
    # the lightness survives, and the target is the ab of the pixels 0, 4, 8, ... (no averaging)
    lab = rgb_to_lab_np(img)
    assert np.allclose(lightness_of(inputs)[0].numpy(), lab[..., 0], atol=0.05)
    assert np.allclose(target[:2].permute(1, 2, 0).numpy(), lab[0::4, 0::4, 1:], atol=1e-3)
    assert not np.allclose(target[:2].permute(1, 2, 0).numpy(), lab[..., 1:].reshape(8, 4, 8, 4, 2).mean(axis=(1, 3)),
                           atol=1.0)  # the area average of the noise half is something else
    assert torch.all(target[2] == 1.0)
    # the red half's target is red's ab
    red = rgb_to_lab_np(np.array([200, 40, 30], np.uint8))
    assert np.allclose(target[:2, 0, 0].numpy(), red[1:], atol=1e-3)


def test_greyscale_images_carry_no_loss():
    task = create_task("colorization", image_size=32)
    _, target = sample(task, grey_image(), 0)
    assert torch.all(target[2] == 0.0)
    q, n = len(task.centres), task.out_size
    out = torch.randn(1, q, n, n, requires_grad=True)
    loss = task.loss(out, target[None])
    assert loss.item() == 0.0
    loss.backward()
    assert out.grad.abs().sum() == 0
    assert task.metric(out.detach(), target[None]) == (0.0, 0)
    # in a mixed batch the grey image changes nothing
    _, colour_target = sample(task, colour_image(), 0)
    both = torch.stack([colour_target, target])
    out2 = torch.randn(2, q, n, n)
    changed = out2.clone()
    changed[1] += torch.randn_like(changed[1]) * 5
    assert torch.isclose(task.loss(out2, both), task.loss(out2[:1], colour_target[None]))
    assert torch.isclose(task.loss(changed, both), task.loss(out2, both))
    assert task.metric(out2, both)[1] == n * n == 36


def test_rebalancing_weights_follow_the_formula():
    rng = np.random.default_rng(0)
    p = (rng.random(313) + 0.01) ** 4
    p /= p.sum()
    for lam in (0.0, 0.5, 0.9):
        w = rebalance_weights(p, lam)
        assert np.isclose((p * w).sum(), 1.0)
        mixed = (1 - lam) * p + lam / 313
        assert np.allclose(w * mixed, (w * mixed)[0])  # w proportional to 1 / mixed
    assert np.allclose(rebalance_weights(p, 1.0), 1.0)
    w = rebalance_weights(p, 0.5)
    assert w[np.argmax(p)] == w.min() and w[np.argmin(p)] == w.max()


def test_prepare_measures_the_users_prior(tmp_path):
    task = create_task("colorization", image_size=16)
    red = np.zeros((16, 16, 3), np.uint8)
    red[:] = (200, 40, 30)
    images = np.stack([red, red, red, grey_image(16)])
    assert task.prepare(images, 0) is images
    centres = torch.from_numpy(gamut_bins())
    ab = torch.from_numpy(rgb_to_lab_np(red[0, 0])[1:])[None]
    nearest = int(soft_encode(ab, centres)[1][0, 0])
    assert int(np.argmax(task.prior)) == nearest
    assert np.isclose(task.prior.sum(), 1.0)
    assert 0.2 < task.prior[nearest] < 0.9  # smoothed: the neighbours get some mass
    assert np.isclose((task.prior * task.class_weights).sum(), 1.0)
    assert task.class_weights[nearest] == task.class_weights.min()
    info = task.run_info()
    assert info["bins"] == 313 and info["prior_images"] == 3 and info["greyscale_images"] == 1
    assert (info["crop_px"], info["target_px"], info["mirror"]) == (12, 3, True)
    assert 0 < info["prior_entropy_bits"] < info["prior_max_entropy_bits"]
    (path,) = task.save_artifacts(tmp_path)
    saved = np.load(path)
    assert np.allclose(saved["prior"], task.prior) and saved["centres"].shape == (313, 2)


def test_loss_is_the_weighted_soft_cross_entropy():
    task = create_task("colorization", {"output_stride": 16}, image_size=16)  # one output pixel
    task.class_weights = np.linspace(0.5, 2.0, len(task.centres))
    task._device_cache = {}
    target = torch.tensor([22.0, -13.0, 1.0]).view(1, 3, 1, 1)
    out = torch.randn(1, len(task.centres), 1, 1, generator=torch.Generator().manual_seed(0))
    w, idx = soft_encode(target[0, :2, 0, 0][None], task.centres)
    logp = torch.log_softmax(out[0, :, 0, 0], 0)
    expected = -(w[0] * logp[idx[0]]).sum() * task.class_weights[int(idx[0, 0])]
    assert torch.isclose(task.loss(out, target), expected.float(), atol=1e-5)
    # predicting the soft target itself beats a random prediction
    good = torch.full_like(out, -30.0)
    good[0, idx[0], 0, 0] = torch.log(w[0])
    assert task.loss(good, target) < task.loss(out, target)


def test_metric_is_one_for_a_perfect_prediction():
    task = create_task("colorization", image_size=32)
    _, target = sample(task, colour_image(), 0)
    ab = target[:2].permute(1, 2, 0).reshape(-1, 2)
    nearest = soft_encode(ab, task.centres)[1][:, 0].view(1, 6, 6)
    perfect = one_hot_logits(nearest, len(task.centres))
    assert task.metric(perfect, target[None]) == (36.0, 36)
    wrong = one_hot_logits((nearest + 1) % len(task.centres), len(task.centres))
    assert task.metric(wrong, target[None]) == (0.0, 36)
    # decoding the perfect one-hot gives the bin centres (within half a bin of the true ab)
    decoded = task.decode(perfect)[0].permute(1, 2, 0).reshape(-1, 2)
    assert (decoded - ab).abs().max() <= 5.0 + 1e-4


@pytest.mark.parametrize("arch", ["resnet18", "resnet18_small"])
@pytest.mark.parametrize("size", [32, 64])
def test_head_reads_the_backbone_at_a_quarter_of_the_side(arch, size):
    torch.manual_seed(0)
    task = create_task("colorization", image_size=size)
    backbone = build_backbone(arch)
    model = task.build_head(backbone, backbone.feature_dim)
    inputs, target = zip(*[sample(task, colour_image(size, i), i) for i in range(2)])
    crop = {32: 24, 64: 44}[size]
    assert inputs[0].shape == (3, crop, crop)
    out = model(torch.stack(inputs))
    assert out.shape == (2, 313, crop // 4, crop // 4) == (2, 313, *target[0].shape[1:])
    task.loss(out, torch.stack(target)).backward()
    assert backbone.conv1.weight.grad.abs().sum() > 0 and backbone.layer4[-1].conv2.weight.grad.abs().sum() > 0


def test_render_shows_input_prediction_and_truth():
    task = create_task("colorization", image_size=32)
    inputs, target = sample(task, colour_image(), 0)
    before = task.render(inputs, target)
    assert before.width > 3 * 100 and before.height > 100
    out = torch.randn(len(task.centres), task.out_size, task.out_size)
    after = np.asarray(task.render(inputs, target, out))
    assert after.shape == np.asarray(before).shape
    assert not np.array_equal(after, np.asarray(before))  # the prediction panel is drawn
    # the truth panel is in colour, the input panel is grey
    arr = np.asarray(before).astype(int)
    assert np.abs(arr[10:100, 10:100, 0] - arr[10:100, 10:100, 1]).max() == 0
    assert np.abs(arr[10:100, -100:-10, 0] - arr[10:100, -100:-10, 1]).max() > 50
    grey_in, grey_t = sample(task, grey_image(), 0)
    assert task.render(grey_in, grey_t, out).width == before.width


def test_unknown_stage_is_a_clear_error():
    task = create_task("colorization", {"stage": "layer9"}, image_size=32)
    backbone = build_backbone("resnet18_small")
    with pytest.raises(ConfigError, match="layer9"):
        task.build_head(backbone, backbone.feature_dim)
    shallow = create_task("colorization", {"stage": "layer3"}, image_size=32)
    model = shallow.build_head(backbone, backbone.feature_dim)
    assert model(torch.zeros(2, 3, 24, 24)).shape == (2, 313, 6, 6)


# -- the 313 bins --------------------------------------------------------------------------------
def test_the_bins_are_the_papers_313():
    centres = gamut_bins()
    assert len(centres) == EXPECTED_GAMUT_BINS == 313
    assert np.all(np.mod(centres, 10) == 0) and len({tuple(c) for c in centres}) == 313
    assert (centres[:, 0].min(), centres[:, 0].max()) == (-90.0, 100.0)
    assert (centres[:, 1].min(), centres[:, 1].max()) == (-110.0, 100.0)
    assert np.array_equal(centres, centres[np.lexsort((centres[:, 1], centres[:, 0]))])  # sorted by a, then b
    # the count does not hinge on the threshold's exact value; smaller ones give fewer bins
    assert len(gamut_bins(9.99)) == len(gamut_bins(10.01)) == 313
    assert (len(gamut_bins(5.0)), len(gamut_bins(0.0))) == (269, 233)


def test_the_bins_add_a_one_bin_ring_around_the_occupied_ones():
    new = {tuple(c) for c in gamut_bins().tolist()}
    old = {tuple(c) for c in occupied_bins().tolist()}  # the bins an 8-bit colour falls in: the former grid
    assert len(old) == 261 and old <= new
    extra = np.array(sorted(new - old))
    assert len(extra) == 52
    d = chebyshev_distance(extra, srgb_ab_hull())
    assert np.all(d > 0) and np.all(d <= 10.0)  # outside the gamut's hull, within one bin of it
    for a, b in extra:  # each touches an occupied bin
        assert any((a + da, b + db) in old for da in (-10, 0, 10) for db in (-10, 0, 10))
    # the ring reaches beyond the gamut's edge: sRGB yellow has b = 94.5, above the last occupied centre
    assert max(b for _, b in old) == 90.0 and srgb_ab_hull()[:, 1].max() > 94


def test_the_hull_holds_every_srgb_colour():
    hull = srgb_ab_hull()
    rgb = np.random.default_rng(3).integers(0, 256, (50_000, 3), dtype=np.uint8)  # mostly inside the cube
    ab = rgb_to_lab_np(rgb)[:, 1:].astype(np.float64)
    assert chebyshev_distance(ab, hull).max() < 1e-3  # float32 Lab against the float64 hull
    corners = rgb_to_lab_np(np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                                      [0, 255, 255]], np.uint8))[:, 1:]
    assert np.allclose(np.sort(hull[:, 0])[[0, -1]], [-86.18, 98.23], atol=0.01)
    assert chebyshev_distance(corners, hull).max() < 1e-3


def test_hull_and_chebyshev_distance_by_hand():
    pts = np.array([[0, 0], [2, 0], [0, 2], [1, 0], [0.5, 0.5], [0.2, 0.1], [2, 0]], dtype=float)
    hull = convex_hull(pts)
    assert {tuple(v) for v in hull.tolist()} == {(0.0, 0.0), (2.0, 0.0), (0.0, 2.0)}  # no collinear (1, 0)
    edge = np.roll(hull, -1, 0) - hull
    assert np.all(edge[:, 0] * np.roll(edge, -1, 0)[:, 1] - edge[:, 1] * np.roll(edge, -1, 0)[:, 0] > 0)  # ccw
    # inside 0; beside an edge: the gap along the axis; off the diagonal x + y = 2: a square of
    # half-side 1 around (2, 2) first touches it
    got = chebyshev_distance(np.array([[0.3, 0.3], [-1.0, 0.5], [5.0, -1.0], [2.0, 2.0], [0.0, 3.5]]), hull)
    assert np.allclose(got, [0.0, 1.0, 3.0, 1.0, 1.5])
    many = np.random.default_rng(0).normal(size=(3000, 2))
    h = convex_hull(many)
    e = np.roll(h, -1, 0) - h
    side = e[None, :, 0] * (many[:, None, 1] - h[None, :, 1]) - e[None, :, 1] * (many[:, None, 0] - h[None, :, 0])
    assert side.min() > -1e-9  # every point on or inside the hull


# -- crops, mirror and point samples ---------------------------------------------------------------
def test_crops_and_mirrors_are_drawn_per_image_and_targets_point_sample_the_crop():
    task = create_task("colorization", image_size=32)
    crop, out = task.crop_size, task.out_size
    images = np.stack([colour_image(32, k) for k in range(16)])
    images[:, :16] = np.random.default_rng(9).integers(0, 256, (16, 16, 32, 3), dtype=np.uint8)  # no flat part
    inputs, target = batch(task, images, seed=5)
    assert inputs.shape == (16, 3, crop, crop) and target.shape == (16, 3, out, out)
    seen = set()
    for k in range(16):
        lab = rgb_to_lab_np(images[k])
        found = []
        for flip in (False, True):
            source = lab[:, ::-1] if flip else lab
            for y in range(32 - crop + 1):
                for x in range(32 - crop + 1):
                    window = source[y:y + crop, x:x + crop]
                    if np.abs(window[..., 0] - lightness_of(inputs[k])[0].numpy()).max() < 0.05:
                        found.append((flip, y, x, window))
        assert len(found) == 1, "the input is exactly one (mirrored) crop of the image"
        flip, y, x, window = found[0]
        seen.add((flip, y, x))
        assert np.allclose(target[k, :2].permute(1, 2, 0).numpy(), window[0::4, 0::4, 1:], atol=1e-3)
    flips = [f for f, _, _ in seen]
    assert 3 <= sum(flips) <= 13 and len({(y, x) for _, y, x in seen}) > 8  # both sides, many positions
    # the same generator seed gives the same batch; another seed another one
    again, _ = batch(task, images, seed=5)
    other, _ = batch(task, images, seed=6)
    assert torch.equal(again, inputs) and not torch.equal(other, inputs)


def test_without_crop_and_mirror_the_batch_is_the_whole_image():
    task = create_task("colorization", PLAIN, image_size=32)
    img = colour_image()
    first, t1 = sample(task, img, 0)
    second, t2 = sample(task, img, 1)
    assert torch.equal(first, second) and torch.equal(t1, t2) and first.shape == (3, 32, 32)


# -- resume --------------------------------------------------------------------------------------
def test_a_run_saved_with_261_bins_is_not_resumed_with_313(tmp_path, monkeypatch):
    from PIL import Image

    import sslstudio.tasks.colorization as module
    from sslstudio.engine import PretrainConfig, pretrain
    from sslstudio.engine.events import RunControl

    data = tmp_path / "images"
    data.mkdir()
    for k in range(8):
        Image.fromarray(colour_image(24, k)).save(data / f"{k}.png")
    settings = dict(task="colorization", data=str(data), out=str(tmp_path / "run"), arch="resnet18_small",
                    epochs=2, batch_size=8, image_size=24, workers=0, device="cpu", holdout=0.0)
    control = RunControl()
    monkeypatch.setattr(module, "gamut_bins", occupied_bins)  # the former 261-bin grid
    pretrain(PretrainConfig(**settings), on_event=lambda e: e.kind == "checkpoint" and control.cancel(),
             control=control)
    monkeypatch.undo()
    with pytest.raises(RunError, match=r"261.*313.*start a new run"):
        pretrain(PretrainConfig(**settings, resume=True))



def test_the_commonest_bins_share_is_recorded_but_is_not_a_chance_level():
    # rebalancing trades the common bins' accuracy for colourfulness: a run's bin accuracy sits below the
    # commonest bin's share (10-13% against 20% on the shared data), so the share is information only
    task = create_task("colorization", image_size=16)
    red, blue = np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)
    red[:] = (200, 40, 30)
    blue[:] = (30, 40, 200)
    task.prepare(np.stack([red, red, blue]), 0)
    assert task.run_info()["commonest_bin_share"] == pytest.approx(2 / 3, abs=1e-4)
    from sslstudio.engine.verdict import chance_level

    assert chance_level(task, None) is None
