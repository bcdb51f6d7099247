"""SimSiam: the loss is the symmetrised negative cosine of predictions and projections, no gradient goes
through the stop-gradient branch, and crops start at 0.2 of the image."""

import pytest
import torch
import torch.nn.functional as F

from sslstudio.models import build_backbone
from sslstudio.tasks import create_task
from sslstudio.tasks.views import COL
from tests.tasks.reference import batch, noise_images


def head_and_batch(n=4, size=16, **options):
    task = create_task("simsiam", {"proj_dim": 64, "pred_hidden": 16, **options}, image_size=size)
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    head = task.build_head(backbone, backbone.feature_dim)
    inputs, target = batch(task, noise_images(n, size))
    return task, head, inputs, target


def test_the_loss_is_the_symmetrised_negative_cosine():
    task, head, inputs, target = head_and_batch()
    out = head(inputs).detach()
    assert out.shape == (4, 4, 64)
    z1, z2, p1, p2 = out.unbind(1)
    expected = 0.0
    for b in range(4):
        expected -= float(F.cosine_similarity(p1[b], z2[b], dim=0)) / 8
        expected -= float(F.cosine_similarity(p2[b], z1[b], dim=0)) / 8
    assert float(task.loss(out, target)) == pytest.approx(expected, abs=1e-5)
    assert float(task.loss(torch.cat([out[:, :2], out[:, [1, 0]]], 1), target)) == pytest.approx(-1.0, abs=1e-5)


def test_no_gradient_reaches_the_stop_gradient_branch():
    task, head, inputs, target = head_and_batch()
    out = head(inputs)
    grad, = torch.autograd.grad(task.loss(out, target), out)
    assert torch.count_nonzero(grad[:, :2]) == 0  # the projections z are targets only
    assert torch.count_nonzero(grad[:, 2:]) > 0  # the predictions p carry the gradient
    # the backbone's gradient is the one of the loss with the projections replaced by constants
    head.zero_grad()
    task.loss(head(inputs), target).backward()
    through = [p.grad.clone() for p in head.backbone.parameters()]
    head.zero_grad()
    out = head(inputs)
    const = out[:, :2].detach()
    z1, z2 = const.unbind(1)
    p1, p2 = out[:, 2], out[:, 3]
    (-(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2).backward()
    for a, b in zip(through, (p.grad for p in head.backbone.parameters())):
        assert torch.allclose(a, b, atol=1e-6)


def test_the_metric_and_collapse_guard_read_the_projections():
    task, head, inputs, target = head_and_batch()
    out = head(inputs).detach()
    scrambled = out.clone()
    scrambled[:, 2:] = 0.0  # the predictions do not enter the metric
    assert task.metric(out, target) == task.metric(scrambled, target)
    assert task.projection_dim == 64


def test_crops_start_at_a_fifth_of_the_image_and_there_is_no_blur_at_32_px():
    task = create_task("simsiam", image_size=32)
    assert task.config.min_scale == 0.2 and task.recipe(0).blur_probability == 0.0
    assert create_task("simsiam", image_size=64).recipe(1).blur_probability == 0.5
    _, target = batch(task, noise_images(64, 32))
    area = target[..., COL["height"]] * target[..., COL["width"]]
    assert area.min() >= 0.2 - 1e-5 and target[..., COL["blur"]].eq(0).all()
