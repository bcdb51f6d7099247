import numpy as np
import pytest
import torch

from sslstudio.errors import ConfigError
from sslstudio.tasks import create_task, get_task, list_tasks
from sslstudio.tasks.base import MEAN, STD, make_config, to_image, to_tensor
from sslstudio.tasks.rotation import RotationConfig
from tests.tasks.reference import sample


def asymmetric_image(size=16):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    img[0, :, :] = (255, 0, 0)  # a red top row: where it ends up tells the rotation
    return img


def test_registry_lists_rotation_and_unknown_name_lists_known():
    assert "rotation" in list_tasks()
    assert get_task("rotation").name == "rotation"
    with pytest.raises(ConfigError, match="rotation"):
        get_task("no-such-task")


def test_label_is_the_rotation_applied():
    task = create_task("rotation", {"horizontal_flip": False}, image_size=16)
    img = asymmetric_image()
    inputs, target = sample(task, img, 0)
    assert inputs.shape == (4, 3, 16, 16)
    assert target.tolist() == [0, 1, 2, 3]
    for k in range(4):
        expected = to_tensor(np.rot90(img, k))
        assert torch.allclose(inputs[k], expected), f"label {k} is not a {90 * k} degree rotation"
    # 90 degrees counter-clockwise moves the red top row to the left column
    left = np.asarray(to_image(inputs[1]))[:, 0, :]
    assert (left == (255, 0, 0)).all()


def test_flip_keeps_labels_true():
    task = create_task("rotation", image_size=16)
    img = asymmetric_image()
    flipped_seen = False
    for seed in range(8):
        inputs, target = sample(task, img, seed)
        base = np.asarray(to_image(inputs[0]))
        assert np.array_equal(base, img) or np.array_equal(base, img[:, ::-1])
        flipped_seen |= np.array_equal(base, img[:, ::-1]) and not np.array_equal(img, img[:, ::-1])
        for k in range(4):
            assert np.array_equal(np.asarray(to_image(inputs[k])), np.rot90(base, int(target[k])))
    assert flipped_seen


def test_tensor_roundtrip_uses_imagenet_normalisation():
    img = asymmetric_image()
    t = to_tensor(img)
    assert torch.allclose(t[:, 0, 0], (torch.tensor([1.0, 0, 0]) - torch.tensor(MEAN)) / torch.tensor(STD))
    assert np.array_equal(np.asarray(to_image(t)), img)


def test_loss_and_metric():
    task = create_task("rotation", image_size=16)
    target = torch.arange(4).repeat(2, 1)  # [B=2, 4]
    perfect = torch.eye(4).repeat(2, 1) * 20
    assert task.metric(perfect, target) == (8.0, 8)
    assert task.loss(perfect, target).item() < 1e-6
    wrong = perfect.roll(1, dims=1)
    assert task.metric(wrong, target) == (0.0, 8)


def test_config_validation_is_a_sentence():
    with pytest.raises(ConfigError, match="unknown option"):
        make_config(RotationConfig, {"angle": 3})
    assert make_config(RotationConfig, {"horizontal_flip": False}).horizontal_flip is False


def test_paper_defaults():
    optim = get_task("rotation").optim
    assert (optim.lr, optim.momentum, optim.nesterov, optim.weight_decay) == (0.1, 0.9, True, 5e-4)
    assert (optim.lr_decay, optim.milestones) == (0.2, (0.3, 0.6, 0.8))


def test_render_draws_four_labelled_tiles():
    task = create_task("rotation", image_size=16)
    inputs, target = sample(task, asymmetric_image(), 0)
    img = task.render(inputs, target)
    assert img.width > 4 * 100 and img.height > 100
    pixels = np.asarray(img)
    band = pixels[-15:-5]  # the label band under the tiles holds light text
    assert band.max() > 200


def test_make_batch_labels_are_the_angles_of_whole_batches():
    task = create_task("rotation", {"horizontal_flip": False}, image_size=16)
    images = np.stack([asymmetric_image(), asymmetric_image()[::-1].copy()])
    inputs, target = task.make_batch(torch.from_numpy(images), torch.Generator().manual_seed(0))
    assert inputs.shape == (2, 4, 3, 16, 16) and target.tolist() == [[0, 1, 2, 3]] * 2
    for b in range(2):
        for k in range(4):
            assert np.array_equal(np.asarray(to_image(inputs[b, k])), np.rot90(images[b], k))


def test_make_batch_flips_whole_images_and_is_seeded():
    task = create_task("rotation", image_size=16)
    images = np.stack([asymmetric_image()] * 16)
    a, _ = task.make_batch(torch.from_numpy(images), torch.Generator().manual_seed(5))
    b, _ = task.make_batch(torch.from_numpy(images), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    flipped = 0
    for i in range(16):
        base = np.asarray(to_image(a[i, 0]))
        assert np.array_equal(base, images[i]) or np.array_equal(base, images[i][:, ::-1])
        flipped += np.array_equal(base, images[i][:, ::-1])
        for k in range(4):
            assert np.array_equal(np.asarray(to_image(a[i, k])), np.rot90(base, k))
    assert 0 < flipped < 16
