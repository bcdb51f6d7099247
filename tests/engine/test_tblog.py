"""TensorBoard event files beside metrics.jsonl, read back with TensorBoard's own reader."""

import sys

import pytest

from sslstudio.engine import PretrainConfig, RunControl, pretrain, tblog
from sslstudio.engine.events import LogEvent
from sslstudio.evaluation import FinetuneConfig, finetune
from sslstudio.runs import RunDir

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``folder`` as ``{tag: [(step, value), ...]}`` in file order
    (nothing purged, nothing sampled away: a duplicate step would show)."""
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0}, purge_orphaned_data=False)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def pretrain_config(data, out, **kw):
    base = dict(task="rotation", data=str(data), out=str(out), arch="resnet18", epochs=2, batch_size=8,
                image_size=32, workers=0, device="cpu", seed=0, log_every=1)
    base.update(kw)
    return PretrainConfig(**base)


def finetune_config(demo_root, out, **kw):
    base = dict(init="random", labelled=str(demo_root / "labelled"), mode="head", out=str(out), arch="resnet18",
                epochs=2, image_size=32, device="cpu", seed=0, batch_size=8)
    base.update(kw)
    return FinetuneConfig(**base)


class Sink:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def logs(self, text):
        return [e for e in self.events if isinstance(e, LogEvent) and text in e.message]


def assert_same(got: list[tuple[int, float]], want: list[tuple[int, float]]):
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6, abs=1e-9)  # stored as float32


@pytest.mark.slow
def test_pretraining_writes_the_metrics_jsonl_scalars_epoch_by_epoch(demo_root, tmp_path):
    out = tmp_path / "run"
    pretrain(pretrain_config(demo_root / "unlabelled", out, monitor_labelled=str(demo_root / "labelled"),
                             monitor_max_test=8))
    records = RunDir(out).read_metrics()
    epochs = [r for r in records if r["type"] == "epoch"]
    steps = [r for r in records if r["type"] == "step"]
    assert len(epochs) == 2 and len(steps) >= 4
    got = scalars(out / "tensorboard")

    for tag, key in [("pretext/train_loss", "train_loss"), ("pretext/val_loss", "val_loss"),
                     ("pretext/train_accuracy", "train_accuracy"), ("pretext/val_accuracy", "val_accuracy"),
                     ("opt/lr", "lr"), ("speed/samples_per_s", "samples_per_s")]:
        assert all(r[key] is not None for r in epochs), key
        assert_same(got[tag], [(r["epoch"] + 1, r[key]) for r in epochs])
    stages = list(epochs[0]["monitor_knn"])
    assert stages == ["layer1", "layer2", "layer3", "layer4"]
    for stage in stages:
        assert_same(got[f"monitor/knn_{stage}"], [(r["epoch"] + 1, r["monitor_knn"][stage]) for r in epochs])
        assert_same(got[f"monitor/knn_random_{stage}"],
                    [(r["epoch"] + 1, r["monitor_knn_random"][stage]) for r in epochs])
    assert_same(got["pretext/chance"], [(1, 0.25), (2, 0.25)])  # rotation: four classes
    assert_same(got["step/loss"], [(r["global_step"], r["loss"]) for r in steps])
    assert_same(got["step/lr"], [(r["global_step"], r["lr"]) for r in steps])


def test_finetuning_writes_its_scalars_and_runs_sit_side_by_side(demo_root, tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    workspace = tmp_path / "runs"
    for name, lr in (("a", 1e-3), ("b", 3e-3)):
        finetune(finetune_config(demo_root, workspace / name, lr=lr))
        records = RunDir(workspace / name).read_metrics()
        assert [r["epoch"] for r in records] == [0, 1]
        got = scalars(workspace / name / "tensorboard")
        for key in ("train_loss", "train_accuracy", "test_accuracy"):
            assert_same(got[f"finetune/{key}"], [(r["epoch"] + 1, r[key]) for r in records])
        assert_same(got["opt/lr"], [(1, lr), (2, lr)])

    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(workspace))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == ["a/tensorboard", "b/tensorboard"]  # one TensorBoard run per folder
    assert [e.value for e in multiplexer.Scalars("b/tensorboard", "opt/lr")] == pytest.approx([3e-3] * 2)


@pytest.mark.slow
def test_resume_rewrites_the_kept_epochs_without_duplicates(tmp_path):
    from tests.engine.test_pretrain import write_images

    data = write_images(tmp_path / "imgs", 24)
    out = tmp_path / "run"

    class Crash(Exception):
        pass

    def crash_in_third_epoch(event):  # after its records are written, before its checkpoint: a crash
        if event.kind == "epoch" and event.epoch == 2:
            raise Crash()

    with pytest.raises(Crash):
        pretrain(pretrain_config(data, out, epochs=4), on_event=crash_in_third_epoch)
    before = scalars(out / "tensorboard")
    assert [s for s, _ in before["pretext/train_loss"]] == [1, 2, 3]  # the third epoch was logged...

    control = RunControl()

    def stop_after_third_epoch(event):
        if event.kind == "checkpoint" and event.epoch == 2:
            control.cancel()

    summary = pretrain(pretrain_config(data, out, epochs=4, resume=True), on_event=stop_after_third_epoch,
                       control=control)
    assert summary["epochs_completed"] == 3  # ...then trained again from the second epoch's checkpoint
    records = RunDir(out).read_metrics()
    epochs = [r for r in records if r["type"] == "epoch"]
    steps = [r for r in records if r["type"] == "step"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    got = scalars(out / "tensorboard")
    assert_same(got["pretext/train_loss"], [(r["epoch"] + 1, r["train_loss"]) for r in epochs])
    assert_same(got["pretext/val_accuracy"], [(r["epoch"] + 1, r["val_accuracy"]) for r in epochs])
    assert_same(got["opt/lr"], [(r["epoch"] + 1, r["lr"]) for r in epochs])
    assert_same(got["step/loss"], [(r["global_step"], r["loss"]) for r in steps])
    assert len({s for s, _ in got["step/loss"]}) == len(got["step/loss"])

    pretrain(pretrain_config(data, out, epochs=4, resume=True))  # and once more to the end
    epochs = [r for r in RunDir(out).read_metrics() if r["type"] == "epoch"]
    assert_same(scalars(out / "tensorboard")["pretext/train_loss"],
                [(r["epoch"] + 1, r["train_loss"]) for r in epochs])
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3]


def test_without_tensorboard_runs_finish_and_say_so_once(tmp_path, monkeypatch):
    from tests.engine.test_pretrain import write_images

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setattr(tblog, "_said_missing", False)
    data = write_images(tmp_path / "imgs", 12)
    sink = Sink()
    for name in ("one", "two"):
        summary = pretrain(pretrain_config(data, tmp_path / name, epochs=1), on_event=sink)
        assert summary["status"] != "failed" and summary["epochs_completed"] == 1
        assert [r["type"] for r in RunDir(tmp_path / name).read_metrics()][-1] == "epoch"
        assert not (tmp_path / name / "tensorboard").exists()
    assert len(sink.logs("TensorBoard")) == 1
    assert sink.logs("TensorBoard")[0].message == tblog.MISSING
    assert 'pip install "sslstudio[tensorboard]"' in tblog.MISSING


def test_a_folder_that_cannot_be_written_stops_the_log_with_one_warning(demo_root, tmp_path):
    out = tmp_path / "ft"
    out.mkdir()
    (out / "tensorboard").write_text("a file where the folder should be")
    sink = Sink()
    summary = finetune(finetune_config(demo_root, out), on_event=sink)
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2
    assert [r["epoch"] for r in RunDir(out).read_metrics()] == [0, 1]
    (warning,) = sink.logs("TensorBoard logging")
    assert warning.level == "warning" and "metrics.jsonl still has every record" in warning.message


def test_the_log_maps_records_to_tags_and_does_nothing_without_a_folder(tmp_path):
    scalars_of = tblog.pretext_scalars("accuracy", chance=0.25)
    epoch = {"type": "epoch", "epoch": 4, "train_loss": 1.5, "train_accuracy": 0.5, "val_loss": None,
             "val_accuracy": None, "lr": 0.1, "images_per_s": 10.0, "samples_per_s": 40.0, "epoch_time_s": 2.0,
             "nmi_previous": 0.3, "clusters": 8, "note": "text"}
    got = {tag: (value, step) for tag, value, step in scalars_of(epoch)}
    assert got == {"pretext/train_loss": (1.5, 5), "pretext/train_accuracy": (0.5, 5), "pretext/chance": (0.25, 5),
                   "opt/lr": (0.1, 5), "speed/samples_per_s": (40.0, 5), "speed/images_per_s": (10.0, 5),
                   "task/nmi_previous": (0.3, 5), "task/clusters": (8.0, 5)}
    step = {"type": "step", "epoch": 0, "step": 3, "global_step": 3, "loss": 2.0, "accuracy": 0.25, "lr": 0.01}
    assert sorted(scalars_of(step)) == [("step/loss", 2.0, 3), ("step/lr", 0.01, 3)]

    sink = Sink()
    log = tblog.pretrain_log(None, sink, "accuracy")
    log.add([epoch])
    log.close()
    assert not log.active and not sink.events and not list(tmp_path.iterdir())
