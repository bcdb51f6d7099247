import json
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from sslstudio.engine import PretrainConfig, RunControl, pretrain
from sslstudio.errors import ConfigError, DataError
from sslstudio.runs import RunDir


def write_images(folder, n, size=24, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        arr[: size // 3] = (90, 140, 255)  # a "sky" so that up is learnable
        Image.fromarray(arr).save(folder / f"img_{i:03d}.png")
    return folder


def config(data, out, **kw):
    base = dict(task="rotation", data=str(data), out=str(out), arch="resnet18", epochs=1, batch_size=8,
                image_size=32, workers=0, device="cpu", seed=0, log_every=1)
    base.update(kw)
    return PretrainConfig(**base)


class Sink:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def kinds(self, kind):
        return [e for e in self.events if e.kind == kind]


@pytest.mark.slow
def test_one_epoch_emits_events_and_writes_the_run_directory(tmp_path):
    data = write_images(tmp_path / "imgs", 24)
    sink = Sink()
    summary = pretrain(config(data, tmp_path / "run"), on_event=sink)
    steps = sink.kinds("step")
    assert len(steps) == 2  # 23 training images (1 held out), batches of 8, last partial dropped
    assert all(s.samples_per_s > 0 and s.images_per_s > 0 and s.eta_s >= 0 for s in steps)
    assert all(s.samples_per_s == pytest.approx(4 * s.images_per_s) for s in steps)
    assert steps[-1].eta_s == 0
    assert 0.0 <= steps[0].metric <= 1.0 and np.isfinite(steps[0].loss)
    (epoch,) = sink.kinds("epoch")
    assert epoch.val_metric is not None and 0 <= epoch.val_metric <= 1
    assert len(sink.kinds("checkpoint")) == 1
    assert sink.events[-1].kind == "finished" and not sink.events[-1].cancelled

    run = RunDir(tmp_path / "run")
    cfg = run.read_config()
    assert cfg["seed"] == 0 and cfg["lr"] == 0.1 and cfg["nesterov"] is True
    assert cfg["versions"]["torch"] == torch.__version__
    assert cfg["held_out_images"] == 1 and cfg["train_images"] == 23
    records = run.read_metrics()
    assert [r["type"] for r in records] == ["step", "step", "epoch"]
    state = torch.load(run.last_checkpoint, weights_only=True)
    assert state["epoch"] == 1 and {"model", "optimizer", "scheduler", "rng"} <= set(state)
    on_disk = json.loads(run.summary_path.read_text())
    assert on_disk["status"].startswith("finished") and on_disk["skipped"] == 0
    assert summary["images_used"] == 24


@pytest.mark.slow
def test_bad_files_are_skipped_counted_and_reported(tmp_path):
    data = write_images(tmp_path / "imgs", 20)
    (data / "empty.jpg").write_bytes(b"")
    (data / "notes.jpg").write_text("this is not an image")
    good = (data / "img_000.png").read_bytes()
    (data / "cut.png").write_bytes(good[: len(good) // 2])
    summary = pretrain(config(data, tmp_path / "run"))
    assert summary["skipped"] == 3
    assert summary["skipped_by_reason"] == {"empty file": 1, "not an image": 1, "truncated": 1}
    assert summary["images_used"] == 20
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {f["reason"] for f in saved["skipped_files"]} == {"empty file", "not an image", "truncated"}


def test_empty_folder_fails_before_training_with_a_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    sink = Sink()
    with pytest.raises(DataError) as err:
        pretrain(config(tmp_path / "empty", tmp_path / "run"), on_event=sink)
    assert "no images" in str(err.value).lower() or "no image" in str(err.value).lower()
    assert sink.events[-1].kind == "failed" and sink.events[-1].message == str(err.value)
    assert not sink.kinds("step")
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_only_unreadable_files_is_a_clear_error(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        (folder / f"x{i}.jpg").write_text("nope")
    with pytest.raises(DataError, match="could be read|readable"):
        pretrain(config(folder, tmp_path / "run"))


def test_existing_run_is_not_overwritten(tmp_path):
    data = write_images(tmp_path / "imgs", 12)
    pretrain(config(data, tmp_path / "run"))
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(config(data, tmp_path / "run"))


@pytest.mark.slow
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    data = write_images(tmp_path / "imgs", 24)
    pretrain(config(data, tmp_path / "straight", epochs=3))

    control = RunControl()

    def stop_after_first_epoch(event):
        if event.kind == "checkpoint" and event.epoch == 0:
            control.cancel()

    summary = pretrain(config(data, tmp_path / "resumed", epochs=3, workers=2), on_event=stop_after_first_epoch,
                       control=control)
    assert summary["status"] == "cancelled" and summary["epochs_completed"] == 1
    summary = pretrain(config(data, tmp_path / "resumed", epochs=3, resume=True))
    assert summary["status"].startswith("finished") and summary["epochs_completed"] == 3

    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    epochs = [r["epoch"] for r in RunDir(tmp_path / "resumed").read_metrics() if r["type"] == "epoch"]
    assert epochs == [0, 1, 2]


def test_resume_with_different_settings_is_refused(tmp_path):
    data = write_images(tmp_path / "imgs", 12)
    pretrain(config(data, tmp_path / "run", epochs=1))
    with pytest.raises(ConfigError, match=r"--lr 0.5 \(the run's: 0.1\)"):
        pretrain(config(data, tmp_path / "run", epochs=1, lr=0.5, resume=True))


@pytest.mark.slow
def test_cancel_stops_between_steps_and_keeps_the_last_checkpoint(tmp_path):
    data = write_images(tmp_path / "imgs", 40)
    control = RunControl()
    sink = Sink()

    def on_event(event):
        sink(event)
        if event.kind == "step" and event.epoch == 1 and event.step == 1:
            control.cancel()

    summary = pretrain(config(data, tmp_path / "run", epochs=5), on_event=on_event, control=control)
    assert summary["status"] == "cancelled"
    assert summary["epochs_completed"] == 1
    assert max(e.epoch for e in sink.kinds("step")) == 1
    assert len([e for e in sink.kinds("step") if e.epoch == 1]) == 1
    assert torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)["epoch"] == 1
    assert sink.events[-1].kind == "finished" and sink.events[-1].cancelled


@pytest.mark.slow
def test_pause_blocks_until_resumed(tmp_path):
    data = write_images(tmp_path / "imgs", 20)
    control = RunControl()
    times = {}

    def on_event(event):
        if event.kind == "step" and event.step == 1:
            control.pause()
            times["paused"] = time.monotonic()
            threading.Timer(0.5, control.resume).start()
        if event.kind == "step" and event.step == 2:
            times["next"] = time.monotonic()

    pretrain(config(data, tmp_path / "run"), on_event=on_event, control=control)
    assert times["next"] - times["paused"] >= 0.45


@pytest.mark.slow
def test_rotation_learns_on_demo_data(tmp_path):
    """Where 'up' is unambiguous, a short CPU run reaches high held-out rotation accuracy."""
    from sslstudio.data import write_demo_data

    write_demo_data(tmp_path / "demo", seed=1, n_unlabelled=200, n_train_per_class=1, n_test_per_class=1, size=32)
    summary = pretrain(config(tmp_path / "demo" / "unlabelled", tmp_path / "run", epochs=5, batch_size=16,
                              holdout=0.2, workers=2))
    assert summary["final_val_accuracy"] >= 0.9, summary


@pytest.mark.slow
def test_the_decode_cache_is_reused_and_trains_to_the_same_weights(tmp_path):
    data = write_images(tmp_path / "imgs", 24)
    cache = tmp_path / "cache"
    runs = {}
    for name, cache_dir in (("plain", None), ("first", cache), ("second", cache)):
        sink = Sink()
        pretrain(config(data, tmp_path / name, cache_dir=str(cache_dir) if cache_dir else None, epochs=2,
                        workers=1), on_event=sink)
        runs[name] = (RunDir(tmp_path / name).load_checkpoint("last")["model"],
                      " ".join(e.message for e in sink.kinds("log")))
    assert "decode cache" not in runs["plain"][1] and "decode cache" not in runs["first"][1]
    assert "mapped from the decode cache" in runs["second"][1]
    assert len(list(cache.glob("*.npy"))) == 1
    for name in ("first", "second"):  # memory-mapped rows (read lazily) train exactly like the in-RAM array
        assert all(torch.equal(runs["plain"][0][k], runs[name][0][k]) for k in runs["plain"][0])
