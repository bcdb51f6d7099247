"""A run says whether it learnt: "finished — not learnt" near chance, "diverged" (stopped early, last good
checkpoint kept) when its loss blows up, in summary.json, the events and the CLI's last line."""

import json

import pytest
import torch

from sslstudio.cli import main
from sslstudio.engine import PretrainConfig, pretrain, verdict
from sslstudio.runs import RunDir, list_runs
from sslstudio.tasks.rotation import RotationTask
from tests.engine.test_pretrain import Sink, write_images


def _config(data, out, **kw):
    base = dict(task="rotation", data=str(data), out=str(out), arch="resnet18", epochs=3, batch_size=2,
                image_size=16, workers=0, device="cpu", seed=0, log_every=1, holdout=0.0)
    base.update(kw)
    return PretrainConfig(**base)


def _loss_blows_up_after(monkeypatch, calls: int, rise: float):
    """From its ``calls``-th call on, rotation's loss is NaN (``rise`` NaN) or ``rise`` higher (the same
    gradients, so the model cannot bring it back down: the loss of a run that has blown up)."""
    loss = RotationTask.loss
    seen = {"n": 0}

    def patched(self, output, target):
        seen["n"] += 1
        value = loss(self, output, target)
        return value + rise if seen["n"] >= calls else value

    monkeypatch.setattr(RotationTask, "loss", patched)


def _accuracy_is(monkeypatch, fraction: float):
    """Rotation's metric reports ``fraction`` of each batch right (whatever the model does)."""
    monkeypatch.setattr(RotationTask, "metric",
                        lambda self, output, target: (fraction * target.shape[0], target.shape[0]))


def test_a_nan_loss_stops_the_run_as_diverged_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    data = write_images(tmp_path / "imgs", 8, size=16)
    _loss_blows_up_after(monkeypatch, calls=6, rise=float("nan"))  # 4 steps per epoch: in epoch 2, step 2
    sink = Sink()
    summary = pretrain(_config(data, tmp_path / "run"), on_event=sink)
    assert summary["status"] == verdict.DIVERGED == sink.kinds("finished")[-1].summary["status"]
    assert summary["epochs_completed"] == 1 and summary["diverged"]["epoch"] == 2
    assert summary["diverged"]["step"] == 2 and summary["diverged"]["loss"] != summary["diverged"]["loss"]
    assert "--lr" in summary["advice"] and "Lower" in summary["advice"]
    run = RunDir(tmp_path / "run")
    state = run.load_checkpoint("last")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert json.loads(run.summary_path.read_text())["status"] == verdict.DIVERGED
    assert any("diverged" in e.message for e in sink.kinds("log"))
    listed = list_runs(tmp_path)[0]
    assert listed["status"] == verdict.DIVERGED and not listed["resumable"]


def test_a_loss_several_times_its_start_is_divergence(tmp_path, monkeypatch):
    data = write_images(tmp_path / "imgs", 12, size=16)  # 6 steps per epoch
    _loss_blows_up_after(monkeypatch, calls=13, rise=20.0)  # from epoch 3's first step on
    summary = pretrain(_config(data, tmp_path / "run", epochs=4, lr=1e-3))
    d = summary["diverged"]
    assert summary["status"] == verdict.DIVERGED and summary["epochs_completed"] == 2
    assert d["epoch"] == 3 and d["loss"] > verdict.DIVERGE_FACTOR * d["start_loss"] > 0


def test_a_steady_loss_is_not_divergence(tmp_path, monkeypatch):
    data = write_images(tmp_path / "imgs", 12, size=16)
    _accuracy_is(monkeypatch, 1.0)
    summary = pretrain(_config(data, tmp_path / "run", epochs=2, lr=1e-4))
    assert summary["status"] == verdict.FINISHED and summary["diverged"] is None and summary["advice"] == ""
    assert summary["chance"] == pytest.approx(0.25)


def test_an_accuracy_at_chance_finishes_not_learnt_and_the_cli_says_what_to_try(tmp_path, monkeypatch, capsys):
    data = write_images(tmp_path / "imgs", 8, size=16)
    _accuracy_is(monkeypatch, 0.3)  # rotation's chance is 0.25: within the margin
    code = main(["pretrain", "--task", "rotation", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--arch", "resnet18", "--epochs", "1", "--batch-size", "4", "--image-size", "16",
                 "--device", "cpu", "--workers", "0", "--no-cache"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(verdict.NOT_LEARNT + ":") and "--epochs" in last and "25.0%" in last
    summary = RunDir(tmp_path / "run").read_summary()
    assert summary["status"] == verdict.NOT_LEARNT and summary["chance"] == pytest.approx(0.25)
    # the best epoch's index (from 0, as in metrics.jsonl) and its number as the CLI shows it (from 1)
    assert (summary["best"]["epoch"], summary["best"]["epoch_number"]) == (0, 1)


def test_the_cli_exits_1_with_the_advice_when_a_run_diverges(tmp_path, monkeypatch, capsys):
    data = write_images(tmp_path / "imgs", 8, size=16)
    _loss_blows_up_after(monkeypatch, calls=1, rise=float("nan"))
    code = main(["pretrain", "--task", "rotation", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--arch", "resnet18", "--epochs", "2", "--batch-size", "4", "--image-size", "16",
                 "--device", "cpu", "--workers", "0", "--no-cache"])
    out = capsys.readouterr()
    assert code == 1
    assert out.out.strip().splitlines()[-1].startswith(verdict.DIVERGED + ": the loss diverged")
    assert "no checkpoint" in out.err


class _NanGradient(torch.autograd.Function):
    """The identity forward; a NaN gradient backward (what torch's CPU bf16 convolution backward sometimes
    gives on small feature maps): the loss stays finite while the update would poison every weight."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


def test_a_nan_gradient_under_a_finite_loss_stops_the_run_before_its_update(tmp_path, monkeypatch, capsys):
    data = write_images(tmp_path / "imgs", 8, size=16)  # 4 steps per epoch
    loss = RotationTask.loss
    seen = {"n": 0}

    def patched(self, output, target):
        seen["n"] += 1
        return loss(self, _NanGradient.apply(output) if seen["n"] >= 6 else output, target)

    monkeypatch.setattr(RotationTask, "loss", patched)
    sink = Sink()
    summary = pretrain(_config(data, tmp_path / "run"), on_event=sink)
    d = summary["diverged"]
    assert summary["status"] == verdict.DIVERGED and (d["epoch"], d["step"], d["cause"]) == (2, 2, "gradient")
    assert d["loss"] == d["loss"] and summary["epochs_completed"] == 1  # the loss itself was finite
    assert summary["advice"].startswith("a gradient was not finite.") and "fp32" not in summary["advice"]
    state = RunDir(tmp_path / "run").load_checkpoint("last")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    said = [e.message for e in sink.kinds("log") if "gradient was not finite" in e.message]
    assert said and "epoch 2, step 2" in said[0] and "before that update" in said[0]
    assert f"(the loss was {d['loss']:.4g})" in said[0]
    assert "a gradient was not finite at epoch 2, step 2" in verdict.outcome(summary)
