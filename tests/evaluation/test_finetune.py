import json

import numpy as np
import pytest
import torch

from sslstudio.errors import ConfigError, DataError
from sslstudio.evaluation import FinetuneConfig, compare, finetune, load_labelled_data, probe_grid, stage_features
from sslstudio.models import build_backbone


def job(demo_root, tmp_path, **kw):
    base = dict(init="random", labelled=str(demo_root / "labelled"), mode="head", out=str(tmp_path / "ft"),
                arch="resnet18", epochs=2, image_size=32, device="cpu", seed=0, batch_size=8)
    base.update(kw)
    return FinetuneConfig(**base)


def test_head_mode_writes_per_epoch_test_accuracy(demo_root, tmp_path):
    summary = finetune(job(demo_root, tmp_path))
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["test_source"] == "folder" and summary["classes"] == 4
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in records)
    saved = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert saved["test_accuracy"] == records[-1]["test_accuracy"]


@pytest.mark.slow
def test_head_mode_leaves_the_backbone_untouched_and_all_mode_trains_it(demo_root, tmp_path, monkeypatch):
    import sslstudio.evaluation.finetuning as ft

    seen = {}
    original = ft.resolve_init

    def spy(*args, **kwargs):
        backbone, info = original(*args, **kwargs)
        seen["backbone"] = backbone
        seen["before"] = {k: v.clone() for k, v in backbone.state_dict().items()}
        return backbone, info

    monkeypatch.setattr(ft, "resolve_init", spy)
    finetune(job(demo_root, tmp_path, mode="head"))
    after = seen["backbone"].state_dict()
    assert all(torch.equal(seen["before"][k], after[k]) for k in after)

    finetune(job(demo_root, tmp_path, mode="all", epochs=1, out=str(tmp_path / "all")))
    after = seen["backbone"].state_dict()
    assert not torch.equal(seen["before"]["conv1.weight"], after["conv1.weight"].cpu())


def test_layer_choice_and_probe_dimension(demo_root, tmp_path):
    summary = finetune(job(demo_root, tmp_path, layer="layer2"))
    assert summary["layer"] == "layer2"
    with pytest.raises(ConfigError, match="layer1, layer2, layer3, layer4"):
        finetune(job(demo_root, tmp_path, layer="layer9"))
    backbone = build_backbone("resnet18")
    data = load_labelled_data(str(demo_root / "labelled"), None, 64)
    for stage in backbone.stage_names():
        feats = stage_features(backbone, data.train_x[:4], stage, torch.device("cpu"), "fp32")
        assert feats.shape[0] == 4 and feats.shape[1] <= 4096
    assert probe_grid(64, 16) == 8 and probe_grid(512, 2) == 2 and probe_grid(2048, 2) == 1


def test_per_class_subset_and_split_without_test_folder(demo_root, tmp_path):
    data = load_labelled_data(str(demo_root / "labelled" / "train"), None, 32, per_class=3, seed=1)
    assert len(data.train_y) == 4 * 3
    assert data.test_source == "split" and len(data.test_y) >= 4


def test_single_class_is_a_clear_error(tmp_path, demo_root):
    import shutil

    root = tmp_path / "one"
    shutil.copytree(demo_root / "labelled" / "train" / "house", root / "house")
    with pytest.raises(DataError, match="two classes"):
        finetune(job(demo_root, tmp_path, labelled=str(root)))


def test_imagenet_baseline_uses_local_weights(demo_root, tmp_path, monkeypatch, no_network):
    """With the torchvision file in TORCH_HOME's hub cache, the imagenet row runs on those weights."""
    import torchvision

    from sslstudio.models import imagenet_checkpoint_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    torch.manual_seed(123)
    reference = torchvision.models.resnet18().state_dict()
    path = imagenet_checkpoint_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    backbone = build_backbone("resnet18", weights="imagenet")
    assert torch.equal(backbone.state_dict()["layer3.1.conv2.weight"], reference["layer3.1.conv2.weight"])
    rows = compare(str(demo_root / "labelled"), str(tmp_path / "cmp"), [], baselines=["imagenet"], modes=["head"],
                   arch="resnet18", image_size=32, device="cpu", feature_cache=False)["rows"]
    assert rows[0]["test_accuracy"] is not None and "error" not in rows[0]


def test_label_fraction_keeps_a_seeded_share_of_each_class(demo_root):
    half = load_labelled_data(str(demo_root / "labelled"), None, 32, fraction=0.5, seed=3)
    assert np.bincount(half.train_y).tolist() == [3, 3, 3, 3]  # 6 per class in the fixture
    again = load_labelled_data(str(demo_root / "labelled"), None, 32, fraction=0.5, seed=3)
    assert np.array_equal(half.train_x, again.train_x)
    with pytest.raises(ConfigError, match="not both"):
        load_labelled_data(str(demo_root / "labelled"), None, 32, per_class=2, fraction=0.5)
