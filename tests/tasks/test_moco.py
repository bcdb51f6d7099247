"""MoCo v2: the key encoder follows theta_k <- m theta_k + (1 - m) theta_q exactly, the queue is first in,
first out and never holds the batch's own keys when the logits are formed, and a resumed run restores the
queue and the key encoder bit for bit."""

import pytest
import torch
import torch.nn.functional as F

from sslstudio.models import build_backbone
from sslstudio.tasks import create_task
from sslstudio.tasks.contrastive import momentum_update
from tests.tasks.reference import batch, noise_images, straight_and_resumed

D = 16


def head_and_task(queue_size=6, m=0.9):
    task = create_task("moco", {"proj_dim": D, "proj_hidden": 32, "queue_size": queue_size, "key_momentum": m},
                       image_size=16)
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    return task, task.build_head(backbone, backbone.feature_dim)


def test_momentum_update_is_the_exponential_moving_average():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    momentum_update(target, online, 0.75)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, 0.75 * b + 0.25 * o.detach(), rtol=1e-6, atol=1e-7)


def test_a_training_forward_moves_the_key_encoder_by_the_momentum_rule_and_an_eval_one_does_not():
    task, head = head_and_task(m=0.9)
    with torch.no_grad():  # make the encoders differ, as after some training
        for p in head.online().parameters():
            p.add_(0.01 * torch.randn_like(p))
    keys = [p.detach().clone() for p in head.key_encoder.parameters()]
    queries = [p.detach().clone() for p in head.online().parameters()]
    assert not any(p.requires_grad for p in head.key_encoder.parameters())
    inputs, _ = batch(task, noise_images(4, 16))
    head.eval()
    head(inputs)
    assert all(torch.equal(a, b) for a, b in zip(head.key_encoder.parameters(), keys))
    assert int(head.queue_ptr) == 0
    head.train()
    head(inputs)
    for k, old, q in zip(head.key_encoder.parameters(), keys, queries):
        assert torch.allclose(k, 0.9 * old + 0.1 * q, rtol=1e-5, atol=1e-7)


def test_the_queue_is_first_in_first_out_and_excludes_the_current_keys():
    task, head = head_and_task(queue_size=6)
    head.train()
    written = []
    for seed in range(3):
        inputs, target = batch(task, noise_images(4, 16, seed=seed), seed=seed)
        before = head.queue.clone()
        out = head(inputs).detach()
        q, k, negatives = out[:, :D], out[:, D:2 * D], out[:, 2 * D:]
        assert negatives.shape == (4, 6)
        assert torch.allclose(negatives, q @ before.T, atol=1e-6)  # the queue before this batch's keys
        assert not any(torch.allclose(row, key, atol=1e-6) for row in before for key in k)
        logits = torch.cat([(q * k).sum(1, keepdim=True), negatives], 1) / 0.2
        assert float(task.loss(out, target)) == pytest.approx(float(F.cross_entropy(logits, torch.zeros(4).long())),
                                                              rel=1e-5)
        written.extend(k.detach())
    # 12 keys through a queue of 6: the last 6, the oldest of them at the pointer
    assert int(head.queue_ptr) == 0
    assert torch.allclose(head.queue, torch.stack(written[6:]), atol=1e-6)


def test_the_metric_matches_queries_with_keys_and_the_preview_names_the_queue():
    task, head = head_and_task()
    inputs, target = batch(task, noise_images(4, 16))
    head.eval()
    with torch.no_grad():
        out = head(inputs)
    hits, count = task.metric(out, target)
    assert count == 8 and 0 <= hits <= 8
    same = out.clone()
    same[:, D:2 * D] = same[:, :D]
    assert task.metric(same, target) == (8.0, 8)
    assert "6 keys" in task.render_note() and task.render(inputs[0], target[0]).width >= 64


def test_export_leaves_the_key_encoder_and_queue_out_of_the_backbone():
    _, head = head_and_task()
    keys = head.state_dict().keys()
    assert "queue" in keys and "queue_ptr" in keys and any(k.startswith("key_encoder.") for k in keys)
    assert not any(k.startswith("backbone.") and ("queue" in k or "key" in k) for k in keys)


@pytest.mark.slow
def test_resume_restores_the_queue_and_key_encoder_of_an_uninterrupted_run(tmp_path):
    options = {"queue_size": 8, "proj_dim": D, "proj_hidden": 32}
    _, stopped, a, b = straight_and_resumed(tmp_path, "moco", options, 16, seed=5, stop_after_epoch=1)
    assert not torch.equal(stopped["queue"], b["queue"])  # the third epoch moved the queue on
    assert a.keys() == b.keys() and any(k.startswith("key_encoder.") for k in a)
    for key in a:  # the queue, its pointer, the key encoder and the rest, bit for bit
        assert torch.equal(a[key], b[key]), key
