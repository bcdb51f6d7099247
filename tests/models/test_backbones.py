"""Tests for :mod:`sslstudio.models.backbones`."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from sslstudio.errors import ConfigError
from sslstudio.models import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    backbone_metadata,
    build_backbone,
    list_archs,
)

ALL_ARCHS = ["resnet18", "resnet34", "resnet50", "alexnet", "vgg16", "resnet18_small"]
FEATURE_DIM = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "alexnet": 256,
    "vgg16": 512,
    "resnet18_small": 512,
}
STAGES = {
    "resnet18": ["layer1", "layer2", "layer3", "layer4"],
    "resnet34": ["layer1", "layer2", "layer3", "layer4"],
    "resnet50": ["layer1", "layer2", "layer3", "layer4"],
    "resnet18_small": ["layer1", "layer2", "layer3", "layer4"],
    "alexnet": ["conv1", "conv2", "conv3", "conv4", "conv5"],
    "vgg16": ["block1", "block2", "block3", "block4", "block5"],
}
# (channels, spatial size) of every stage for a 32x32 input.
STAGE_SHAPES_32 = {
    "resnet18": [(64, 8), (128, 4), (256, 2), (512, 1)],
    "resnet34": [(64, 8), (128, 4), (256, 2), (512, 1)],
    "resnet50": [(256, 8), (512, 4), (1024, 2), (2048, 1)],
    "resnet18_small": [(64, 32), (128, 16), (256, 8), (512, 4)],
    "alexnet": [(64, 7), (192, 3), (384, 1), (256, 1), (256, 1)],
    "vgg16": [(64, 16), (128, 8), (256, 4), (512, 2), (512, 1)],
}
CLASSIFIER_PREFIX = {"alexnet": "classifier.", "vgg16": "classifier."}


@pytest.fixture(scope="module")
def backbones() -> dict[str, Backbone]:
    torch.manual_seed(0)
    return {arch: build_backbone(arch).eval() for arch in ALL_ARCHS}


def _torchvision_on_meta(arch: str) -> nn.Module:
    """A torchvision model with the same layout as ``arch`` (no memory, no init cost)."""
    tv_arch = ARCHS[arch]
    with torch.device("meta"):
        model = torchvision.models.get_model(tv_arch, weights=None)
        if arch == "resnet18_small":
            model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
    return model


def test_list_archs_names_every_arch() -> None:
    assert list_archs() == ALL_ARCHS


def test_unknown_arch_raises_config_error_listing_known_archs() -> None:
    with pytest.raises(ConfigError) as info:
        build_backbone("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for arch in ALL_ARCHS:
        assert arch in message
    assert message.endswith(".")


def test_imagenet_constants() -> None:
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_forward_returns_pooled_features(backbones: dict[str, Backbone], arch: str) -> None:
    backbone = backbones[arch]
    assert backbone.arch == arch
    assert backbone.torchvision_arch == ARCHS[arch]
    assert backbone.feature_dim == FEATURE_DIM[arch]
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, FEATURE_DIM[arch])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_state_dict_keys_are_torchvision_keys_without_classifier(
    backbones: dict[str, Backbone], arch: str
) -> None:
    prefix = CLASSIFIER_PREFIX.get(arch, "fc.")
    tv_keys = [k for k in _torchvision_on_meta(arch).state_dict() if not k.startswith(prefix)]
    assert list(backbones[arch].state_dict()) == tv_keys


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_state_dict_loads_into_torchvision_with_only_classifier_missing(
    backbones: dict[str, Backbone], arch: str
) -> None:
    prefix = CLASSIFIER_PREFIX.get(arch, "fc.")
    model = _torchvision_on_meta(arch)
    result = model.load_state_dict(backbones[arch].state_dict(), strict=False, assign=True)
    assert result.unexpected_keys == []
    assert result.missing_keys
    assert all(k.startswith(prefix) for k in result.missing_keys)
    if prefix == "fc.":
        assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]


def test_state_dict_really_loads_into_torchvision_resnet18() -> None:
    torch.manual_seed(3)
    backbone = build_backbone("resnet18").eval()
    model = torchvision.models.resnet18().eval()
    result = model.load_state_dict(backbone.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    model.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), backbone(x))


def test_random_init_is_torchvision_init_under_the_same_seed() -> None:
    torch.manual_seed(11)
    reference = torchvision.models.resnet18()
    torch.manual_seed(11)
    backbone = build_backbone("resnet18")
    ref_state = reference.state_dict()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, ref_state[key]), key


def test_random_init_depends_on_seed() -> None:
    torch.manual_seed(1)
    a = build_backbone("resnet18_small")
    torch.manual_seed(1)
    b = build_backbone("resnet18_small")
    torch.manual_seed(2)
    c = build_backbone("resnet18_small")
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_resnet18_small_has_cifar_stem(backbones: dict[str, Backbone]) -> None:
    small = backbones["resnet18_small"]
    assert small.conv1.kernel_size == (3, 3)
    assert small.conv1.stride == (1, 1)
    assert small.conv1.padding == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert backbones["resnet18"].conv1.kernel_size == (7, 7)


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_stages_shapes_and_channels(backbones: dict[str, Backbone], arch: str) -> None:
    backbone = backbones[arch]
    assert backbone.stage_names() == STAGES[arch]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for stage, (channels, size) in zip(STAGES[arch], STAGE_SHAPES_32[arch]):
            fmap = backbone.forward_stage(x, stage)
            assert fmap.shape == (1, channels, size, size), stage
            assert backbone.stage_channels(stage) == channels


@pytest.mark.parametrize("arch", ["resnet18", "alexnet", "vgg16"])
def test_forward_is_average_pool_of_last_stage(backbones: dict[str, Backbone], arch: str) -> None:
    backbone = backbones[arch]
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        last = backbone.forward_stage(x, backbone.stage_names()[-1])
        torch.testing.assert_close(backbone(x), last.mean(dim=(2, 3)))


def test_forward_stage_computes_only_what_is_needed(backbones: dict[str, Backbone]) -> None:
    backbone = backbones["resnet18"]
    called: list[str] = []
    handles = [
        getattr(backbone, name).register_forward_hook(lambda *_a, n=name: called.append(n))
        for name in STAGES["resnet18"]
    ]
    try:
        with torch.no_grad():
            backbone.forward_stage(torch.randn(1, 3, 32, 32), "layer2")
    finally:
        for handle in handles:
            handle.remove()
    assert called == ["layer1", "layer2"]


def test_alexnet_stage_stops_before_later_layers(backbones: dict[str, Backbone]) -> None:
    backbone = backbones["alexnet"]
    called: list[int] = []
    handles = [
        m.register_forward_hook(lambda *_a, i=i: called.append(i))
        for i, m in enumerate(backbone.features)
    ]
    try:
        with torch.no_grad():
            backbone.forward_stage(torch.randn(1, 3, 32, 32), "conv2")
    finally:
        for handle in handles:
            handle.remove()
    assert called == [0, 1, 2, 3, 4]
    assert isinstance(backbone.features[4], nn.ReLU)


def test_unknown_stage_raises_config_error(backbones: dict[str, Backbone]) -> None:
    with pytest.raises(ConfigError, match="layer1"):
        backbones["resnet18"].forward_stage(torch.randn(1, 3, 32, 32), "layer5")
    with pytest.raises(ConfigError, match="block1"):
        backbones["vgg16"].stage_channels("conv1")


def test_backbone_metadata(backbones: dict[str, Backbone]) -> None:
    meta = backbone_metadata(backbones["resnet18_small"])
    assert meta["arch"] == "resnet18_small"
    assert meta["torchvision_arch"] == "resnet18"
    assert meta["feature_dim"] == 512
    assert meta["stages"] == STAGES["resnet18_small"]
    assert meta["stage_channels"]["layer3"] == 256
    assert backbone_metadata(backbones["alexnet"])["stages"] == STAGES["alexnet"]
