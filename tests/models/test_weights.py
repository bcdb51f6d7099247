"""Tests for :mod:`sslstudio.models.weights` (ImageNet cache, safe file loading)."""

from __future__ import annotations

import collections
import contextlib
import time
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import sslstudio.models.weights as weights_mod
from sslstudio.errors import ConfigError, WeightsUnavailableError
from sslstudio.models import (
    build_backbone,
    imagenet_checkpoint_path,
    imagenet_state_dict,
    imagenet_url,
    load_into_backbone,
    load_weights_file,
)

RESNET18_FILE = "resnet18-f37072fd.pth"


class _Payload:
    """An arbitrary object; unpickling it would run code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class _FancyDict(collections.OrderedDict):
    """An ``OrderedDict`` subclass unknown to the safe unpickler."""


def _seeded_resnet18_state(seed: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = torchvision.models.resnet18().state_dict()
    # Make the BatchNorm statistics recognisable too (they are constant by default).
    for key, value in state.items():
        if value.is_floating_point():
            state[key] = torch.randn_like(value)
    return state


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def test_imagenet_url_and_path_follow_torchvision_and_torch_home(torch_home: Path) -> None:
    expected_url = torchvision.models.get_model_weights("resnet18").IMAGENET1K_V1.url
    assert imagenet_url("resnet18") == expected_url
    assert imagenet_url("resnet18_small") == expected_url
    assert imagenet_checkpoint_path("resnet18") == torch_home / "hub" / "checkpoints" / RESNET18_FILE


def test_imagenet_weights_are_read_from_torch_home(torch_home: Path) -> None:
    state = _seeded_resnet18_state()
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / RESNET18_FILE)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone = build_backbone("resnet18", weights="imagenet")
    loaded = backbone.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    report = backbone.load_report
    assert report["loaded"] == len(loaded)
    assert report["missing"] == [] and report["unexpected"] == [] and report["shape_mismatch"] == []
    assert set(imagenet_state_dict("resnet18")) == set(state)


def test_imagenet_weights_for_resnet18_small_skip_conv1_with_a_warning(torch_home: Path) -> None:
    state = _seeded_resnet18_state()
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / RESNET18_FILE)

    with pytest.warns(UserWarning, match="conv1.weight"):
        backbone = build_backbone("resnet18_small", weights="imagenet")
    assert backbone.conv1.weight.shape == (64, 3, 3, 3)
    assert torch.equal(backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert torch.equal(backbone.bn1.weight, state["bn1.weight"])
    report = backbone.load_report
    assert len(report["shape_mismatch"]) == 1
    assert report["shape_mismatch"][0].startswith("conv1.weight")
    assert report["missing"] == []


def test_missing_imagenet_weights_raise_a_helpful_error(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(url: str, path: Path) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights_mod, "_download", no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone("resnet18", weights="imagenet")
    message = str(info.value)
    folder = torch_home / "hub" / "checkpoints"
    assert RESNET18_FILE in message
    assert str(folder) in message
    assert imagenet_url("resnet18") in message
    assert "--weights FILE" in message
    assert message.endswith(".")


def test_failed_download_leaves_no_partial_file(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reachable(address, timeout=None):
        assert timeout is not None and timeout <= 5
        return contextlib.nullcontext()

    def broken_download(url: str, dst: str, progress: bool = True) -> None:
        Path(dst).write_bytes(b"half a file")
        raise ConnectionResetError("connection reset")

    monkeypatch.setattr(weights_mod.socket, "create_connection", reachable)
    monkeypatch.setattr(weights_mod.torch.hub, "download_url_to_file", broken_download)
    with pytest.raises(WeightsUnavailableError, match="alexnet"):
        imagenet_state_dict("alexnet")
    folder = torch_home / "hub" / "checkpoints"
    assert not any(folder.iterdir())


def test_offline_download_attempt_fails_fast(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(address, timeout=None):
        assert timeout is not None and timeout <= 5
        raise OSError("no route to host")

    def must_not_download(*args, **kwargs) -> None:
        raise AssertionError("no download may start when the host is unreachable")

    monkeypatch.setattr(weights_mod.socket, "create_connection", refused)
    monkeypatch.setattr(weights_mod.torch.hub, "download_url_to_file", must_not_download)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="resnet50-"):
        build_backbone("resnet50", weights="imagenet")
    assert time.monotonic() - start < 5


def test_unsafe_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(str(marker))}, path)
    with pytest.raises(ConfigError, match="refused for safety"):
        load_weights_file(path)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="refused for safety"):
        build_backbone("resnet18", weights=path)
    assert not marker.exists()


def test_ordered_dict_subclass_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fancy.pth"
    torch.save(_FancyDict({"conv1.weight": torch.zeros(1)}), path)
    with pytest.raises(ConfigError, match="refused for safety"):
        load_weights_file(path)


def test_plain_state_dict_and_nested_checkpoints_are_accepted(tmp_path: Path) -> None:
    state = {"conv1.weight": torch.randn(2, 3), "bn1.bias": torch.randn(2)}
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "nested.pt")
    torch.save({"model": state, "optimizer": {"lr": 0.1}}, tmp_path / "model.pth")
    for name in ("plain.pt", "nested.pt", "model.pth"):
        loaded = load_weights_file(tmp_path / name)
        assert set(loaded) == set(state), name
        for key in state:
            assert torch.equal(loaded[key], state[key])


def test_safetensors_are_accepted(tmp_path: Path) -> None:
    state = {"conv1.weight": torch.randn(4, 3, 3, 3), "bn1.weight": torch.randn(4)}
    save_file(state, str(tmp_path / "w.safetensors"))
    loaded = load_weights_file(tmp_path / "w.safetensors")
    assert set(loaded) == set(state)
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])


def test_wrapper_prefixes_are_stripped_only_when_all_keys_have_them(tmp_path: Path) -> None:
    state = {"conv1.weight": torch.randn(2), "layer1.0.bn1.bias": torch.randn(2)}
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")
    assert set(load_weights_file(tmp_path / "ddp.pt")) == set(state)
    torch.save({f"module.backbone.{k}": v for k, v in state.items()}, tmp_path / "both.pt")
    assert set(load_weights_file(tmp_path / "both.pt")) == set(state)
    mixed = {"module.conv1.weight": torch.randn(2), "head.weight": torch.randn(2)}
    torch.save(mixed, tmp_path / "mixed.pt")
    assert set(load_weights_file(tmp_path / "mixed.pt")) == set(mixed)


def test_missing_or_tensorless_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_weights_file(tmp_path / "nope.pt")
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pt")
    with pytest.raises(ConfigError, match="no state dict"):
        load_weights_file(tmp_path / "no_tensors.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="could not be read"):
        load_weights_file(tmp_path / "garbage.pt")


def test_load_into_backbone_reports_and_drops_classifier() -> None:
    torch.manual_seed(0)
    source = torchvision.models.resnet18().state_dict()
    source.pop("layer4.1.bn2.bias")
    source["extra.weight"] = torch.zeros(1)
    source["layer1.0.conv1.weight"] = torch.zeros(5)
    backbone = build_backbone("resnet18")
    report = load_into_backbone(backbone, source)
    assert report["missing"] == ["layer4.1.bn2.bias"]
    assert report["unexpected"] == ["extra.weight"]
    assert len(report["shape_mismatch"]) == 1
    assert report["shape_mismatch"][0].startswith("layer1.0.conv1.weight")
    assert report["loaded"] == len(backbone.state_dict()) - 2
    assert torch.equal(backbone.layer2[0].conv1.weight, source["layer2.0.conv1.weight"])


def test_load_into_backbone_rejects_weights_of_another_architecture() -> None:
    alexnet_state = build_backbone("alexnet").state_dict()
    with pytest.raises(ConfigError, match="different architecture"):
        load_into_backbone(build_backbone("resnet18"), alexnet_state)


def test_build_backbone_from_a_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(9)
    source = build_backbone("resnet18_small")
    save_file(
        {f"backbone.{k}": v.contiguous() for k, v in source.state_dict().items()},
        str(tmp_path / "run.safetensors"),
    )
    torch.manual_seed(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone = build_backbone("resnet18_small", weights=tmp_path / "run.safetensors")
    for key, value in source.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key


def test_imagenet_weights_status_reads_torch_home_and_a_chosen_file(torch_home: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from sslstudio.models.weights import imagenet_weights_status

    def no_download(*args, **kwargs):
        raise AssertionError("the status check must never download")

    monkeypatch.setattr(weights_mod, "_download", no_download)
    assert imagenet_weights_status("resnet18") == (False, "not on this machine")
    available, reason = imagenet_weights_status("no_such_arch")
    assert not available and "no_such_arch" in reason
    # torchvision's file in $TORCH_HOME's cache
    state = {k: v for k, v in _seeded_resnet18_state().items() if not k.startswith("fc.")}
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / RESNET18_FILE)
    assert imagenet_weights_status("resnet18") == (True, "in the local cache")
    assert imagenet_weights_status("resnet18_small")[0]  # the same file (conv1 is skipped when loading)
    # a chosen file: read safely and matched against the architecture
    mine = tmp_path / "mine.safetensors"
    save_file(state, str(mine))
    assert imagenet_weights_status("resnet18", mine) == (True, "from mine.safetensors")
    available, reason = imagenet_weights_status("resnet50", mine)
    assert not available and reason == "mine.safetensors holds no weights for resnet50"
    assert imagenet_weights_status("resnet18", tmp_path / "gone.pth") == (False, "the chosen file gone.pth is missing")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"x": _Payload(str(tmp_path / "ran"))}, unsafe)
    available, reason = imagenet_weights_status("resnet18", unsafe)
    assert not available and reason == "unsafe.pth was refused for safety"
    assert not (tmp_path / "ran").exists()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not weights")
    assert imagenet_weights_status("resnet18", junk) == (False, "junk.pth could not be read as weights")


def test_download_failures_are_told_in_words(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from sslstudio.models.weights import download_failure_reason

    def offline(url: str, path: Path) -> None:
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(weights_mod, "_download", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        imagenet_state_dict("resnet18")
    message = str(info.value)
    assert "gaierror" not in message and "offline" in message and "Choose weights file" in message
    assert download_failure_reason(TimeoutError()) == "the download host did not answer in time"
    assert "Error" not in download_failure_reason(ConnectionResetError("reset by peer"))
