import copy

import numpy as np
import pytest
import torch

from sslstudio.engine.events import Cancelled, RunControl
from sslstudio.evaluation import finetune_all as fa
from sslstudio.evaluation.finetune_all import MIN_STEPS, lr_at, resolve_settings, train_all_layers
from sslstudio.models import build_backbone

COLOURS = np.array([[200, 30, 30], [30, 30, 200], [30, 180, 30]], np.float32)


def toy(n_per_class, classes=2, size=16, seed=0):
    """Noisy images whose class is their dominant colour (red, blue, green)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
    x = COLOURS[y][:, None, None, :] + rng.normal(0, 40, (len(y), size, size, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def backbone(seed=0):
    torch.manual_seed(seed)
    return build_backbone("resnet18")


@pytest.mark.slow
def test_learns_red_versus_blue():
    x, y = toy(10)
    tx, ty = toy(20, seed=1)
    result = train_all_layers(backbone(), x, y, tx, ty, 2, steps=20, seed=0)
    assert result["test_accuracy"] > 0.9
    assert result["test_accuracy"] == result["history"][-1][2]
    assert (result["test_pred"] == ty).mean() == pytest.approx(result["test_accuracy"])


@pytest.mark.slow
def test_same_seed_same_predictions_and_history():
    x, y = toy(4, classes=3)
    tx, ty = toy(6, classes=3, seed=1)
    runs = [train_all_layers(backbone(), x, y, tx, ty, 3, steps=6, seed=3) for _ in range(2)]
    assert np.array_equal(runs[0]["test_pred"], runs[1]["test_pred"])
    assert runs[0]["history"] == runs[1]["history"]
    other = train_all_layers(backbone(), x, y, tx, ty, 3, steps=6, seed=4)
    assert other["history"] != runs[0]["history"]


@pytest.mark.slow
def test_tiny_set_gets_the_minimum_number_of_steps_and_several_points():
    # 10 images in a batch of 10: 2 epochs would be 2 steps; the floor makes it MIN_STEPS.
    assert resolve_settings(10, epochs=2)["steps"] == MIN_STEPS
    assert resolve_settings(10)["batch_size"] == 10
    x, y = toy(5, size=8)
    tx, ty = toy(3, size=8, seed=1)
    seen, points = [], []
    result = train_all_layers(backbone(), x, y, tx, ty, 2, epochs=2, min_steps=30, seed=0,
                              on_step=lambda step, lr: seen.append(step),
                              on_epoch=lambda i, *rest: points.append(i))
    assert result["steps"] == len(seen) == 30
    assert result["epochs"] == pytest.approx(30)  # 10 images per 10-image batch
    assert points == list(range(len(result["history"]))) and len(points) == 10
    assert result["settings"]["batch_size"] == 10


def test_budget_and_batch_for_larger_sets():
    small = resolve_settings(200)
    assert small["batch_size"] == 32 and small["steps"] == MIN_STEPS and small["bn"] == "recalibrate-frozen"
    large = resolve_settings(2000)
    assert large["batch_size"] == 64 and large["bn"] == "train"
    assert large["steps"] == int(np.ceil(fa.DEFAULT_EPOCHS * 2000 / 64)) > MIN_STEPS
    assert 10 <= large["eval_points"] <= 30
    assert resolve_settings(2000, epochs=40)["steps"] == int(np.ceil(40 * 2000 / 64))
    assert resolve_settings(200, steps=7)["steps"] == 7
    assert resolve_settings(200, batch_size=64)["lr"] == pytest.approx(2 * small["lr"])  # linear scaling


@pytest.mark.slow
def test_learning_rate_warms_up_then_decays():
    x, y = toy(4, size=8)
    lrs = []
    result = train_all_layers(backbone(), x, y, x, y, 2, steps=20, warmup=5, lr=0.01,
                              on_step=lambda step, lr: lrs.append(lr))
    assert result["settings"]["warmup"] == 5 and len(lrs) == 20
    assert all(a < b for a, b in zip(lrs[:6], lrs[1:6]))
    assert lrs[5] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:])) and lrs[-1] < 0.001
    assert lr_at(0, 100, 10, 1.0) < lr_at(9, 100, 10, 1.0) <= lr_at(10, 100, 10, 1.0) == 1.0


@pytest.mark.slow
def test_small_set_recalibrates_batchnorm_once_and_keeps_it_frozen():
    x, y = toy(6)
    net = backbone()
    assert float(net.bn1.running_var.mean()) == 1.0  # a random init's placeholder statistics
    expected = copy.deepcopy(net)
    fa._recalibrate_bn(expected, x, torch.device("cpu"), "fp32", None)
    result = train_all_layers(net, x, y, x, y, 2, steps=5)
    assert result["settings"]["bn"] == "recalibrate-frozen"
    for (name, a), b in zip(net.named_buffers(), expected.buffers()):
        if "running" in name:
            assert torch.allclose(a, b), name
    assert float(net.bn1.running_var.mean()) != 1.0
    # and the weights did train
    assert not torch.equal(net.conv1.weight, expected.conv1.weight)

    trained = backbone()
    train_all_layers(trained, x, y, x, y, 2, steps=5, bn="train")
    assert not torch.allclose(trained.layer1[0].bn1.running_mean, expected.layer1[0].bn1.running_mean)


def test_cancel_raises_cancelled():
    x, y = toy(4, size=8)
    control = RunControl()
    steps = []

    def on_step(step, lr):
        steps.append(step)
        if step == 2:
            control.cancel()

    with pytest.raises(Cancelled):
        train_all_layers(backbone(), x, y, x, y, 2, steps=50, control=control, on_step=on_step)
    assert steps == [0, 1, 2]


def test_settings_are_reported():
    x, y = toy(4, classes=3)
    result = train_all_layers(backbone(), x, y, x, y, 3, steps=3, linear_probe_first=False,
                              head_stages=["layer1"])
    s = result["settings"]
    assert s["steps"] == 3 and s["linear_probe_first"] is False and s["probe_C"] is None
    assert "layer1" in s["head"] and "layer4" not in s["head"]
    assert len(result["history"]) == 3 and result["test_pred"].shape == (12,)
