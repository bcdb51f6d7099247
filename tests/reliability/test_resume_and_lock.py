"""Resume takes the run's own settings; one job per run folder; checkpoints in an order that survives a kill."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from sslstudio.cli import main
from sslstudio.engine import PretrainConfig, pretrain, resume_config
from sslstudio.errors import ConfigError, RunBusyError
from sslstudio.runs import FolderLock, RunDir

from .conftest import run_settings


@pytest.mark.slow
def test_cli_resume_of_a_non_default_seed_and_holdout_run_takes_the_runs_settings(stopped, capsys):
    _, out = stopped
    code = main(["pretrain", "--out", str(out), "--resume", "--workers", "0", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    config = RunDir(out).read_config()
    assert config["seed"] == 3 and config["holdout"] == 0.25 and config["held_out_images"] == 6
    assert RunDir(out).read_summary()["epochs_completed"] == 2


@pytest.mark.parametrize("flag, value", [("--seed", "4"), ("--holdout", "0.1"), ("--image-size", "48"),
                                         ("--arch", "resnet18_small"), ("--task", "jigsaw")])
def test_a_typed_flag_that_changes_the_run_is_refused_and_nothing_is_touched(stopped, capsys, flag, value):
    _, out = stopped
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code = main(["pretrain", "--out", str(out), "--resume", flag, value, "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert flag in err and "Traceback" not in err and "start a new run" in err
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.slow
def test_python_resume_with_defaults_left_alone_takes_the_runs_seed(stopped):
    images, out = stopped
    with pytest.raises(ConfigError, match="seed"):
        resume_config(out, seed=6)
    # seed and holdout left at their defaults: not "given", so the run's own are used
    summary = pretrain(PretrainConfig(task="rotation", data=str(images), out=str(out), resume=True, workers=0,
                                      device="cpu"))
    assert summary["status"].startswith("finished") and RunDir(out).read_config()["seed"] == 3


def test_free_settings_may_change_on_resume(stopped):
    _, out = stopped
    config = resume_config(out, workers=1, device="cpu", seed=3, task="rotation", monitor_every=2)
    assert config.resume and config.workers == 1 and config.seed == 3 and config.monitor_every == 2


def test_what_may_change_on_resume_is_declared_beside_each_setting():
    import dataclasses

    from sslstudio.engine.pretrain import FREE_ON_RESUME

    fields = dataclasses.fields(PretrainConfig)
    assert all(f.metadata.get("help") for f in fields if f.name not in ("task", "data", "out"))
    assert set(FREE_ON_RESUME) == {f.name for f in fields if f.metadata.get("free_on_resume")}
    assert {"device", "workers", "compile", "monitor_every"} <= set(FREE_ON_RESUME)
    assert not {"seed", "holdout", "image_size", "arch", "lr", "schedule", "task_options"} & set(FREE_ON_RESUME)


def test_compile_may_change_on_resume_but_nesterov_may_not(stopped):
    _, out = stopped
    assert resume_config(out, compile=True).compile is True
    with pytest.raises(ConfigError, match="--nesterov False"):
        resume_config(out, nesterov=False)


# -- one job per folder -------------------------------------------------------------------------
_HOLDER = textwrap.dedent("""
    import sys, time
    from sslstudio.runs import FolderLock
    lock = FolderLock(sys.argv[1], "pretrain").acquire()
    print("held", flush=True)
    time.sleep(120)
""")


@pytest.mark.slow
def test_a_second_job_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(images, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusyError, match=f"process {holder.pid}"):
            pretrain(PretrainConfig(**run_settings(images, out)))
        code = main(["pretrain", "--task", "rotation", "--data", str(images), "--out", str(out), "--epochs", "1",
                     "--workers", "0", "--image-size", "32", "--batch-size", "8"])
        err = capsys.readouterr().err
        assert code == 1 and str(holder.pid) in err and str(out) in err and "Traceback" not in err
        assert not (out / "config.json").exists()  # the refused job wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with FolderLock(out, "pretrain"):  # the dead process's lock is taken over
        assert json.loads((out / ".sslstudio.holder.json").read_text())["pid"] == os.getpid()


def test_two_jobs_in_one_process_are_refused_too(images, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out, "compare"):
        with pytest.raises(RunBusyError, match=f"process {os.getpid()}"):
            pretrain(PretrainConfig(**run_settings(images, out)))
    with FolderLock(out, "pretrain"):  # released when the first job ended
        pass


def test_a_job_refused_at_once_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(Exception):
        pretrain(PretrainConfig(**run_settings(tmp_path / "no-such-folder", out)))
    assert not out.exists()


# -- checkpoint order ---------------------------------------------------------------------------
_KILL_BETWEEN = textwrap.dedent("""
    import json, os, signal, sys
    import sslstudio.runs as runs
    from sslstudio.engine import PretrainConfig, pretrain
    real = runs.atomic_torch_save
    writes = []
    def save_then_die(obj, path):
        real(obj, path)
        writes.append(path)
        if len(writes) == 1:  # the first of the two checkpoint files of epoch 1 is complete
            os.kill(os.getpid(), signal.SIGKILL)
    runs.atomic_torch_save = save_then_die
    pretrain(PretrainConfig(**json.loads(sys.argv[1])))
""")


@pytest.mark.slow
def test_a_kill_between_the_checkpoint_writes_never_leaves_last_without_best(images, tmp_path):
    out = tmp_path / "run"
    settings = json.dumps(run_settings(images, out, epochs=2))
    code = subprocess.run([sys.executable, "-c", _KILL_BETWEEN, settings]).returncode
    assert code == -signal.SIGKILL
    run = RunDir(out)
    assert not run.last_checkpoint.is_file() or run.best_checkpoint.is_file()
    assert run.best_checkpoint.is_file()  # best is written first
    best = torch.load(run.best_checkpoint, weights_only=True)
    assert best["epoch"] == 1 and "model" in best


@pytest.mark.slow
def test_no_temporary_file_survives_a_restart(stopped):
    images, out = stopped
    stale = [out / "checkpoints" / ".last.pt.abc123.tmp", out / ".config.json.xyz.tmp"]
    for p in stale:
        p.write_bytes(b"")  # what a kill in the middle of a write leaves
    pretrain(PretrainConfig(task="rotation", data=str(images), out=str(out), resume=True, workers=0, device="cpu"))
    assert not any(p.exists() for p in stale)
    assert not list(out.rglob("*.tmp"))


def test_every_checkpoint_epoch_has_a_best(stopped):
    _, out = stopped
    last = torch.load(RunDir(out).last_checkpoint, weights_only=True)
    best = torch.load(RunDir(out).best_checkpoint, weights_only=True)
    assert best["epoch"] == last["best"]["epoch"] + 1
