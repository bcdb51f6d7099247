"""Writing a backbone to disk in several deployable formats."""

from __future__ import annotations

import contextlib
import copy
import errno
import io
import json
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sslstudio import fileutil
from sslstudio.fileutil import fsync, os_reason
from sslstudio.errors import ConfigError, RunError, SSLStudioError
from sslstudio.models.backbones import Backbone, backbone_metadata
from sslstudio.models.normalise import IMAGENET_MEAN, IMAGENET_STD

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


def _export_names() -> set[str]:
    """The names of the files an export folder holds (any others belong to someone else)."""
    return {*FILE_NAMES.values(), METADATA_FILE}


def _write_failed(out: Path, exc: OSError) -> RunError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        advice = "free some space or choose another output folder"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = (f"the export is written to a temporary folder beside {out.name} and then renamed into place, "
                  f"so {out.parent} must be writable; choose a folder you can write to")
    else:
        advice = "choose another output folder"
    return RunError(f"Could not write the export to {out}: {os_reason(exc, code=True)}; nothing was changed "
                    f"there; {advice}.")


def _check_target(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a folder holding anything but an earlier export."""
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder; choose a new or empty folder for the export.")
    try:
        names = os.listdir(out)
    except OSError as exc:
        raise _write_failed(out, exc) from exc
    allowed = _export_names()
    foreign = sorted(n for n in names if n not in allowed or (out / n).is_dir())
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ConfigError(
            f"{out} already holds files that are not part of an sslstudio export ({shown}); an export "
            "replaces its whole folder, so choose a new or empty folder (or one holding an earlier export)."
        )


def _fsync_files(folder: Path) -> None:
    """Flush every file of ``folder`` (a failure raises: the export may not be on disk), then its entries."""
    for path in folder.iterdir():
        if path.is_file():
            fsync(path, strict=True)
    fsync(folder, directory=True)


def _move_into_place(stage: Path, out: Path) -> None:
    """Rename the complete folder ``stage`` to ``out``, replacing an earlier export there.

    The earlier export is first renamed into a temporary folder beside ``out`` (so it is back in
    place if the second rename fails), then deleted.
    """
    if not os.path.lexists(out):
        os.rename(stage, out)
        fsync(out.parent, directory=True)
        return
    _check_target(out)  # again: it may have changed while the files were written
    with contextlib.suppress(OSError):
        os.chmod(stage, stat.S_IMODE(out.stat().st_mode))  # keep the folder's permissions
    holder = fileutil.mkdtemp(out.parent, prefix=f".{out.name}.old-")
    try:
        old = holder / out.name
        os.rename(out, old)
        try:
            os.rename(stage, out)
        except BaseException as exc:
            try:
                os.rename(old, out)
            except OSError:
                raise RunError(
                    f"Could not write the export to {out} ({exc}), nor put the earlier export back; "
                    f"it is in {old}."
                ) from exc
            raise
        fsync(out.parent, directory=True)
    finally:
        if os.path.lexists(holder / out.name) and not os.path.lexists(out):
            pass  # the earlier export could not be put back: leave it where the error says
        else:
            shutil.rmtree(holder, ignore_errors=True)


def _plain_state_dict(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def _write_pt(module: nn.Module, tmp: Path, meta: dict[str, Any]) -> None:
    torch.save(_plain_state_dict(module), tmp)


def _write_safetensors(module: nn.Module, tmp: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save

    # Serialised here and written with open(): safetensors' own save_file may create the file
    # 0o600 (it writes through a private temporary file), whatever the umask.
    payload = save(_plain_state_dict(module), metadata={METADATA_KEY: json.dumps(meta)})
    with open(tmp, "wb") as fh:
        fh.write(payload)


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
    passed in is not modified. All files are written to a temporary folder
    beside ``out_dir`` (``.<name>.tmp-XXXXXXXX``), which is renamed to
    ``out_dir`` once complete: a failed export leaves no folder behind, and a
    failed re-export leaves the earlier export as it was. An earlier export in
    ``out_dir`` is replaced as a whole; a folder holding any other file is
    refused. Files and the folder get the permissions the umask gives.

    Files (depending on ``formats``): ``backbone.pt`` (plain state dict with
    torchvision key names), ``backbone.safetensors`` (same tensors, metadata
    embedded under ``"sslstudio"``), ``backbone.torchscript.pt`` (traced on a
    ``[1, 3, image_size, image_size]`` input), ``backbone.onnx`` (one
    self-contained file, input ``"images"``, output ``"features"``, dynamic
    batch axis) and ``metadata.json``.

    Args:
        backbone: The backbone to export.
        out_dir: Folder to write to (created, with missing parents, if needed).
        formats: Any of :data:`FORMATS`.
        image_size: Side length of the example input used for tracing, recorded
            as ``input_size`` in the metadata.
        metadata: Extra entries merged into the metadata (e.g. task, source run).

    Returns:
        The written paths (absolute, inside ``out_dir``), in the order of
        ``formats``, ``metadata.json`` last.

    Raises:
        ConfigError: If a format is unknown, ``image_size`` is too small, the
            metadata is not JSON-serialisable, or ``out_dir`` is a file or a
            folder holding files that are not an export.
        RunError: If the ONNX export fails or the files cannot be written
            (no space left, no permission...); nothing was changed then.
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

    out = Path(os.path.abspath(out_dir))
    if out.is_symlink():
        out = out.resolve()
    if not out.name:
        raise ConfigError(f"{out} cannot hold an export; choose a named folder inside it.")
    _check_target(out)
    meta = _build_metadata(backbone, fmts, image_size, metadata)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Could not create the folder {out.parent} for the export: {os_reason(exc, code=True)}; "
            "choose another output folder."
        ) from exc

    module = copy.deepcopy(backbone).to(device="cpu", dtype=torch.float32).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    example = torch.zeros(1, 3, int(image_size), int(image_size))

    names = [FILE_NAMES[fmt] for fmt in fmts] + [METADATA_FILE]
    stage: Path | None = None
    doing = "the export folder"
    try:
        stage = fileutil.mkdtemp(out.parent, prefix=f".{out.name}.tmp-")
        with torch.no_grad():
            for fmt in fmts:
                target = stage / FILE_NAMES[fmt]
                doing = target.name
                if fmt == "pt":
                    _write_pt(module, target, meta)
                elif fmt == "safetensors":
                    _write_safetensors(module, target, meta)
                elif fmt == "torchscript":
                    _write_torchscript(module, target, meta, example)
                else:
                    _write_onnx(module, target, meta, example)
        doing = METADATA_FILE
        text = json.dumps(meta, indent=2, sort_keys=False) + "\n"
        (stage / METADATA_FILE).write_text(text, encoding="utf-8")
        doing = "the export folder"
        _fsync_files(stage)
        _move_into_place(stage, out)
        stage = None
    except SSLStudioError:
        raise
    except OSError as exc:
        raise _write_failed(out, exc) from exc
    except Exception as exc:  # noqa: BLE001 - a writer failing in its own way (e.g. a full disk)
        raise RunError(
            f"Could not write {doing} of the export to {out} ({type(exc).__name__}: {str(exc)[:300]}); "
            "nothing was changed there; check the free space, or export the other formats."
        ) from exc
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    return [out / name for name in names]
