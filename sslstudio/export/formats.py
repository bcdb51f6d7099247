"""Writing a backbone to disk in several deployable formats."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sslstudio.errors import ConfigError, RunError
from sslstudio.models.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, backbone_metadata

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "METADATA_FILE",
    "METADATA_KEY",
    "export_backbone",
]

#: Formats understood by :func:`export_backbone`.
FORMATS: tuple[str, ...] = ("pt", "safetensors", "torchscript", "onnx")

#: File written for each format.
FILE_NAMES: dict[str, str] = {
    "pt": "backbone.pt",
    "safetensors": "backbone.safetensors",
    "torchscript": "backbone.torchscript.pt",
    "onnx": "backbone.onnx",
}

#: Name of the JSON file describing an export.
METADATA_FILE = "metadata.json"

#: Key under which the metadata (JSON) is embedded in safetensors, TorchScript and ONNX files.
METADATA_KEY = "sslstudio"

#: Opset used for ONNX export.
ONNX_OPSET = 17


def _atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``target``, then move it into place.

    Args:
        target: The final path.
        write: Writes the complete file to the path it is given.
    """
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix="-" + target.name)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)


def _plain_state_dict(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def _write_pt(module: nn.Module, tmp: Path, meta: dict[str, Any]) -> None:
    torch.save(_plain_state_dict(module), tmp)


def _write_safetensors(module: nn.Module, tmp: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file(_plain_state_dict(module), str(tmp), metadata={METADATA_KEY: json.dumps(meta)})


def _write_torchscript(module: nn.Module, tmp: Path, meta: dict[str, Any], example: Tensor) -> None:
    extra = {f"{METADATA_KEY}.json": json.dumps(meta)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted = torch.jit.trace(module, example, check_trace=False)
        except Exception:  # noqa: BLE001 - tracing can fail on unusual modules; scripting may not
            scripted = torch.jit.script(module)
        torch.jit.save(scripted, str(tmp), _extra_files=extra)


def _onnx_export(module: nn.Module, example: Tensor, path: Path) -> None:
    """Export with the TorchScript-based exporter, falling back to the dynamo exporter."""
    errors: list[str] = []
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
            return
        except Exception as exc:  # noqa: BLE001 - try the other exporter
            errors.append(f"{type(exc).__name__}: {exc}")
        try:
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["features"],
                dynamic_shapes=({0: batch},),
                opset_version=18,
                dynamo=True,
                external_data=False,
            )
            return
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")
    raise RunError(
        "The backbone could not be exported to ONNX (" + " | ".join(errors)[:500] + "); "
        "export the other formats with formats=('pt', 'safetensors', 'torchscript')."
    )


def _write_onnx(module: nn.Module, tmp: Path, meta: dict[str, Any], example: Tensor) -> None:
    import onnx

    with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".tmp-onnx-") as work:
        raw = Path(work) / "backbone.onnx"
        _onnx_export(module, example, raw)
        # Loading pulls in any external data file; saving writes one self-contained file.
        model = onnx.load(str(raw), load_external_data=True)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta)
    onnx.save_model(model, str(tmp), save_as_external_data=False)


def _build_metadata(
    backbone: Backbone, formats: list[str], image_size: int, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = backbone_metadata(backbone)
    meta.update(
        {
            "input_size": int(image_size),
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "formats": list(formats),
            "files": {fmt: FILE_NAMES[fmt] for fmt in formats},
        }
    )
    try:
        from sslstudio import __version__

        meta["sslstudio_version"] = __version__
    except ImportError:  # pragma: no cover
        pass
    if extra:
        meta.update(dict(extra))
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"The export metadata cannot be written as JSON ({exc}); pass only strings, "
            "numbers, lists and dictionaries."
        ) from exc
    return meta


def export_backbone(
    backbone: Backbone,
    out_dir: str | os.PathLike[str],
    *,
    formats: Iterable[str] = FORMATS,
    image_size: int = 64,
    metadata: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write a backbone (no task head) in the requested formats, plus ``metadata.json``.

    The backbone is exported from a CPU, fp32, eval-mode copy; the module
    passed in is not modified. Every file is written to a temporary file in
    ``out_dir`` first and then moved into place.

    Files (depending on ``formats``): ``backbone.pt`` (plain state dict with
    torchvision key names), ``backbone.safetensors`` (same tensors, metadata
    embedded under ``"sslstudio"``), ``backbone.torchscript.pt`` (traced on a
    ``[1, 3, image_size, image_size]`` input), ``backbone.onnx`` (one
    self-contained file, input ``"images"``, output ``"features"``, dynamic
    batch axis) and ``metadata.json``.

    Args:
        backbone: The backbone to export.
        out_dir: Folder to write to (created if needed).
        formats: Any of :data:`FORMATS`.
        image_size: Side length of the example input used for tracing, recorded
            as ``input_size`` in the metadata.
        metadata: Extra entries merged into the metadata (e.g. task, source run).

    Returns:
        The written paths, in the order of ``formats``, ``metadata.json`` last.

    Raises:
        ConfigError: If a format is unknown, ``image_size`` is too small or the
            metadata is not JSON-serialisable.
        RunError: If the ONNX export fails.
    """
    if isinstance(formats, str):
        formats = (formats,)
    fmts: list[str] = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(
                f"Unknown export format {fmt!r}; choose among: {', '.join(FORMATS)}."
            )
        if fmt not in fmts:
            fmts.append(fmt)
    if not fmts:
        raise ConfigError(f"No export format was chosen; choose among: {', '.join(FORMATS)}.")
    if int(image_size) < 16:
        raise ConfigError(f"The export image size must be at least 16 pixels, not {image_size}.")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = _build_metadata(backbone, fmts, image_size, metadata)

    module = copy.deepcopy(backbone).to(device="cpu", dtype=torch.float32).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    example = torch.zeros(1, 3, int(image_size), int(image_size))

    written: list[Path] = []
    with torch.no_grad():
        for fmt in fmts:
            target = out / FILE_NAMES[fmt]
            if fmt == "pt":
                _atomic_write(target, lambda tmp: _write_pt(module, tmp, meta))
            elif fmt == "safetensors":
                _atomic_write(target, lambda tmp: _write_safetensors(module, tmp, meta))
            elif fmt == "torchscript":
                _atomic_write(target, lambda tmp: _write_torchscript(module, tmp, meta, example))
            else:
                _atomic_write(target, lambda tmp: _write_onnx(module, tmp, meta, example))
            written.append(target)

    meta_path = out / METADATA_FILE
    text = json.dumps(meta, indent=2, sort_keys=False) + "\n"
    _atomic_write(meta_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    written.append(meta_path)
    return written
