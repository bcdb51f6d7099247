"""The runs of a workspace as the window lists them, a run's headline figure and fresh run folders."""

import os
import re

from sslstudio.runs import RunDir, final_metric, list_runs, new_run_path


def make_run(root, name, summary=None, checkpoint=False, mtime=0):
    run = RunDir(root / name).create()
    run.write_config({"task": "rotation", "arch": "resnet18_small", "metric": "accuracy"})
    if summary is not None:
        run.write_summary(summary)
    if checkpoint:
        run.last_checkpoint.write_bytes(b"x")
    os.utime(run.path, (mtime, mtime))
    return run


def test_final_metric_prefers_the_held_out_figure():
    assert final_metric({"metric": "psnr", "final_val_psnr": 0.0, "final_train_psnr": 9.0}) == ("psnr", 0.0)
    assert final_metric({"final_val_accuracy": None, "final_train_accuracy": 0.5}) == ("accuracy", 0.5)
    assert final_metric({}, {"metric": "psnr"}) == ("psnr", None)


def test_list_runs_newest_first_with_status_and_resumability(tmp_path):
    root = tmp_path / "runs"
    assert list_runs(root) == []
    make_run(root, "old", {"status": "finished", "metric": "accuracy", "final_val_accuracy": 0.7}, True, 1000)
    make_run(root, "stopped", None, checkpoint=True, mtime=2000)
    make_run(root, "empty", None, mtime=3000)
    (root / "not-a-run").mkdir()
    runs = list_runs(root)
    assert [r["name"] for r in runs] == ["empty", "stopped", "old"]
    assert [(r["status"], r["resumable"]) for r in runs] == [("incomplete", False), ("has checkpoint", True),
                                                             ("finished", False)]
    assert runs[2]["value"] == 0.7 and runs[2]["task"] == "rotation" and runs[2]["arch"] == "resnet18_small"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", runs[0]["date"])
    (root / "old" / "config.json").write_text("{broken")
    assert next(r for r in list_runs(root) if r["name"] == "old")["status"] == "unreadable"


def test_new_run_path_never_reuses_a_folder(tmp_path):
    first = new_run_path(tmp_path, "jigsaw")
    assert re.fullmatch(r"jigsaw-\d{8}-\d{6}", first.name) and not first.exists()
    first.mkdir()
    second = new_run_path(tmp_path, "jigsaw")
    assert second != first and (second.name.startswith(first.name) or second.name > first.name)
