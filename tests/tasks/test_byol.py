"""BYOL: no gradient reaches the target network, the target follows the online network by the EMA rule
with the cosine schedule of tau, and the two views are augmented asymmetrically."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslstudio.models import build_backbone
from sslstudio.tasks import create_task
from sslstudio.tasks.byol import target_rate
from sslstudio.tasks.views import COL
from tests.tasks.reference import batch, noise_images, straight_and_resumed


def head_and_task(**options):
    task = create_task("byol", {"proj_hidden": 32, "proj_dim": 16, **options}, image_size=16)
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    return task, task.build_head(backbone, backbone.feature_dim)


def test_tau_follows_the_cosine_from_its_base_to_one():
    assert target_rate(0.99, 0, 100) == pytest.approx(0.99)
    assert target_rate(0.99, 50, 100) == pytest.approx(0.995)
    assert target_rate(0.99, 100, 100) == pytest.approx(1.0)
    assert target_rate(0.99, 25, 100) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert target_rate(0.99, 7, 0) == 0.99  # no planned run: the base rate


def test_no_gradient_reaches_the_target_network():
    task, head = head_and_task()
    inputs, target = batch(task, noise_images(4, 16))
    head.train()
    out = head(inputs)
    assert out.shape == (4, 6, 16)
    task.loss(out, target).backward()
    assert all(p.grad is None for p in head.target.parameters())
    assert all(not p.requires_grad for p in head.target.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.backbone.parameters())
    assert not any(p.requires_grad for g in task.param_groups(head) for p in g["params"]
                   if any(p is t for t in head.target.parameters()))


def test_the_loss_is_two_minus_two_cosines_symmetrised():
    task, head = head_and_task()
    inputs, target = batch(task, noise_images(4, 16))
    with torch.no_grad():
        out = head(inputs)
    _, _, p1, p2, t1, t2 = out.unbind(1)
    expected = sum(4 - 2 * float(F.cosine_similarity(p1[b], t2[b], dim=0))
                   - 2 * float(F.cosine_similarity(p2[b], t1[b], dim=0)) for b in range(4)) / 4
    assert float(task.loss(out, target)) == pytest.approx(expected, rel=1e-5)


def test_the_target_moves_by_the_ema_rule_at_the_scheduled_rate():
    task, head = head_and_task()
    task.plan_run(epochs=2, steps_per_epoch=5, batch_size=4)
    assert head.total_steps == 10 and task.chance_level() == pytest.approx(1 / 7)
    with torch.no_grad():
        for p in head.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    head.step.fill_(5)  # half-way: tau = 0.995
    online = [p.detach().clone() for p in list(head.backbone.parameters()) + list(head.projector.parameters())]
    before = [p.detach().clone() for p in head.target.parameters()]
    assert head.rate() == pytest.approx(0.995)
    inputs, _ = batch(task, noise_images(4, 16))
    head.train()
    head(inputs)
    assert int(head.step) == 6
    for t, b, o in zip(head.target.parameters(), before, online):
        assert torch.allclose(t, 0.995 * b + 0.005 * o, rtol=1e-5, atol=1e-7)
    head.eval()
    snapshot = [p.detach().clone() for p in head.target.parameters()]
    head(inputs)
    assert int(head.step) == 6 and all(torch.equal(a, b) for a, b in zip(head.target.parameters(), snapshot))


def test_the_views_are_augmented_asymmetrically():
    task = create_task("byol", image_size=64)
    assert (task.recipe(0).blur_probability, task.recipe(1).blur_probability) == (1.0, 0.1)
    assert (task.recipe(0).solarize_probability, task.recipe(1).solarize_probability) == (0.0, 0.2)
    _, target = batch(task, noise_images(200, 64))
    assert target[:, 0, COL["blur"]].gt(0).all() and target[:, 1, COL["blur"]].gt(0).float().mean() < 0.25
    assert target[:, 0, COL["solarise"]].eq(0).all() and 0.05 < target[:, 1, COL["solarise"]].mean() < 0.4
    small = create_task("byol", image_size=32)
    assert small.recipe(0).blur_probability == 0.0  # no blur at 32 px (lightly's CIFAR recipe)
    assert "EMA rate 0.99" in small.render_note()


@pytest.mark.slow
def test_a_resumed_run_continues_the_schedule_and_ends_like_an_uninterrupted_one(tmp_path):
    summary, _, a, b = straight_and_resumed(tmp_path, "byol", {"proj_hidden": 32, "proj_dim": 16}, 12, seed=6)
    assert summary["chance"] == pytest.approx(1 / 7)  # the loop told the task its batch
    assert int(a["step"]) == 9  # 3 epochs of 3 steps: the schedule ran to its end
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
