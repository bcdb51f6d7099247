"""SimCLR and the shared two-view machinery: NT-Xent against a hand computation, the matching metric, the
collapse guard, the head's view layout and the collapse figure in a real run's epoch records."""

import json
import math

import numpy as np
import pytest
import torch

from sslstudio.engine import PretrainConfig, pretrain
from sslstudio.models import build_backbone
from sslstudio.tasks import create_task
from sslstudio.tasks.contrastive import CollapseWatch, collapse_std, match_accuracy, nt_xent
from tests.tasks.reference import batch, noise_images


def nt_xent_by_hand(z1, z2, t):
    """SimCLR's Algorithm 1 written out: l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t) over the
    2N views, averaged."""
    views = [np.array(v) / math.sqrt(sum(x * x for x in v)) for v in [*z1.tolist(), *z2.tolist()]]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n
        denominator = sum(math.exp(float(views[i] @ views[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(views[i] @ views[j]) / t) / denominator)
    return total / (2 * n)


def test_nt_xent_equals_the_formula_written_out():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    for t in (0.5, 0.2):
        assert float(nt_xent(z1, z2, t)) == pytest.approx(nt_xent_by_hand(z1, z2, t), rel=1e-5)


def test_nt_xent_is_smallest_when_the_positives_match():
    z = torch.eye(4)  # four orthogonal directions
    matched = float(nt_xent(z, z, 0.5))
    for perm in ([1, 0, 2, 3], [3, 2, 1, 0], [1, 2, 3, 0]):
        assert float(nt_xent(z, z[perm], 0.5)) > matched + 0.1
    z1 = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    assert float(nt_xent(z1, z1, 0.5)) < float(nt_xent(z1, torch.randn(4, 4), 0.5))


def test_matching_accuracy_finds_partners_among_the_batch():
    z = torch.eye(6)
    assert match_accuracy(z, z + 0.01) == (12.0, 12)
    assert match_accuracy(z, z[[1, 2, 3, 4, 5, 0]])[0] < 12
    assert create_task("simclr", image_size=16).chance_level(64) == pytest.approx(1 / 127)
    assert create_task("simclr", image_size=16).chance_level() is None  # the batch is not known


def test_collapse_figure_is_zero_for_identical_and_one_over_root_d_for_random_projections():
    d = 128
    same = torch.randn(1, d).expand(500, d)
    assert collapse_std(same) == pytest.approx(0.0, abs=1e-6)
    spread = torch.randn(4000, d, generator=torch.Generator().manual_seed(2))
    assert collapse_std(spread) == pytest.approx(1 / math.sqrt(d), rel=0.03)
    watch = CollapseWatch()
    for part in spread.split(512):
        watch.add(part)
    assert watch.value() == pytest.approx(collapse_std(spread), rel=1e-6)


def test_the_epoch_figure_warns_when_every_image_maps_to_one_point():
    task = create_task("simclr", image_size=16)
    backbone = build_backbone("resnet18")
    head = task.build_head(backbone, backbone.feature_dim)
    head.eval()  # a held-out batch
    same = torch.ones(8, 2, 128)
    task.metric(same, torch.zeros(8, 2, 13))
    extra = task.epoch_extra(head)
    assert extra["collapse_std"] == pytest.approx(0.0, abs=1e-6)
    assert extra["collapse_healthy"] == pytest.approx(1 / math.sqrt(128))
    assert "collapsed" in extra["warnings"][0]
    assert task.epoch_extra(head) == {}  # reset after each epoch
    task.metric(torch.randn(64, 2, 128), torch.zeros(64, 2, 13))
    assert "warnings" not in task.epoch_extra(head)


def test_the_head_projects_each_view_of_each_image_to_its_own_slot():
    task = create_task("simclr", image_size=16)
    inputs, target = batch(task, noise_images(3, 16))
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    head = task.build_head(backbone, backbone.feature_dim).eval()
    with torch.no_grad():
        out = head(inputs)
        one = head.projector(head.backbone(inputs[2, 1:2]))
    assert out.shape == (3, 2, 128) and torch.allclose(out[2, 1], one[0], atol=1e-5)
    assert torch.isfinite(task.loss(out, target))


def test_a_run_records_the_collapse_figure_in_its_epoch_records(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for k, img in enumerate(noise_images(24, 16, seed=3)):
        Image.fromarray(img).save(folder / f"{k}.png")
    summary = pretrain(PretrainConfig(task="simclr", data=str(folder), out=str(tmp_path / "run"), arch="resnet18",
                                      epochs=1, batch_size=8, image_size=16, device="cpu", workers=0, seed=0,
                                      holdout=0.2))
    assert summary["status"].startswith("finished")
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    record = [e for e in epochs if e["type"] == "epoch"][-1]
    assert 0 < record["collapse_std"] <= 1 and record["collapse_healthy"] == pytest.approx(1 / math.sqrt(128))
    assert 0 <= record["val_accuracy"] <= 1


def test_the_spread_line_says_how_far_from_well_spread_and_from_collapse():
    from sslstudio.tasks.contrastive import spread_text

    assert spread_text({}) is None and spread_text({"collapse_std": 0.1}) is None  # a pretext task's epoch
    text = spread_text({"collapse_std": 0.0442, "collapse_healthy": 1 / math.sqrt(128)})
    assert text == ("projection spread 0.0442 (50% of the 0.0884 of well spread outputs; "
                    "collapsed below 0.0088)")
