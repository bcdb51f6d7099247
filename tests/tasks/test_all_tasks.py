"""Every registered task: its description, a preview, one epoch of pretraining and an export torchvision loads."""

import json
import sys

import numpy as np
import pytest
import torch
import torchvision

from sslstudio.cli import main
from sslstudio.engine import PretrainConfig, pretrain
from sslstudio.engine.preview import preview_grid
from sslstudio.export import export_run
from sslstudio.tasks import create_task, get_task, list_tasks

ALL = list_tasks()


@pytest.mark.slow
def test_tasks_command_lists_every_task_with_paper_and_metric(capsys):
    assert main(["tasks"]) == 0
    text = capsys.readouterr().out
    assert main(["tasks", "--json"]) == 0
    infos = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in infos] == ALL
    for info in infos:
        assert info["description"] and info["paper"] and info["metric"] in ("accuracy", "psnr")
        assert info["name"] in text and info["paper"] in text


@pytest.mark.parametrize("name", ALL)
def test_config_defaults_validate_and_are_documented(name):
    from sslstudio.tasks import config_fields

    cls = get_task(name)
    for field in config_fields(cls.config_cls):
        assert field["help"], f"{name}.{field['name']} has no help text"
    module_doc = sys.modules[cls.__module__].__doc__ or ""
    first_author = cls.paper.split()[0].strip(",.")
    assert first_author in module_doc, f"{name}: the module docstring does not cite {cls.paper!r}"


@pytest.mark.parametrize("name", ALL)
def test_preview_draws_a_grid(name, demo_root):
    task = create_task(name, image_size=32)
    img = preview_grid(task, str(demo_root / "unlabelled"), n=4, seed=0)
    arr = np.asarray(img)
    assert img.width >= 200 and img.height >= 100
    assert arr.std() > 10  # not a blank canvas


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_one_epoch_pretraining_and_export_into_torchvision(name, demo_root, tmp_path):
    run = tmp_path / "run"
    summary = pretrain(PretrainConfig(task=name, data=str(demo_root / "unlabelled"), out=str(run), arch="resnet18",
                                      epochs=1, batch_size=8, image_size=32, device="cpu", workers=0, seed=0,
                                      cache_dir=str(tmp_path / "cache")))  # trains from the memory-mapped cache
    assert summary["status"].startswith("finished") and summary["epochs_completed"] == 1
    metric = summary["metric"]
    value = summary[f"final_train_{metric}"]
    assert value is not None and np.isfinite(value)
    if metric == "accuracy":
        assert 0.0 <= value <= 1.0
    export_run(run, tmp_path / "export", formats=["pt"])
    model = torchvision.models.resnet18()
    result = model.load_state_dict(torch.load(tmp_path / "export" / "backbone.pt", weights_only=True), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    trained = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], trained["backbone.layer1.0.conv1.weight"])
