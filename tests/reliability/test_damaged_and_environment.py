"""Damaged run files and an environment that says no: one sentence each, nothing half-written."""

import errno
import json
from pathlib import Path

import pytest
import torch

from sslstudio.cli import main
from sslstudio.runs import RunDir, ensure_folder


def _files(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def _one_sentence(err):
    """The error line: exactly one, the last thing printed (progress lines may come before it)."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


# -- damaged run files --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("damage, expected", [
    (lambda run: run.config_path.write_text("{ not json"), "config.json (the run's settings) is damaged"),
    (lambda run: run.config_path.write_text("[1, 2]"), "config.json (the run's settings) is damaged"),
    (lambda run: run.config_path.write_bytes(b"\xff\xfe\x00garbage"), "config.json (the run's settings) is damaged"),
    (lambda run: torch.save({"epoch": 1}, run.last_checkpoint), "has no 'model' entry"),
    (lambda run: run.last_checkpoint.write_bytes(run.last_checkpoint.read_bytes()[:1000]), "is damaged"),
])
@pytest.mark.parametrize("command", ["resume", "export", "finetune"])
def test_a_damaged_run_file_is_one_sentence_and_the_good_files_are_untouched(stopped, tmp_path, capsys, demo_root,
                                                                               damage, expected, command):
    _, out = stopped
    run = RunDir(out)
    damage(run)
    before = _files(out)
    argv = {"resume": ["pretrain", "--out", str(out), "--resume", "--workers", "0"],
            "export": ["export", str(out), "--out", str(tmp_path / "export"), "--format", "safetensors"],
            "finetune": ["finetune", "--init", str(out), "--labelled", str(demo_root / "labelled"),
                         "--out", str(tmp_path / "ft")]}[command]
    code = main(argv)
    line = _one_sentence(capsys.readouterr().err)
    assert code == 2 and expected in line
    assert _files(out) == before
    assert not (tmp_path / "export").exists() and not (tmp_path / "ft").exists()


def test_a_checkpoint_of_another_architecture_is_named_as_such(stopped, tmp_path, capsys):
    _, out = stopped
    config = json.loads(RunDir(out).config_path.read_text())
    config["arch"] = "resnet34"  # the checkpoint holds a resnet18
    RunDir(out).config_path.write_text(json.dumps(config))
    assert main(["export", str(out), "--out", str(tmp_path / "export")]) == 2
    line = _one_sentence(capsys.readouterr().err)
    assert "does not hold a resnet34 backbone" in line and "another run or architecture" in line


def test_a_missing_best_checkpoint_says_so_and_what_to_do(stopped, tmp_path, capsys):
    _, out = stopped
    RunDir(out).best_checkpoint.unlink()
    assert main(["export", str(out), "--out", str(tmp_path / "e"), "--checkpoint", "best"]) == 2
    line = _one_sentence(capsys.readouterr().err)
    assert "best.pt is missing although last.pt is there" in line and "--checkpoint last" in line


# -- the environment says no --------------------------------------------------------------------
def _pretrain(images, out, *extra):
    return main(["pretrain", "--task", "rotation", "--data", str(images), "--out", str(out), "--epochs", "2",
                 "--batch-size", "8", "--image-size", "32", "--workers", "0", "--device", "cpu", *extra])


def test_out_naming_a_file_is_one_sentence(images, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert _pretrain(images, target) == 2
    assert "is a file, not a folder" in _one_sentence(capsys.readouterr().err)
    assert target.read_text() == "mine"
    assert _pretrain(images, target / "run") == 2  # a "parent" that is a file
    assert "cannot create" in _one_sentence(capsys.readouterr().err)


def test_a_folder_that_cannot_be_created_is_one_sentence(images, tmp_path, capsys, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)  # as a read-only parent folder answers (also when run as root)
    assert _pretrain(images, tmp_path / "locked" / "run") == 2
    assert "permission denied" in _one_sentence(capsys.readouterr().err)


def test_a_missing_parent_is_created(tmp_path):
    assert ensure_folder(tmp_path / "a" / "b" / "run") and (tmp_path / "a" / "b" / "run").is_dir()


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_a_sentence_and_keeps_the_last_complete_checkpoint(images, tmp_path, capsys,
                                                                                           monkeypatch):
    import sslstudio.runs as runs

    real, calls = runs.torch.save, []

    def fill_up(obj, fh, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # epoch 1's best and last are written; epoch 2 finds the disk full
            fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, fh, *args, **kwargs)

    monkeypatch.setattr(runs.torch, "save", fill_up)
    out = tmp_path / "run"
    assert _pretrain(images, out) == 1
    line = _one_sentence(capsys.readouterr().err)
    assert "no space left on device" in line and "--resume" in line
    assert not list(out.rglob("*.tmp"))
    assert torch.load(RunDir(out).last_checkpoint, weights_only=True)["epoch"] == 1
    monkeypatch.setattr(runs.torch, "save", real)
    assert main(["pretrain", "--out", str(out), "--resume"]) == 0  # once there is space again
