"""An export appears complete or not at all: staged in a temporary folder, then renamed into place."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from sslstudio.errors import ConfigError, RunError, SSLStudioError
from sslstudio.export import export_backbone, formats
from sslstudio.models import Backbone, build_backbone

FAST = ("pt", "safetensors")


@pytest.fixture(scope="module")
def small() -> Backbone:
    torch.manual_seed(0)
    return build_backbone("resnet18_small").eval()


def export(backbone: Backbone, out: Path, fmts=FAST, **extra) -> list[Path]:
    return export_backbone(backbone, out, formats=fmts, image_size=16, metadata=extra or None)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def fail_after_safetensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pt writer (called after safetensors, see ``order``) fails half-way through its file."""
    def broken(module, tmp, meta):
        Path(tmp).write_bytes(b"half a file")
        raise RuntimeError("simulated crash in the middle of the export")

    monkeypatch.setattr(formats, "_write_pt", broken)


ORDER = ("safetensors", "pt")


@pytest.mark.slow
def test_files_and_folder_follow_the_umask(small: Backbone, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        paths = export(small, tmp_path / "out", formats.FORMATS)  # every writer: some make 0o600 files
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [0o644] * 5
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_returned_paths_are_the_final_files(small: Backbone, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = export(small, Path("nested") / "deeper" / "out")  # relative, missing parents created
    out = tmp_path / "nested" / "deeper" / "out"
    assert paths == [out / "backbone.pt", out / "backbone.safetensors", out / "metadata.json"]
    assert all(p.is_file() for p in paths)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    assert leftovers(out.parent) == []


def test_a_failed_export_leaves_no_folder(small: Backbone, tmp_path: Path, monkeypatch) -> None:
    fail_after_safetensors(monkeypatch)
    with pytest.raises(RunError, match="simulated crash") as info:
        export(small, tmp_path / "out", ORDER)
    assert "nothing was changed" in str(info.value)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # no .out.tmp-* folder either


def test_a_failed_reexport_keeps_the_earlier_export(small: Backbone, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    export(small, out, ORDER, attempt=1)
    before = snapshot(out)
    fail_after_safetensors(monkeypatch)
    with pytest.raises(RunError):
        export(small, out, ORDER, attempt=2)  # would embed other metadata in backbone.safetensors
    assert snapshot(out) == before
    assert json.loads((out / "metadata.json").read_text())["attempt"] == 1
    assert leftovers(tmp_path) == []


def test_a_failed_onnx_export_keeps_the_earlier_export(small: Backbone, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    export(small, out)
    before = snapshot(out)

    def no_onnx(module, example, path):
        raise RunError("The backbone could not be exported to ONNX (simulated).")

    monkeypatch.setattr(formats, "_onnx_export", no_onnx)
    with pytest.raises(RunError, match="ONNX"):
        export(small, out, ("pt", "safetensors", "onnx"))
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_no_space_left_is_one_sentence(small: Backbone, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"

    def full_disk(module, tmp, meta):
        Path(tmp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(formats, "_write_safetensors", full_disk)
    with pytest.raises(SSLStudioError) as info:
        export(small, out)
    message = str(info.value)
    assert message.startswith(f"Could not write the export to {out}: no space left on device (ENOSPC);")
    assert "free some space" in message and message.endswith(".") and "\n" not in message
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_unwritable_parent_is_one_sentence(small: Backbone, tmp_path: Path, monkeypatch) -> None:
    def refused(folder, prefix="", suffix=""):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder))

    monkeypatch.setattr(formats.fileutil, "mkdtemp", refused)
    with pytest.raises(RunError, match=r"permission denied \(EACCES\).*must be writable"):
        export(small, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="needs POSIX permissions that bind (not root)")
def test_a_read_only_parent_is_refused_with_a_sentence(small: Backbone, tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(RunError, match="permission denied"):
            export(small, parent / "out")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_a_reexport_replaces_the_whole_folder(small: Backbone, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(small, out)
    paths = export(small, out, ("pt",))
    assert sorted(p.name for p in out.iterdir()) == ["backbone.pt", "metadata.json"] == [p.name for p in paths]
    assert json.loads((out / "metadata.json").read_text())["formats"] == ["pt"]
    assert leftovers(tmp_path) == []


def test_an_empty_folder_is_used(small: Backbone, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    export(small, out)
    assert (out / "metadata.json").is_file() and leftovers(tmp_path) == []


def test_a_folder_with_other_files_is_refused(small: Backbone, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"not part of an sslstudio export \(notes.txt\)"):
        export(small, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me" and leftovers(tmp_path) == []


def test_a_file_as_out_is_refused(small: Backbone, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        export(small, out)
    assert out.read_text() == "a file" and leftovers(tmp_path) == []
