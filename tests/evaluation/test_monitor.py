"""The live kNN monitor: its figures in every epoch record, a random-init reference, no effect on training."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sslstudio.engine import PretrainConfig, pretrain
from sslstudio.errors import ConfigError
from sslstudio.evaluation.monitor import KnnMonitor, format_monitor
from sslstudio.runs import RunDir

STAGES = ["layer1", "layer2", "layer3", "layer4"]


def write_unlabelled(folder, n=12, size=16):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        arr[: size // 3] = (90, 140, 255)
        Image.fromarray(arr).save(folder / f"img_{i:03d}.png")
    return folder


def write_labelled(folder, per_class=6, size=16):
    """Three classes of flat colours with noise: easy for any features."""
    rng = np.random.default_rng(1)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for name, colour in colours.items():
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(folder / name / f"{i}.png")
    return folder


def config(data, out, **kw):
    base = dict(task="rotation", data=str(data), out=str(out), arch="resnet18_small", epochs=1, batch_size=8,
                image_size=16, workers=0, device="cpu", seed=0, log_every=1)
    base.update(kw)
    return PretrainConfig(**base)


@pytest.fixture
def folders(tmp_path):
    return write_unlabelled(tmp_path / "unlabelled"), write_labelled(tmp_path / "labelled")


def epochs_of(run_dir):
    return [r for r in RunDir(run_dir).read_metrics() if r["type"] == "epoch"]


def weights(run_dir):
    return torch.load(RunDir(run_dir).last_checkpoint, weights_only=True)["model"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three 3-epoch runs on the same images: without the monitor, with it after every epoch, and with
    it every 2 epochs, stopped after epoch 1 and resumed from the run folder alone."""
    from sslstudio.engine import RunControl

    root = tmp_path_factory.mktemp("monitor_runs")
    data, labelled = write_unlabelled(root / "unlabelled"), write_labelled(root / "labelled")
    pretrain(config(data, root / "off", epochs=3))
    events = []
    summary = pretrain(config(data, root / "on", epochs=3, monitor_labelled=str(labelled)), on_event=events.append)
    control = RunControl()

    def stop_after_first_epoch(event):
        if event.kind == "checkpoint":
            control.cancel()

    pretrain(config(data, root / "resumed", epochs=3, monitor_labelled=str(labelled), monitor_every=2),
             on_event=stop_after_first_epoch, control=control)
    first = epochs_of(root / "resumed")
    # resume with the run folder only: the monitor settings come from its config.json
    pretrain(PretrainConfig(task="rotation", data="", out=str(root / "resumed"), arch="resnet18_small",
                            image_size=16, device="cpu", workers=0, resume=True))
    return {"root": root, "labelled": labelled, "events": events, "summary": summary, "first": first}


@pytest.mark.slow
def test_monitor_figures_are_in_every_epoch_record_event_and_summary(runs):
    root, labelled = runs["root"], runs["labelled"]
    records = epochs_of(root / "on")
    assert len(records) == 3
    for r in records:
        assert set(r["monitor_knn"]) == set(STAGES) and set(r["monitor_knn_random"]) == set(STAGES)
        assert all(0.0 <= v <= 1.0 for v in [*r["monitor_knn"].values(), *r["monitor_knn_random"].values()])
        assert r["monitor_s"] > 0
    assert records[0]["monitor_knn_random"] == records[2]["monitor_knn_random"]
    epoch_events = [e for e in runs["events"] if e.kind == "epoch"]
    assert [e.extra["monitor_knn"] for e in epoch_events] == [r["monitor_knn"] for r in records]
    assert [e.extra["monitor_knn_random"] for e in epoch_events] == [r["monitor_knn_random"] for r in records]
    assert runs["summary"]["monitor"]["random_knn"] == records[0]["monitor_knn_random"]
    on_disk = json.loads(RunDir(root / "on").summary_path.read_text())
    assert on_disk["monitor"]["random_knn"] == records[0]["monitor_knn_random"]
    assert on_disk["monitor"]["final_knn"] == records[-1]["monitor_knn"]
    assert RunDir(root / "on").read_config()["monitor_labelled"] == str(labelled.resolve())
    assert "monitor_knn" not in epochs_of(root / "off")[0]


def test_same_final_weights_with_and_without_the_monitor(runs):
    root = runs["root"]
    off, on, resumed = weights(root / "off"), weights(root / "on"), weights(root / "resumed")
    assert off.keys() == on.keys() == resumed.keys()
    assert all(torch.equal(off[k], on[k]) and torch.equal(off[k], resumed[k]) for k in off)
    losses = [[r["train_loss"] for r in epochs_of(root / name)] for name in ("off", "on", "resumed")]
    assert losses[0] == losses[1] == losses[2]


def test_monitor_every_n_epochs_and_the_last_across_a_resume(runs):
    root = runs["root"]
    assert len(runs["first"]) == 1 and "monitor_knn" not in runs["first"][0]
    records = epochs_of(root / "resumed")
    assert ["monitor_knn" in r for r in records] == [False, True, True]  # epoch 2, then the last (3)
    on = epochs_of(root / "on")
    assert [r["monitor_knn"] for r in records[1:]] == [r["monitor_knn"] for r in on[1:]]
    assert RunDir(root / "resumed").read_config()["monitor_every"] == 2


def test_random_reference_is_the_runs_own_starting_backbone(folders):
    _, labelled = folders
    from sslstudio.models import build_backbone

    monitor = KnnMonitor(str(labelled), "resnet18_small", 16, seed=3)
    torch.manual_seed(3)
    start = build_backbone("resnet18_small")  # how the pretraining loop builds its backbone
    assert monitor.random_reference().accuracy == monitor.evaluate(start)
    assert monitor.random_reference() is monitor.random_reference()  # computed once


def test_evaluate_restores_modes_and_leaves_every_rng_alone(folders):
    _, labelled = folders
    from sslstudio.models import build_backbone

    monitor = KnnMonitor(str(labelled), "resnet18_small", 16, seed=0, stages=["layer2", "layer4"])
    backbone = build_backbone("resnet18_small").train()
    backbone.layer1.eval()  # a module in its own mode stays in it
    torch.manual_seed(5)
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    acc = monitor.evaluate(backbone)
    assert list(acc) == ["layer2", "layer4"]
    assert torch.equal(torch.get_rng_state(), before) and np.array_equal(np.random.get_state()[1], np_before)
    assert backbone.training and not backbone.layer1.training and backbone.layer2.training


@pytest.mark.parametrize("make", ["missing", "one_class", "empty_class"])
def test_a_bad_monitor_folder_fails_before_training_with_one_sentence(tmp_path, folders, make):
    data, _ = folders
    bad = tmp_path / "bad"
    if make == "one_class":
        write_labelled(bad)
        for name in ("green", "blue"):
            for f in (bad / name).iterdir():
                f.unlink()
            (bad / name).rmdir()
    elif make == "empty_class":
        write_labelled(bad)
        (bad / "empty").mkdir()
    events = []
    with pytest.raises(ConfigError) as info:
        pretrain(config(data, tmp_path / "run", monitor_labelled=str(bad)), on_event=events.append)
    message = str(info.value)
    assert message.startswith(f"the kNN monitor cannot use {bad}") and message.endswith(".")
    assert "\n" not in message
    assert not [e for e in events if e.kind == "step"]  # failed before any training
    assert not RunDir(tmp_path / "run").last_checkpoint.exists()


def test_monitor_caps_and_format(folders):
    _, labelled = folders
    monitor = KnnMonitor(str(labelled), "resnet18_small", 16, max_train_per_class=2, max_test=3)
    assert len(monitor.train_y) == 6 and len(monitor.test_y) == 3
    assert sorted(np.bincount(monitor.test_y)) == [1, 1, 1]
    assert format_monitor({"layer1": 0.4123, "layer2": 0.5}, {"layer1": 0.301, "layer2": 0.25}) == \
        "kNN layer1 41.2% layer2 50.0% (random 30.1% 25.0%)"


@pytest.mark.slow
def test_cli_prints_the_monitor_line(tmp_path, folders, capsys):
    from sslstudio.cli import main

    data, labelled = folders
    code = main(["pretrain", "--task", "rotation", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--arch", "resnet18_small", "--epochs", "1", "--batch-size", "8", "--image-size", "16",
                 "--device", "cpu", "--workers", "0", "--no-cache", "--monitor-labelled", str(labelled)])
    assert code == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.strip().startswith("kNN layer1"))
    assert "(random " in line and "%" in line
