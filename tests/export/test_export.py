"""Tests for :mod:`sslstudio.export` (writing and loading exported backbones)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import sslstudio
from sslstudio.errors import ConfigError, RunError
from sslstudio.export import (
    FORMATS,
    OnnxBackbone,
    export_backbone,
    is_torchscript_file,
    load_backbone,
    read_export_metadata,
)
from sslstudio.models import IMAGENET_MEAN, IMAGENET_STD, Backbone, build_backbone

SIZE = 32
EXPECTED_FILES = [
    "backbone.pt",
    "backbone.safetensors",
    "backbone.torchscript.pt",
    "backbone.onnx",
    "metadata.json",
]


@pytest.fixture(scope="module")
def resnet18() -> Backbone:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    # Non-trivial BatchNorm statistics so that eval-mode export is actually checked.
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return backbone.train()


@pytest.fixture(scope="module")
def exported(resnet18: Backbone, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("export") / "resnet18"
    paths = export_backbone(
        resnet18, out, image_size=SIZE, metadata={"task": "rotation", "source_run": "runs/r1"}
    )
    return out, paths


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(resnet18: Backbone, images: torch.Tensor) -> torch.Tensor:
    was_training = resnet18.training
    resnet18.eval()
    with torch.no_grad():
        features = resnet18(images)
    resnet18.train(was_training)
    return features


@pytest.mark.slow
def test_all_formats_are_written_and_nothing_else(exported: tuple[Path, list[Path]]) -> None:
    out, paths = exported
    assert [p.name for p in paths] == EXPECTED_FILES
    assert all(p.parent == out and p.is_file() for p in paths)
    # No temporary files and no external ONNX data file are left behind.
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED_FILES)


def test_export_leaves_the_given_backbone_untouched(
    resnet18: Backbone, exported: tuple[Path, list[Path]]
) -> None:
    assert resnet18.training
    assert all(p.requires_grad for p in resnet18.parameters())


def test_pt_is_a_plain_torchvision_state_dict(
    exported: tuple[Path, list[Path]], resnet18: Backbone, images: torch.Tensor, reference: torch.Tensor
) -> None:
    out, _ = exported
    state = torch.load(out / "backbone.pt", map_location="cpu", weights_only=True)
    assert type(state) is dict
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model = torchvision.models.resnet18()
    result = model.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    model.fc = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), reference)


def test_safetensors_holds_the_same_tensors_and_the_metadata(
    exported: tuple[Path, list[Path]], resnet18: Backbone
) -> None:
    out, _ = exported
    tensors = load_file(str(out / "backbone.safetensors"))
    own = resnet18.state_dict()
    assert list(tensors) != [] and set(tensors) == set(own)
    for key, value in own.items():
        assert torch.equal(tensors[key], value), key
    with safe_open(str(out / "backbone.safetensors"), framework="pt") as handle:
        embedded = json.loads(handle.metadata()["sslstudio"])
    assert embedded == json.loads((out / "metadata.json").read_text())


def test_metadata_json(exported: tuple[Path, list[Path]]) -> None:
    out, _ = exported
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["arch"] == "resnet18"
    assert meta["torchvision_arch"] == "resnet18"
    assert meta["feature_dim"] == 512
    assert meta["input_size"] == SIZE
    assert meta["mean"] == list(IMAGENET_MEAN)
    assert meta["std"] == list(IMAGENET_STD)
    assert meta["formats"] == list(FORMATS)
    assert meta["files"] == {
        "pt": "backbone.pt",
        "safetensors": "backbone.safetensors",
        "torchscript": "backbone.torchscript.pt",
        "onnx": "backbone.onnx",
    }
    assert meta["task"] == "rotation"
    assert meta["source_run"] == "runs/r1"
    assert read_export_metadata(out) == meta
    assert read_export_metadata(out / "backbone.onnx") == meta


def test_torchscript_matches_pytorch(
    exported: tuple[Path, list[Path]], images: torch.Tensor, reference: torch.Tensor
) -> None:
    out, _ = exported
    module = torch.jit.load(str(out / "backbone.torchscript.pt"))
    with torch.no_grad():
        torch.testing.assert_close(module(images), reference, atol=1e-4, rtol=1e-4)


def test_onnx_is_self_contained_and_matches_pytorch(
    exported: tuple[Path, list[Path]], resnet18: Backbone
) -> None:
    import onnxruntime as ort

    out, _ = exported
    model = onnx.load(str(out / "backbone.onnx"), load_external_data=False)
    onnx.checker.check_model(model)
    assert not any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer
    )
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["features"]

    session = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    batch = torch.randn(3, 3, SIZE, SIZE)  # another batch size than the trace: dynamic axis
    (features,) = session.run(["features"], {"images": batch.numpy()})
    with torch.no_grad():
        expected = resnet18.eval()(batch)
    resnet18.train()
    assert features.shape == (3, 512)
    torch.testing.assert_close(torch.from_numpy(features), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("backbone.pt", Backbone),
        ("backbone.safetensors", Backbone),
        ("backbone.torchscript.pt", torch.jit.ScriptModule),
        ("backbone.onnx", OnnxBackbone),
        ("", Backbone),
    ],
)
def test_load_backbone_from_every_file_and_the_folder(
    exported: tuple[Path, list[Path]],
    images: torch.Tensor,
    reference: torch.Tensor,
    name: str,
    kind: type,
) -> None:
    out, _ = exported
    module = load_backbone(out / name if name else out, trust_code=name.endswith(".torchscript.pt"))
    assert isinstance(module, kind)
    assert not module.training
    with torch.no_grad():
        features = module(images)
    torch.testing.assert_close(features, reference, atol=1e-4, rtol=1e-4)


def test_top_level_load_backbone_delegates(
    exported: tuple[Path, list[Path]], images: torch.Tensor, reference: torch.Tensor
) -> None:
    out, _ = exported
    module = sslstudio.load_backbone(out / "backbone.safetensors", device="cpu")
    assert module.arch == "resnet18"
    with torch.no_grad():
        torch.testing.assert_close(module(images), reference)


def test_loading_does_not_disturb_the_random_stream(exported: tuple[Path, list[Path]]) -> None:
    out, _ = exported
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_backbone(out / "backbone.pt")
    assert torch.equal(torch.rand(3), expected)


def test_safetensors_alone_carries_its_architecture(
    exported: tuple[Path, list[Path]], tmp_path: Path, images: torch.Tensor, reference: torch.Tensor
) -> None:
    out, _ = exported
    shutil.copy(out / "backbone.safetensors", tmp_path / "weights.safetensors")
    module = load_backbone(tmp_path / "weights.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(module(images), reference)


def test_pt_without_metadata_is_refused_with_a_sentence(
    exported: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    out, _ = exported
    shutil.copy(out / "backbone.pt", tmp_path / "backbone.pt")
    with pytest.raises(RunError, match="metadata.json"):
        load_backbone(tmp_path / "backbone.pt")


def test_torchscript_is_detected_by_content(
    exported: tuple[Path, list[Path]], tmp_path: Path, images: torch.Tensor, reference: torch.Tensor
) -> None:
    out, _ = exported
    assert is_torchscript_file(out / "backbone.torchscript.pt")
    assert not is_torchscript_file(out / "backbone.pt")
    shutil.copy(out / "backbone.torchscript.pt", tmp_path / "model.pt")
    module = load_backbone(tmp_path / "model.pt", trust_code=True)
    assert isinstance(module, torch.jit.ScriptModule)
    with torch.no_grad():
        torch.testing.assert_close(module(images), reference, atol=1e-4, rtol=1e-4)


def test_unsafe_pt_is_refused(exported: tuple[Path, list[Path]], tmp_path: Path) -> None:
    out, _ = exported
    shutil.copy(out / "metadata.json", tmp_path / "metadata.json")
    torch.save({"conv1.weight": torch.zeros(1), "extra": Path("x")}, tmp_path / "backbone.pt")
    with pytest.raises(ConfigError, match="refused for safety"):
        load_backbone(tmp_path / "backbone.pt")


def test_missing_paths_are_reported(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="does not exist"):
        load_backbone(tmp_path / "nothing.safetensors")
    with pytest.raises(RunError, match="holds no exported backbone"):
        load_backbone(tmp_path)


def test_unknown_format_is_rejected_before_writing(resnet18: Backbone, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        export_backbone(resnet18, tmp_path / "out", formats=("pt", "tflite"))
    message = str(info.value)
    assert "tflite" in message
    assert all(fmt in message for fmt in FORMATS)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_resnet18_small_round_trips_through_every_format(tmp_path: Path) -> None:
    torch.manual_seed(4)
    backbone = build_backbone("resnet18_small").eval()
    paths = export_backbone(backbone, tmp_path, image_size=16)
    assert [p.name for p in paths] == EXPECTED_FILES
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = backbone(x)
        for path in [*paths[:-1], tmp_path]:
            module = load_backbone(path, trust_code=True)
            torch.testing.assert_close(module(x), expected, atol=1e-4, rtol=1e-4)
    assert json.loads((tmp_path / "metadata.json").read_text())["arch"] == "resnet18_small"
    state = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert state["conv1.weight"].shape == (64, 3, 3, 3)


def test_alexnet_export_keeps_only_features(tmp_path: Path) -> None:
    torch.manual_seed(5)
    backbone = build_backbone("alexnet").eval()
    paths = export_backbone(backbone, tmp_path, formats=["safetensors", "pt"], image_size=64)
    assert [p.name for p in paths] == ["backbone.safetensors", "backbone.pt", "metadata.json"]
    state = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert state and all(k.startswith("features.") for k in state)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["formats"] == ["safetensors", "pt"] and meta["feature_dim"] == 256
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_backbone(tmp_path)(x), backbone(x))


@pytest.mark.slow
def test_onnx_falls_back_to_the_dynamo_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = torch.onnx.export
    calls: list[bool] = []

    def legacy_unavailable(*args, dynamo: bool = True, **kwargs):
        calls.append(dynamo)
        if not dynamo:
            raise RuntimeError("the TorchScript-based exporter is unavailable")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", legacy_unavailable)
    torch.manual_seed(6)
    backbone = build_backbone("resnet18_small").eval()
    export_backbone(backbone, tmp_path, formats=["onnx"], image_size=16)
    assert calls == [False, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.onnx", "metadata.json"]
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_backbone(tmp_path)(x), backbone(x), atol=1e-4, rtol=1e-4)
