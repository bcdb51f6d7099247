"""Exporting backbones (state dict, safetensors, TorchScript, ONNX) and loading them back."""

from sslstudio.export.formats import (
    FILE_NAMES,
    FORMATS,
    METADATA_FILE,
    METADATA_KEY,
    export_backbone,
)
from sslstudio.export.load import (
    OnnxBackbone,
    is_torchscript_file,
    load_backbone,
    read_export_metadata,
)
from sslstudio.export.run import export_run

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "METADATA_FILE",
    "METADATA_KEY",
    "OnnxBackbone",
    "export_backbone",
    "export_run",
    "is_torchscript_file",
    "load_backbone",
    "read_export_metadata",
]
