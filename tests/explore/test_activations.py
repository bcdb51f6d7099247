"""Activation maps per stage, Grad-CAM, and a run's pretext model restored as trained."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from sslstudio.explore.activations import grad_cam, load_pretext_model, stage_maps, stage_module
from sslstudio.models import build_backbone
from sslstudio.tasks import create_task


class TopHalfModel(nn.Module):
    """A conv layer, global average pooling and a linear classifier, on an input whose bottom half is zeroed
    first: only the top half can speak for a class. Class 0 sums the channels, class 1 subtracts them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU())
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([torch.ones(8), -torch.ones(8)]))
            self.fc.bias.zero_()

    def forward(self, x):
        x = x.clone()
        x[..., x.shape[-2] // 2:, :] = 0
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_grad_cam_of_a_model_that_sees_only_the_top_half_is_brightest_there():
    model = TopHalfModel()
    x = torch.rand(1, 3, 32, 32)
    cam, predicted = grad_cam(model, model.features, x)
    assert predicted == int(model(x).argmax()) == 0
    assert cam.shape == (32, 32) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    top, bottom = cam[:16].mean(), cam[16:].mean()
    assert top > 3 * bottom, (top, bottom)
    assert cam[17:].max() == 0.0  # below the first masked row (which the 3x3 kernel sees from above) nothing
    assert all(p.grad is None for p in model.parameters())  # the model's parameters get no gradient
    # class 1 is spoken against by every active location: nothing survives the ReLU
    cam1, predicted1 = grad_cam(model, model.features, x, class_index=1)
    assert predicted1 == 0 and cam1.max() == 0.0


def test_grad_cam_at_a_backbone_stage_of_a_pretext_head():
    task = create_task("rotation", image_size=32)
    torch.manual_seed(0)
    model = task.build_head(build_backbone("resnet18"), 512).eval()
    x = torch.randn(1, 3, 32, 32)
    cam, predicted = grad_cam(model, stage_module(model.backbone, "layer3"), x)
    assert cam.shape == (32, 32) and 0.0 <= cam.min() and cam.max() <= 1.0
    assert predicted == int(model(x).argmax())
    assert stage_module(model.backbone, "layer4") is model.backbone.layer4


def test_stage_maps_have_the_image_shape_and_values_in_0_1():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image[:, 16:] = 128  # a flat half: the maps are not constant
    maps = stage_maps(backbone, image, ["layer1", "layer2", "layer3"], "cpu")
    assert list(maps) == ["layer1", "layer2", "layer3"]
    for stage, m in maps.items():
        assert m.shape == (32, 32), stage
        assert m.min() == pytest.approx(0.0) and m.max() == pytest.approx(1.0), stage
    assert list(stage_maps(backbone, image, [], "cpu")) == backbone.stage_names()  # empty: every stage


def _fake_run(folder, task_name, options, model):
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"task": task_name, "arch": "resnet18", "image_size": 32,
                                                    "task_options": options, "seed": 0}))
    torch.save({"model": model.state_dict(), "epoch": 1}, folder / "checkpoints" / "last.pt")


def test_load_pretext_model_restores_the_trained_head_also_where_the_data_sized_it(tmp_path):
    # DeepCluster's classifier and assignments are sized by the training data (here 3 clusters of 10 items)
    task = create_task("deepcluster", {"clusters": 3}, image_size=32)
    task.items = 10
    torch.manual_seed(1)
    trained = task.build_head(build_backbone("resnet18"), 512)
    _fake_run(tmp_path / "run", "deepcluster", {"clusters": 3}, trained)
    loaded_task, model = load_pretext_model(tmp_path / "run", "cpu")
    assert loaded_task.name == "deepcluster" and not model.training
    assert model.classifier.weight.shape == (3, 512) and model.assignments.shape == (10,)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), trained.eval()(x))


def test_gradcam_for_a_whole_image_head_and_a_note_for_tiles(tmp_path):
    from PIL import Image

    from sslstudio.explore.activations import write_activation_maps

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(image)
    task = create_task("deepcluster", {"clusters": 3}, image_size=32)
    task.items = 10
    _fake_run(tmp_path / "dc", "deepcluster", {"clusters": 3}, task.build_head(build_backbone("resnet18"), 512))
    paths = write_activation_maps(tmp_path / "out_dc", str(tmp_path / "dc"), [], str(image), ["layer1"], 32, "cpu", 0)
    assert [p.name for p in paths] == ["gradcam.png"]
    options = {"permutations": 4, "hidden_dim": 16}
    jigsaw = create_task("jigsaw", options, image_size=32)
    _fake_run(tmp_path / "jig", "jigsaw", options, jigsaw.build_head(build_backbone("resnet18"), 512))
    paths = write_activation_maps(tmp_path / "out_j", str(tmp_path / "jig"), [], str(image), [], 32, "cpu", 0)
    assert [p.name for p in paths] == ["gradcam.txt"] and "whole image" in paths[0].read_text()
    assert "tiles or patch pairs" in paths[0].read_text()
    simclr = create_task("simclr", {"proj_dim": 16, "proj_hidden": 16}, image_size=32)
    _fake_run(tmp_path / "sim", "simclr", {"proj_dim": 16, "proj_hidden": 16},
              simclr.build_head(build_backbone("resnet18"), 512))
    paths = write_activation_maps(tmp_path / "out_s", str(tmp_path / "sim"), [], str(image), [], 32, "cpu", 0)
    assert [p.name for p in paths] == ["gradcam.txt"] and "does not classify" in paths[0].read_text()
