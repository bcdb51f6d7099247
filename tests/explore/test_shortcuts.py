"""Shortcut checks: declared defences, the table's numbers against a direct computation, and a tiny run end to end."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sslstudio.engine import PretrainConfig, pretrain
from sslstudio.engine.loader import VAL_EPOCH, batch_seed
from sslstudio.explore.activations import write_activation_maps
from sslstudio.explore.shortcuts import (blank_borders, measure_checks, paired_bootstrap, shortcut_markdown,
                                         write_shortcut_table)
from sslstudio.models import build_backbone
from sslstudio.runs import RunDir
from sslstudio.tasks import create_task, get_task, list_tasks
from sslstudio.tasks.base import Defence


def images(n=16, size=32, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    arr[:, : size // 3] = (90, 140, 255)  # a "sky": up is learnable
    return arr


@pytest.mark.parametrize("name", list_tasks())
def test_each_declared_defence_switches_off_real_settings_of_its_task(name):
    cls = get_task(name)
    fields = {f.name: f.default for f in dataclasses.fields(cls.config_cls)}
    for defence in cls.defences:
        assert isinstance(defence, Defence) and defence.name and defence.description
        assert defence.off and set(defence.off) <= set(fields), (name, defence.name, defence.off)
        assert any(fields[k] != v for k, v in defence.off.items()), f"{name}: {defence.name} is off by default"
        create_task(name, defence.off, image_size=64)  # valid settings


def test_context_and_jigsaw_declare_their_defences_rotation_none():
    assert {d.name for d in get_task("context").defences} >= {"gap", "jitter", "colour dropping / projection"}
    assert {d.name for d in get_task("jigsaw").defences} >= {"gaps between tiles", "greyscale", "channel jitter"}
    assert get_task("rotation").defences == () and get_task("autoencoder").defences == ()


def direct_accuracy(model, task, items, seed):
    """The model's accuracy on the one batch the table makes of ``items``, computed here by hand."""
    task.prepare(items, seed)
    generator = torch.Generator().manual_seed(batch_seed(seed, VAL_EPOCH, 0))
    x, y = task.make_batch(torch.from_numpy(items), generator, torch.arange(len(items)))
    with torch.no_grad():
        return float((model(x).argmax(1) == y.reshape(-1)).float().mean())


@pytest.mark.parametrize("name,options", [("context", {"hidden_dim": 16}),
                                          ("jigsaw", {"permutations": 4, "hidden_dim": 16})])
def test_table_accuracies_match_a_direct_computation(name, options):
    task = create_task(name, options, image_size=32)
    torch.manual_seed(0)
    model = task.build_head(build_backbone("resnet18"), 512).eval()
    data = images()
    rows = measure_checks(task, model, data, data, seed=3, batch_size=16, device=torch.device("cpu"), source="test")
    assert [r["check"] for r in rows] == [d.name for d in task.defences]
    for row in rows:
        off = create_task(name, {**options, **row["off"]}, image_size=32)
        assert row["accuracy_with"] == pytest.approx(direct_accuracy(model, create_task(name, options, 32), data, 3))
        assert row["accuracy_without"] == pytest.approx(direct_accuracy(model, off, data, 3))
        assert row["gain"] == pytest.approx(row["accuracy_without"] - row["accuracy_with"])
        assert row["n"] == 16 and type(row["gain_low"]) is float and row["gain_low"] <= row["gain_high"]
    json.dumps(rows)  # plain values, for a table in the window
    # at 32 px jigsaw's tiles are 9 px: a 2/64 channel shift rounds to 0 px, so switching it off changes nothing
    if name == "jigsaw":
        jitter = rows[[r["check"] for r in rows].index("channel jitter")]
        assert jitter["identical"] and jitter["gain"] == 0.0 and "no effect" in jitter["meaning"]


def test_rotation_border_check_against_a_direct_computation():
    task = create_task("rotation", image_size=32)
    torch.manual_seed(0)
    model = task.build_head(build_backbone("resnet18"), 512).eval()
    data = images()
    (row,) = measure_checks(task, model, data, data, seed=1, batch_size=16, device=torch.device("cpu"), source="t")
    assert row["kind"] == "border check" and row["trained"] == "without"
    assert row["accuracy_with"] == pytest.approx(direct_accuracy(model, task, blank_borders(data), 1))
    assert row["accuracy_without"] == pytest.approx(direct_accuracy(model, task, data, 1))
    blanked = blank_borders(data)
    assert (blanked[:, :4] == 128).all() and (blanked[:, :, -4:] == 128).all()  # an eighth of 32 px
    assert (blanked[:, 4:-4, 4:-4] == data[:, 4:-4, 4:-4]).all()


def test_a_task_without_defences_says_so(tmp_path):
    task = create_task("autoencoder", image_size=32)
    rows = measure_checks(task, None, images(4), images(4), seed=0, batch_size=4, device="cpu", source="t")
    assert rows[0]["kind"] == "none" and rows[0]["check"] == "no defences declared"
    assert "No defences declared" in shortcut_markdown(rows, "t", "d")
    run = tmp_path / "run"  # a run folder of such a task: no checkpoint or image is read
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "autoencoder", "arch": "resnet18", "image_size": 32}))
    rows = write_shortcut_table(tmp_path / "out", str(run), str(tmp_path / "nowhere"), 32, "cpu", 0)
    assert rows[0]["kind"] == "none" and "No defences declared" in (tmp_path / "out" / "shortcuts.md").read_text()


def test_paired_bootstrap_interval_is_seeded_and_covers_the_gain():
    rng = np.random.default_rng(0)
    with_ = (rng.random(200) < 0.4).astype(float)
    without = np.where(rng.random(200) < 0.3, 1.0, with_)
    lo, hi = paired_bootstrap(with_, without, seed=5)
    assert lo < without.mean() - with_.mean() < hi and lo > 0
    assert (lo, hi) == paired_bootstrap(with_, without, seed=5)
    assert paired_bootstrap(with_, with_, seed=5) == (0.0, 0.0)


@pytest.mark.slow
def test_end_to_end_on_a_tiny_rotation_run(tmp_path):
    data = tmp_path / "imgs"
    data.mkdir()
    for i, arr in enumerate(images(24, 32, seed=1)):
        Image.fromarray(arr).save(data / f"img_{i:03d}.png")
    run = tmp_path / "run"
    summary = pretrain(PretrainConfig(task="rotation", data=str(data), out=str(run), arch="resnet18", epochs=1,
                                      batch_size=8, image_size=32, workers=0, device="cpu", seed=0, holdout=0.25))
    out = tmp_path / "explore"
    paths = write_activation_maps(out, str(run), [str(run), "random"], str(data / "img_000.png"), [], 32, "cpu", 0)
    assert [p.name for p in paths] == ["activations_run.png", "activations_random.png", "gradcam.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 400
    rows = write_shortcut_table(out, str(run), str(data), 32, "cpu", 0)
    (row,) = rows
    assert row["check"] == "borders blanked" and row["n"] == 6  # the run's 6 held-out images
    assert "held-out" in row["images"]
    # the plain column is the run's own validation: same images, same samples, same model
    assert row["accuracy_without"] == pytest.approx(summary["final_val_accuracy"], abs=1e-6)
    assert RunDir(run).read_summary()["final_val_accuracy"] == summary["final_val_accuracy"]
    text = (out / "shortcuts.md").read_text()
    assert "| borders blanked |" in text and "held-out" in text
