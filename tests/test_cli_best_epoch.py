"""The CLI reads epochs from 1: a run's best epoch (stored 0-based in summary.json) is printed + 1."""

import sslstudio.engine as engine
from sslstudio.cli import main


def test_the_best_epoch_is_printed_from_one(monkeypatch, tmp_path, capsys):
    summary = {"status": "finished", "metric": "accuracy", "epochs_completed": 3, "epochs": 3, "time_s": 12.0,
               "final_train_accuracy": 0.5, "final_val_accuracy": 0.45, "samples_per_s": 100.0, "skipped": 0,
               "best": {"score": 0.4812, "epoch": 1}, "advice": None}
    monkeypatch.setattr(engine, "pretrain", lambda config, on_event=None: summary)
    (tmp_path / "data").mkdir()
    main(["pretrain", "--task", "rotation", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
          "--epochs", "3"])
    out = capsys.readouterr().out
    assert "held-out accuracy 45.0% (best 48.1% at epoch 2)" in out
