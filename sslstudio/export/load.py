"""Loading an exported backbone back as a ready-to-use ``nn.Module``.

Nothing here unpickles arbitrary Python objects or runs code from a file: state
dicts are read with ``torch.load(..., weights_only=True)`` or :mod:`safetensors`
and ONNX files with onnxruntime. A TorchScript archive is a program, not weights:
it is opened with :func:`torch.jit.load` only when the caller passes
``trust_code=True`` (``--trust-torchscript`` on the command line), and refused
with a sentence otherwise.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sslstudio.errors import ConfigError, RunError
from sslstudio.export.formats import FILE_NAMES, METADATA_FILE, METADATA_KEY
from sslstudio.models.backbones import Backbone, resolve_arch
from sslstudio.models.weights import is_torchscript_file, load_weights_file, untrusted_code_error

__all__ = ["OnnxBackbone", "is_torchscript_file", "load_backbone", "read_export_metadata"]

#: Files looked for in an export folder, most preferred first (TorchScript only when trusted).
_DIR_PREFERENCE = ("safetensors", "pt", "torchscript", "onnx")


class OnnxBackbone(nn.Module):
    """An ONNX backbone run by onnxruntime on the CPU, usable like an ``nn.Module``.

    Inputs are converted to float32 numpy arrays; outputs come back as tensors
    on the input's device. It has no trainable parameters.

    Attributes:
        path: The ``.onnx`` file.
        metadata: The export metadata (empty if none was found).
        feature_dim: Size of the feature vector, if known from the metadata.
        arch: Architecture name, if known from the metadata.
    """

    def __init__(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> None:
        """Open an inference session on ``path``.

        Args:
            path: An ``.onnx`` file exported by :func:`sslstudio.export.export_backbone`.
            metadata: Export metadata to attach (optional).

        Raises:
            ConfigError: If onnxruntime is not installed or the file cannot be opened.
        """
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigError(
                "Running an ONNX backbone needs the onnxruntime package; install it with "
                "'pip install onnxruntime' or load the .safetensors/.pt file instead."
            ) from exc
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise ConfigError(f"The ONNX file {self.path} could not be opened ({exc}).") from exc
        self._input_name = self._session.get_inputs()[0].name
        self._output_name = self._session.get_outputs()[0].name
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.arch: str | None = self.metadata.get("arch")
        dim = self.metadata.get("feature_dim")
        self.feature_dim: int | None = int(dim) if dim is not None else None

    def forward(self, x: Tensor) -> Tensor:
        """Run the ONNX model.

        Args:
            x: Images ``[N, 3, H, W]``.

        Returns:
            Features ``[N, feature_dim]`` on ``x``'s device, float32.
        """
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (out,) = self._session.run([self._output_name], {self._input_name: array})
        return torch.from_numpy(np.asarray(out)).to(x.device)

    def extra_repr(self) -> str:  # noqa: D102 - nn.Module hook
        return f"path={str(self.path)!r}"


def _metadata_beside(path: Path) -> dict[str, Any] | None:
    meta_path = path.parent / METADATA_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"The metadata file {meta_path} is not valid JSON ({exc}).") from exc
    if not isinstance(meta, dict):
        raise RunError(f"The metadata file {meta_path} does not hold a JSON object.")
    return meta


def _embedded_metadata(path: Path) -> dict[str, Any] | None:
    text: str | None = None
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                text = (handle.metadata() or {}).get(METADATA_KEY)
        elif path.suffix == ".onnx":
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            text = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    except Exception:  # noqa: BLE001 - unreadable files are reported when loading them
        return None
    if not text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def read_export_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the export metadata of a backbone file or export folder.

    Metadata embedded in the file (safetensors, ONNX) wins over ``metadata.json``
    beside it.

    Args:
        path: An exported file or the folder holding one.

    Returns:
        The metadata, or ``None`` if there is none.
    """
    path = Path(path)
    if path.is_dir():
        return _metadata_beside(path / METADATA_FILE)
    return _embedded_metadata(path) or _metadata_beside(path)


def _require_arch(path: Path, meta: dict[str, Any] | None) -> str:
    if not meta or "arch" not in meta:
        raise RunError(
            f"The backbone file {path} does not say which architecture it holds; keep the "
            f"{METADATA_FILE} written by the export beside it."
        )
    arch = meta["arch"]
    resolve_arch(arch)
    return arch


def _backbone_from_state(path: Path, state: dict[str, Tensor], meta: dict[str, Any]) -> Backbone:
    arch = _require_arch(path, meta)
    # Build the layout on the meta device (no random init, no memory, the caller's
    # random stream untouched); the tensors from the file are then assigned.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        backbone = Backbone(arch)
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        example = (missing + wrong)[:3]
        raise RunError(
            f"The backbone file {path} does not fit the {arch} architecture named in its "
            f"metadata ({len(missing)} tensors missing, {len(wrong)} of another shape, "
            f"e.g. {', '.join(example)}); export the backbone again."
        )
    backbone.load_state_dict({k: state[k].contiguous() for k in own}, strict=True, assign=True)
    if any(t.is_meta for t in (*backbone.parameters(), *backbone.buffers())):
        raise RunError(
            f"The backbone file {path} does not hold every tensor of the {arch} "
            "architecture; export the backbone again."
        )
    backbone.metadata = dict(meta)
    return backbone


def _load_file(path: Path, device: torch.device, trust_code: bool) -> nn.Module:
    if path.suffix == ".onnx":
        meta = read_export_metadata(path) or {}
        return OnnxBackbone(path, metadata=meta)
    if path.suffix == ".safetensors":
        meta = read_export_metadata(path)
        _require_arch(path, meta)
        return _backbone_from_state(path, load_weights_file(path), meta).to(device)
    if path.name.endswith(".torchscript.pt") or is_torchscript_file(path):
        if not trust_code:
            raise untrusted_code_error(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # noqa: BLE001 - corrupt archive
            raise ConfigError(f"The TorchScript file {path} could not be loaded ({exc}).") from exc
        return module
    meta = _metadata_beside(path)
    _require_arch(path, meta)
    return _backbone_from_state(path, load_weights_file(path), meta).to(device)


def load_backbone(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                  trust_code: bool = False) -> nn.Module:
    """Load an exported backbone, ready for inference (eval mode).

    Accepts ``backbone.safetensors`` (architecture from its embedded metadata,
    else ``metadata.json`` beside it), ``backbone.pt`` (state dict; needs
    ``metadata.json`` beside it), ``backbone.onnx`` (run with onnxruntime on the
    CPU), a TorchScript archive (``.torchscript.pt`` or any ``.pt`` that is one)
    when ``trust_code`` is set, or an export folder (safetensors preferred,
    then ``.pt``, ONNX, and TorchScript only when ``trust_code`` is set).

    Args:
        path: The file or folder.
        device: Where to put the module (ONNX always computes on the CPU and
            returns outputs on the input's device).
        trust_code: Open TorchScript archives. Loading one runs code from the
            file; set it only for files whose source you trust.

    Returns:
        The module in eval mode; it maps images ``[N, 3, H, W]`` to features
        ``[N, feature_dim]``.

    Raises:
        RunError: If the path or the metadata needed to rebuild the backbone is missing.
        UntrustedCodeError: If the file is a TorchScript archive and ``trust_code`` is not set.
        ConfigError: If a file cannot be read or is refused for safety.
    """
    path = Path(path)
    device = torch.device(device)
    if path.is_dir():
        preference = _DIR_PREFERENCE if trust_code else tuple(f for f in _DIR_PREFERENCE if f != "torchscript")
        for fmt in preference + ("torchscript",):
            candidate = path / FILE_NAMES[fmt]
            if candidate.is_file():
                path = candidate
                break
        else:
            raise RunError(
                f"The folder {path} holds no exported backbone (expected one of "
                f"{', '.join(FILE_NAMES[f] for f in _DIR_PREFERENCE)})."
            )
    elif not path.is_file():
        raise RunError(f"The backbone file {path} does not exist; check the path.")
    module = _load_file(path, device, trust_code)
    module.eval()
    return module
