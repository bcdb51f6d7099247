import math

import numpy as np
import pytest
import torch

from sslstudio.errors import ConfigError
from sslstudio.models import build_backbone
from sslstudio.tasks import create_task, get_task
from sslstudio.tasks.autoencoder import AutoencoderConfig
from sslstudio.tasks.base import make_config, to_tensor
from sslstudio.tasks.decoders import PSNR_CAP_DB, normalise, unnormalise
from tests.tasks.reference import sample


def image(size=32, seed=0):
    return np.random.default_rng(seed).integers(30, 226, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("fraction", [0.25, 0.1, 0.4])
def test_masking_noise_blacks_out_the_configured_fraction_of_pixels(fraction):
    task = create_task("autoencoder", {"corruption": "masking", "mask_fraction": fraction}, image_size=32)
    img = image()  # no black pixels of its own
    inputs, target = sample(task, img, 0)
    pixels = unnormalise(inputs)
    black = (pixels.abs() < 1e-5).all(dim=0)
    assert int(black.sum()) == round(fraction * 32 * 32)
    assert ((pixels.abs() < 1e-5).any(dim=0) == black).all()  # whole pixels, all three channels
    clean = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    assert torch.allclose(pixels[:, ~black], clean[:, ~black], atol=1e-5)  # the rest is untouched
    assert torch.allclose(target, to_tensor(img), atol=1e-6)
    other = sample(task, img, 1)[0]
    assert not torch.equal(other, inputs)  # a new pattern per draw
    assert torch.equal(sample(task, img, 0)[0], inputs)  # from the rng only


@pytest.mark.parametrize("std", [0.1, 0.05])
def test_gaussian_noise_has_the_configured_std(std):
    task = create_task("autoencoder", {"corruption": "gaussian", "noise_std": std}, image_size=64)
    grey = np.full((64, 64, 3), 128, np.uint8)  # far from 0 and 1: clipping does not bite
    inputs, target = sample(task, grey, 0)
    noise = unnormalise(inputs) - unnormalise(target)
    assert abs(float(noise.std()) - std) < 0.05 * std
    assert abs(float(noise.mean())) < 0.1 * std
    assert torch.allclose(target, to_tensor(grey), atol=1e-6)
    assert float(unnormalise(inputs).min()) >= -1e-6 and float(unnormalise(inputs).max()) <= 1 + 1e-6


@pytest.mark.parametrize("arch", ["resnet18", "resnet18_small"])
@pytest.mark.parametrize("size", [32, 64])
def test_decoder_output_has_the_input_shape(arch, size):
    torch.manual_seed(0)
    task = create_task("autoencoder", image_size=size)
    backbone = build_backbone(arch)
    model = task.build_head(backbone, backbone.feature_dim)
    inputs, target = zip(*[sample(task, image(size, i), i) for i in range(2)])
    inputs = torch.stack(inputs)
    out = model(inputs)
    assert out.shape == inputs.shape == (2, 3, size, size)
    task.loss(out, torch.stack(target)).backward()
    assert backbone.conv1.weight.grad.abs().sum() > 0
    assert model.stage == backbone.stage_names()[-1]


def test_loss_is_mse_over_the_whole_image_and_psnr_is_correct():
    task = create_task("autoencoder", image_size=32)
    clean = torch.from_numpy(image()).permute(2, 0, 1).float()[None] / 255.0
    target = normalise(clean)
    assert task.loss(target, target).item() == 0.0
    out = target.clone()
    out[..., 0, 0] += 1.0
    assert math.isclose(task.loss(out, target).item(), 3 / (3 * 32 * 32), rel_tol=1e-5)
    assert task.metric(target, target) == (pytest.approx(PSNR_CAP_DB), 1)
    for delta in (0.1, 0.03):
        total, count = task.metric(normalise(clean + delta), target)
        assert count == 1 and total == pytest.approx(10 * math.log10(1 / delta ** 2), abs=1e-3)
    # two images: the sum of their PSNRs
    both = torch.cat([target, target])
    pred = torch.cat([normalise(clean + 0.1), normalise(clean + 0.01)])
    assert task.metric(pred, both)[0] == pytest.approx(20.0 + 40.0, abs=1e-3)


def test_render_shows_input_output_and_target():
    task = create_task("autoencoder", image_size=32)
    inputs, target = sample(task, image(), 0)
    before = task.render(inputs, target)
    assert before.width > 3 * 100 and before.height > 100
    arr = np.asarray(before)
    assert arr[-15:-5].max() > 200  # label text
    after = np.asarray(task.render(inputs, target, target))
    assert after.shape == arr.shape and not np.array_equal(after, arr)


def test_config_validation_and_defaults():
    c = AutoencoderConfig()
    assert (c.corruption, c.mask_fraction, c.noise_std) == ("masking", 0.25, 0.1)
    with pytest.raises(ConfigError, match="corruption"):
        make_config(AutoencoderConfig, {"corruption": "salt"})
    with pytest.raises(ConfigError, match="mask_fraction"):
        make_config(AutoencoderConfig, {"mask_fraction": 1.0})
    assert get_task("autoencoder").metric_name == "psnr"
