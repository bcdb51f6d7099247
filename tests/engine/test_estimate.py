"""The time estimate before Start, and the CPU-sized recipe beside the paper's."""

import json

import pytest

from sslstudio.engine import estimate as est
from sslstudio.engine.estimate import CPU_LR, cpu_recipe, estimate_minutes, format_estimate, paper_recipe
from sslstudio.engine.events import Cancelled, RunControl
from sslstudio.engine.pretrain import PretrainConfig, pretrain
from sslstudio.models import list_archs
from sslstudio.settings import check_settings
from sslstudio.tasks import create_task, get_task, list_tasks


def _config(data, **kw):
    values = dict(task="rotation", arch="resnet18", image_size=16, epochs=2, batch_size=8, device="cpu", workers=0)
    values.update(kw)
    return PretrainConfig(data=str(data), out="", **values)


def test_the_estimate_scales_linearly_with_epochs(demo_root, monkeypatch):
    """With the timing fixed, the run's estimate is epochs x one epoch's: 4 epochs take twice 2 epochs."""
    rates = iter([400.0, 50.0, 200.0] * 2)  # batch making, training step, held-out forward (items/s)
    monkeypatch.setattr(est, "rate", lambda *a, **k: next(rates))
    data = demo_root / "unlabelled"
    two = estimate_minutes(_config(data, epochs=2), 1000)
    four = estimate_minutes(_config(data, epochs=4), 1000)
    assert four.seconds == pytest.approx(2 * two.seconds)
    assert four.minutes == pytest.approx(four.seconds / 60)
    # 950 training images in 118 steps of 8 = 944 trained, 50 held out; per item 1/400 + 1/50, 1/400 + 1/200
    assert two.steps_per_epoch == 118 and two.held_out_items == 50
    assert two.seconds_per_epoch == pytest.approx(944 * (1 / 400 + 1 / 50) + 50 * (1 / 400 + 1 / 200))


def test_a_real_estimate_matches_the_engines_steps_and_split(demo_root, tmp_path):
    """On tiny images: the steps per epoch and held-out images the engine then uses; a few seconds at most."""
    data = demo_root / "unlabelled"  # 40 images
    progress = []
    e = estimate_minutes(_config(data), 40, steps=2, progress=lambda done, total=0: progress.append((done, total)))
    assert e.seconds > 0 and e.samples_per_s > 0 and e.measured_s < 30
    assert e.seconds == pytest.approx(e.epochs * e.seconds_per_epoch)
    assert 2 <= e.timed_batch <= 8
    assert progress and progress[-1][0] == progress[-1][1]
    pretrain(PretrainConfig(**{**_config(data).__dict__, "out": str(tmp_path / "run"), "epochs": 1}))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (e.steps_per_epoch, e.held_out_items) == (config["steps_per_epoch"], config["held_out_images"])


def test_the_estimate_stops_when_cancelled(demo_root):
    control = RunControl()
    control.cancel()
    with pytest.raises(Cancelled):
        estimate_minutes(_config(demo_root / "unlabelled"), 40, control=control)


def test_an_empty_folder_is_timed_on_noise(tmp_path):
    (tmp_path / "empty").mkdir()
    e = estimate_minutes(_config(tmp_path / "empty", image_size=16, batch_size=4), 100, steps=1)
    assert e.seconds > 0 and e.timed_batch >= 2


@pytest.mark.parametrize("task", list_tasks())
def test_the_cpu_recipe_is_valid_for_every_task(task, tmp_path):
    recipe = cpu_recipe(task)
    cls = get_task(task)
    assert set(recipe) == {"arch", "image_size", "epochs", "batch_size", "lr"}
    assert recipe["arch"] in list_archs()
    assert recipe["image_size"] >= cls.min_image_size
    assert 1 <= recipe["epochs"] <= cls.optim.epochs
    assert recipe["batch_size"] <= cls.optim.batch_size
    # the learning rate follows the batch (linear scaling from the paper's), except where a measured one
    # replaces it because the scaled one did not learn in the recipe's epochs
    scaled = cls.optim.lr * recipe["batch_size"] / cls.optim.batch_size
    assert recipe["lr"] == pytest.approx(CPU_LR.get(task, scaled), rel=1e-2)
    assert task not in CPU_LR or CPU_LR[task] > scaled  # the replacements are larger: short runs need them
    config = PretrainConfig(task=task, data=str(tmp_path), out=str(tmp_path / "run"), **recipe)
    check_settings(config)  # every declared range
    create_task(task, image_size=recipe["image_size"])  # the task accepts the size


@pytest.mark.parametrize("task", list_tasks())
def test_the_paper_recipe_is_the_tasks_optim(task):
    optim = get_task(task).optim
    recipe = paper_recipe(task)
    assert (recipe["epochs"], recipe["batch_size"], recipe["lr"]) == (optim.epochs, optim.batch_size, optim.lr)
    assert (recipe["arch"], recipe["image_size"]) == ("resnet18", 64)


def test_format_estimate():
    assert format_estimate(12.0) == "< 1 min"
    assert format_estimate(12 * 60 + 10) == "≈ 12 min"
    assert format_estimate(65 * 60) == "≈ 1 h 05 min"
