"""sslstudio: self-supervised learning with pretext tasks.

The engine (everything outside :mod:`sslstudio.gui`) never imports Qt.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_backbone"]


def load_backbone(path, device="cpu", trust_code=False):
    """Load an exported backbone (``.safetensors``, ``.pt`` or ONNX; TorchScript only with
    ``trust_code=True``, since opening one runs code from the file) as an ``nn.Module``."""
    from sslstudio.export import load_backbone as _load

    return _load(path, device=device, trust_code=trust_code)
