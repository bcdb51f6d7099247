import numpy as np
import pytest
import torch

from sslstudio.errors import ConfigError
from sslstudio.models import build_backbone
from sslstudio.tasks import create_task, get_task
from sslstudio.tasks.base import make_config
from sslstudio.tasks.colorization import ColorizationConfig, lightness_of, rebalance_weights
from sslstudio.tasks.lab import gamut_bins, rgb_to_lab_np, soft_encode
from tests.tasks.reference import sample


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
    assert cls.metric_name == "accuracy" and cls.needs_colour
    import sslstudio.tasks.colorization as module
    assert "Q = 261" in module.__doc__  # the documented number of in-gamut bins
    with pytest.raises(ConfigError, match="temperature"):
        make_config(ColorizationConfig, {"temperature": 0.0})


def test_sample_is_grey_input_and_reduced_ab_target():
    task = create_task("colorization", image_size=32)
    img = colour_image()
    inputs, target = sample(task, img, 0)
    assert inputs.shape == (3, 32, 32) and target.shape == (3, 8, 8)
    # the three input channels show the same grey (un-normalised)
    from sslstudio.tasks.decoders import unnormalise
    pix = unnormalise(inputs)
    assert torch.allclose(pix[0], pix[1], atol=1e-5) and torch.allclose(pix[1], pix[2], atol=1e-5)
    # the lightness survives, and the target is the area-averaged ab
    lab = rgb_to_lab_np(img)
    assert np.allclose(lightness_of(inputs)[0].numpy(), lab[..., 0], atol=0.05)
    ab = lab[..., 1:].reshape(8, 4, 8, 4, 2).mean(axis=(1, 3))
    assert np.allclose(target[:2].permute(1, 2, 0).numpy(), ab, atol=1e-3)
    assert torch.all(target[2] == 1.0)
    # the red half's target is red's ab
    red = rgb_to_lab_np(np.array([200, 40, 30], np.uint8))
    assert np.allclose(target[:2, 0, 0].numpy(), red[1:], atol=1e-3)


def test_greyscale_images_carry_no_loss():
    task = create_task("colorization", image_size=32)
    _, target = sample(task, grey_image(), 0)
    assert torch.all(target[2] == 0.0)
    q = len(task.centres)
    out = torch.randn(1, q, 8, 8, requires_grad=True)
    loss = task.loss(out, target[None])
    assert loss.item() == 0.0
    loss.backward()
    assert out.grad.abs().sum() == 0
    assert task.metric(out.detach(), target[None]) == (0.0, 0)
    # in a mixed batch the grey image changes nothing
    _, colour_target = sample(task, colour_image(), 0)
    both = torch.stack([colour_target, target])
    out2 = torch.randn(2, q, 8, 8)
    changed = out2.clone()
    changed[1] += torch.randn_like(changed[1]) * 5
    assert torch.isclose(task.loss(out2, both), task.loss(out2[:1], colour_target[None]))
    assert torch.isclose(task.loss(changed, both), task.loss(out2, both))
    assert task.metric(out2, both)[1] == 64


def test_rebalancing_weights_follow_the_formula():
    rng = np.random.default_rng(0)
    p = (rng.random(261) + 0.01) ** 4
    p /= p.sum()
    for lam in (0.0, 0.5, 0.9):
        w = rebalance_weights(p, lam)
        assert np.isclose((p * w).sum(), 1.0)
        mixed = (1 - lam) * p + lam / 261
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
    assert info["ab_bins"] == 261 and info["prior_images"] == 3 and info["greyscale_images"] == 1
    assert 0 < info["prior_entropy_bits"] < info["prior_max_entropy_bits"]
    (path,) = task.save_artifacts(tmp_path)
    saved = np.load(path)
    assert np.allclose(saved["prior"], task.prior) and saved["centres"].shape == (261, 2)


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
    nearest = soft_encode(ab, task.centres)[1][:, 0].view(1, 8, 8)
    perfect = one_hot_logits(nearest, len(task.centres))
    assert task.metric(perfect, target[None]) == (64.0, 64)
    wrong = one_hot_logits((nearest + 1) % len(task.centres), len(task.centres))
    assert task.metric(wrong, target[None]) == (0.0, 64)
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
    out = model(torch.stack(inputs))
    assert out.shape == (2, 261, size // 4, size // 4)
    task.loss(out, torch.stack(target)).backward()
    assert backbone.conv1.weight.grad.abs().sum() > 0 and backbone.layer4[-1].conv2.weight.grad.abs().sum() > 0


def test_render_shows_input_prediction_and_truth():
    task = create_task("colorization", image_size=32)
    inputs, target = sample(task, colour_image(), 0)
    before = task.render(inputs, target)
    assert before.width > 3 * 100 and before.height > 100
    out = torch.randn(len(task.centres), 8, 8)
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
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 261, 8, 8)
