"""Safe loading of pretrained weights into backbones.

Weights files from elsewhere are never unpickled as arbitrary Python objects:
PyTorch files are read with ``torch.load(..., weights_only=True)`` and
``.safetensors`` files with :mod:`safetensors`.
"""

from __future__ import annotations

import os
import pickle
import socket
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import Tensor

from sslstudio.errors import ConfigError, UntrustedCodeError, WeightsUnavailableError
from sslstudio.models.archs import resolve_arch

if TYPE_CHECKING:  # pragma: no cover
    from sslstudio.models.backbones import Backbone

__all__ = [
    "CLASSIFIER_PREFIXES",
    "imagenet_checkpoint_path",
    "imagenet_state_dict",
    "imagenet_url",
    "imagenet_weights_status",
    "is_torchscript_file",
    "load_into_backbone",
    "load_weights_file",
    "untrusted_code_error",
    "warn_about_report",
]

#: Key prefixes of torchvision classifier heads; these are never loaded into a backbone.
CLASSIFIER_PREFIXES: tuple[str, ...] = ("fc.", "classifier.")

#: Prefixes stripped from every key when all keys of a state dict carry them.
_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "backbone.")

#: Entries of a checkpoint dictionary that may hold the model's state dict.
_NESTED_KEYS: tuple[str, ...] = ("state_dict", "model")

#: Seconds allowed to reach the download host before giving up.
_CONNECT_TIMEOUT_S = 3.0


def _torchvision_arch(arch: str) -> str:
    return resolve_arch(arch)


def _torchvision_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of torchvision's ``arch`` by key, built on the meta device (no memory, no init)."""
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.get_model(_torchvision_arch(arch), weights=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def imagenet_url(arch: str) -> str:
    """Return the URL of torchvision's ImageNet (``IMAGENET1K_V1``) weights for ``arch``.

    Args:
        arch: An sslstudio architecture name (see :func:`sslstudio.models.list_archs`).

    Returns:
        The download URL published by torchvision.

    Raises:
        ConfigError: If ``arch`` is unknown.
    """
    import torchvision

    tv_arch = _torchvision_arch(arch)
    return torchvision.models.get_model_weights(tv_arch).IMAGENET1K_V1.url


def imagenet_checkpoint_path(arch: str) -> Path:
    """Return where the ImageNet weights file of ``arch`` is expected on this machine.

    This is ``<torch hub dir>/checkpoints/<file name of the URL>``; the hub
    directory honours ``$TORCH_HOME``.

    Args:
        arch: An sslstudio architecture name.

    Returns:
        The expected path of the weights file (it may not exist).
    """
    url = imagenet_url(arch)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _download(url: str, path: Path) -> None:
    """Download ``url`` to ``path``, failing within a few seconds when offline.

    Args:
        url: The file to fetch.
        path: Where to write it; partial files are removed on failure.

    Raises:
        OSError: If the host cannot be reached or the download fails.
    """
    host = urlparse(url).hostname or ""
    port = 443 if urlparse(url).scheme == "https" else 80
    # Quick reachability check so that an offline machine fails fast.
    with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30.0)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except BaseException:
        if path.exists():
            path.unlink(missing_ok=True)
        raise
    finally:
        socket.setdefaulttimeout(previous)


def _cleanup_partial(folder: Path, file_name: str) -> None:
    """Remove leftovers of an interrupted ``torch.hub`` download of ``file_name``."""
    if not folder.is_dir():
        return
    for leftover in folder.glob(f"{file_name}.*.partial"):
        leftover.unlink(missing_ok=True)


def download_failure_reason(exc: BaseException) -> str:
    """Why a download failed, in words (never an exception's class name).

    Args:
        exc: What the download raised.

    Returns:
        A short phrase such as ``"this machine is offline or cannot resolve the download host"``.
    """
    if isinstance(exc, socket.gaierror):
        return "this machine is offline or cannot resolve the download host"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "the download host did not answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "the download host refused the connection"
    if isinstance(exc, (ConnectionError, EOFError)):
        return "the connection broke off during the download"
    if isinstance(exc, OSError) and exc.errno is not None:
        from sslstudio.fileutil import os_reason

        return os_reason(exc)
    text = str(exc).strip().rstrip(".")
    return text if text and len(text) < 120 else "the download failed"


def imagenet_weights_status(arch: str, weights: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """Tell, without the network, whether ImageNet weights for ``arch`` can be loaded here.

    With ``weights`` (a file the user chose) that file is read safely (``weights_only=True`` or
    safetensors, as :func:`load_weights_file` does) and must hold most of the tensors of the
    ``arch`` backbone, by name and shape; without it, torchvision's file is looked for in the torch hub cache
    (``$TORCH_HOME``, see :func:`imagenet_checkpoint_path`). Nothing is downloaded.

    Args:
        arch: An sslstudio architecture name.
        weights: A ``.pt``/``.pth``/``.safetensors`` file to use instead of torchvision's, or ``None``.

    Returns:
        ``(available, reason)``: ``reason`` is a short phrase for a label beside the choice,
        e.g. ``(False, "not on this machine")`` or ``(True, "in the local cache")``.
    """
    try:
        expected = imagenet_checkpoint_path(arch)
    except Exception:  # noqa: BLE001 - an unknown architecture (or one without ImageNet weights)
        return False, f"no ImageNet weights are published for {arch}"
    if weights is None or os.fspath(weights) == "":
        if expected.is_file():
            return True, "in the local cache"
        return False, "not on this machine"
    path = Path(weights)
    if not path.is_file():
        return False, f"the chosen file {path.name} is missing"
    try:
        state = load_weights_file(path)
    except UntrustedCodeError:
        return False, f"{path.name} is a TorchScript program, not weights"
    except ConfigError as exc:
        why = "was refused for safety" if "for safety" in str(exc) else "could not be read as weights"
        return False, f"{path.name} {why}"
    own = {k: v for k, v in _torchvision_shapes(arch).items()
           if not k.startswith(CLASSIFIER_PREFIXES) and not k.endswith("num_batches_tracked")}
    matching = sum(1 for k, v in state.items() if own.get(k) == tuple(v.shape))
    if 2 * matching < len(own):  # most of the backbone would keep its random init: another network's file
        return False, f"{path.name} holds no weights for {arch}"
    return True, f"from {path.name}"


def imagenet_state_dict(arch: str) -> dict[str, Tensor]:
    """Return torchvision's ImageNet state dict for ``arch``, downloading it if possible.

    The file is looked up in ``<torch hub dir>/checkpoints`` (``$TORCH_HOME``
    is honoured). When it is absent, one download attempt is made; without
    network access this fails within a few seconds.

    Args:
        arch: An sslstudio architecture name (``resnet18_small`` uses the
            ``resnet18`` weights).

    Returns:
        The full torchvision state dict, classifier included.

    Raises:
        ConfigError: If ``arch`` is unknown or the file cannot be read safely.
        WeightsUnavailableError: If the file is missing and cannot be downloaded.
    """
    url = imagenet_url(arch)
    path = imagenet_checkpoint_path(arch)
    if not path.is_file():
        try:
            _download(url, path)
        except Exception as exc:  # noqa: BLE001 - any failure means "unavailable"
            if path.exists():
                path.unlink(missing_ok=True)
            _cleanup_partial(path.parent, path.name)
            raise WeightsUnavailableError(
                f"The ImageNet weights file {path.name} for {arch} is not on this machine "
                f"and could not be downloaded ({download_failure_reason(exc)}); download it from "
                f"{url} and put it in the folder {path.parent}, or give your own weights file "
                f"(--weights FILE on the command line, \"Choose weights file…\" in the window)."
            ) from exc
    return load_weights_file(path)


def _is_tensor_mapping(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _strip_wrapper_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def is_torchscript_file(path: str | os.PathLike[str]) -> bool:
    """Tell whether ``path`` is a TorchScript archive (rather than a ``torch.save`` file).

    Only the archive's table of contents is read; nothing in it is run.

    Args:
        path: A ``.pt`` file.

    Returns:
        ``True`` for a TorchScript archive (it contains compiled ``code/`` or ``constants.pkl``).
    """
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n or n.startswith("code/") or n.endswith("constants.pkl") for n in names)


def untrusted_code_error(path: str | os.PathLike[str]) -> UntrustedCodeError:
    """The sentence for a TorchScript archive that the user has not marked as trusted."""
    return UntrustedCodeError(
        f"{os.fspath(path)} is a TorchScript archive: a program, not weights, and loading it would "
        "run code from the file, so it was not opened. Load the export's .safetensors or .pt file "
        "instead, or, only if you trust where the file came from, load it on purpose with "
        "trust_code=True in Python or --trust-torchscript on the command line."
    )


def _torchscript_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a TorchScript archive the user trusts (this runs code from the file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - a damaged archive
        raise ConfigError(f"The TorchScript file {path} could not be loaded ({exc}).") from exc
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def load_weights_file(path: str | os.PathLike[str], trust_code: bool = False) -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` or PyTorch weights file, safely.

    PyTorch files are read with ``weights_only=True``; files that would need
    arbitrary Python objects to be unpickled are refused. A checkpoint that is
    a dictionary with a ``"state_dict"`` or ``"model"`` entry of tensors is
    accepted too. A leading ``module.`` or ``backbone.`` prefix is stripped
    when every key carries it. A TorchScript archive is refused unless
    ``trust_code`` is set (opening one runs code from it).

    Args:
        path: The weights file.
        trust_code: Open a TorchScript archive with :func:`torch.jit.load` and take its tensors.

    Returns:
        A mapping from parameter names to tensors (on the CPU).

    Raises:
        WeightsUnavailableError: If the file does not exist.
        UntrustedCodeError: If the file is a TorchScript archive and ``trust_code`` is not set.
        ConfigError: If the file cannot be read, is refused for safety, or
            holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"The weights file {path} does not exist; check the path given with --weights."
        )
    if is_torchscript_file(path):
        if not trust_code:
            raise untrusted_code_error(path)
        obj: object = _torchscript_state_dict(path)
    elif path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(
                f"The weights file {path} is not a readable safetensors file ({exc})."
            ) from exc
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "global" not in str(exc).lower():
                raise ConfigError(
                    f"The weights file {path} could not be read as PyTorch weights (it is "
                    "damaged or not a weights file); give a .pt/.pth state_dict or a "
                    ".safetensors file."
                ) from exc
            raise ConfigError(
                f"The weights file {path} was refused for safety: it contains Python objects "
                "other than tensors, which are never unpickled; save a plain state_dict "
                "(or a .safetensors file) instead."
            ) from exc
        except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
            raise ConfigError(
                f"The weights file {path} could not be read as PyTorch weights "
                "(it is damaged or not a weights file); give a .pt/.pth state_dict or a .safetensors file."
            ) from exc

    state: dict[str, Tensor] | None = None
    if _is_tensor_mapping(obj):
        state = dict(obj)  # type: ignore[arg-type]
    elif isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if _is_tensor_mapping(obj.get(key)):
                state = dict(obj[key])
                break
    if state is None:
        raise ConfigError(
            f"The weights file {path} holds no state dict of tensors (expected a plain "
            "state_dict or a dictionary with a 'state_dict' or 'model' entry)."
        )
    return _strip_wrapper_prefixes(state)


def load_into_backbone(backbone: Backbone, state_dict: Mapping[str, Tensor]) -> dict:
    """Copy matching tensors of ``state_dict`` into ``backbone``.

    Classifier keys (``fc.*``, ``classifier.*``) are dropped silently. Tensors
    whose shape differs from the backbone's are skipped and reported.

    Args:
        backbone: The backbone to update in place.
        state_dict: Parameter names (torchvision naming) to tensors.

    Returns:
        A report ``{"loaded": int, "missing": list[str], "unexpected": list[str],
        "shape_mismatch": list[str]}``. ``missing`` lists backbone keys that
        received no tensor (BatchNorm ``num_batches_tracked`` counters are not
        listed); ``shape_mismatch`` entries read ``"key: file shape vs backbone shape"``.

    Raises:
        ConfigError: If no tensor at all matched the backbone.
    """
    own = backbone.state_dict()
    to_load: dict[str, Tensor] = {}
    unexpected: list[str] = []
    mismatch: list[str] = []
    for key, value in state_dict.items():
        if key.startswith(CLASSIFIER_PREFIXES):
            continue
        if key not in own:
            unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            mismatch.append(
                f"{key}: {tuple(value.shape)} in the weights vs {tuple(own[key].shape)} "
                "in the backbone"
            )
        else:
            to_load[key] = value
    if not to_load:
        raise ConfigError(
            f"None of the weights match the {backbone.arch} backbone; they were probably "
            "saved for a different architecture."
        )
    backbone.load_state_dict(to_load, strict=False)
    mismatched_keys = {m.split(":", 1)[0] for m in mismatch}
    missing = [
        k
        for k in own
        if k not in to_load and not k.endswith("num_batches_tracked")
    ]
    # Keys with a mismatched shape are listed in ``shape_mismatch`` rather than ``missing``.
    missing = [k for k in missing if k not in mismatched_keys]
    return {
        "loaded": len(to_load),
        "missing": missing,
        "unexpected": unexpected,
        "shape_mismatch": mismatch,
    }


def warn_about_report(report: dict, source: str) -> None:
    """Emit a warning describing what could not be loaded, if anything."""
    parts = []
    if report["shape_mismatch"]:
        parts.append("skipped (shape differs): " + "; ".join(report["shape_mismatch"]))
    if report["missing"]:
        parts.append(f"{len(report['missing'])} backbone tensors kept their random init "
                     f"(e.g. {', '.join(report['missing'][:3])})")
    if report["unexpected"]:
        parts.append(f"{len(report['unexpected'])} tensors in the weights were not used "
                     f"(e.g. {', '.join(report['unexpected'][:3])})")
    if parts:
        warnings.warn(
            f"Loaded {report['loaded']} tensors from {source}; " + "; ".join(parts) + ".",
            stacklevel=3,
        )
