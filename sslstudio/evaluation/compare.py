"""The comparison grid: every (initialisation, mode, layer) with the same data, seed and schedule.

Writes ``results.json`` (a list of rows with ``init``, ``mode``, ``layer``, ``test_accuracy`` and
``error`` when a row could not run), ``results.csv`` and ``results.md`` (rows = initialisation,
columns = head-only probes per stage and all-layer fine-tuning, as in the RotNet paper's tables).
A row that cannot run (no ImageNet weights offline, say) is reported and the others still run.
"""

from __future__ import annotations

import csv
import io
import traceback
from pathlib import Path

from sslstudio.engine.events import EventSink, LogEvent, RowEvent, RunControl
from sslstudio.errors import ConfigError, SSLStudioError
from sslstudio.evaluation.finetuning import (MODES, FinetuneConfig, finetune, load_labelled_data, resolve_init,
                                           run_defaults)
from sslstudio.runs import atomic_write_json, _atomic_write


def parse_layers(layers: str | list[str] | None, stages: list[str]) -> list[str]:
    """``last`` | ``all`` | ``L1,L2`` -> stage names of the backbone."""
    if layers is None or layers == "last":
        return [stages[-1]]
    if layers == "all":
        return list(stages)
    names = [s.strip() for s in (layers.split(",") if isinstance(layers, str) else layers) if s.strip()]
    unknown = [s for s in names if s not in stages]
    if unknown:
        raise ConfigError(f"unknown layer(s) {', '.join(unknown)}; the stages are {', '.join(stages)}, "
                          "or use last / all.")
    return names


def init_label(init: str) -> str:
    """``random`` / ``imagenet``, or ``<task> (<run folder>)`` for a run directory."""
    if init in ("random", "imagenet"):
        return init
    task = run_defaults(init).get("task")
    name = Path(init).resolve().name or init
    return f"{task} ({name})" if task else name


def compare(labelled: str, out: str, inits: list[str], *, test: str | None = None,
            baselines: list[str] = ("imagenet", "random"), modes: list[str] = ("head", "all"),
            layers: str | list[str] | None = "last", arch: str | None = None, per_class: int | None = None,
            epochs_head: int | None = None, epochs_all: int | None = None, image_size: int | None = None,
            device: str = "auto", seed: int = 0, weights: str | None = None, test_fraction: float = 0.2,
            fraction: float | None = None, on_event: EventSink | None = None, control: RunControl | None = None) -> list[dict]:
    """Run the comparison grid and write the result files to ``out``; returns the rows."""
    emit = on_event or (lambda e: None)
    control = control or RunControl()
    modes = list(modes)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown mode(s) {', '.join(bad)}; use head and/or all.")
    all_inits = list(inits) + [b for b in baselines if b not in inits]
    if not all_inits:
        raise ConfigError("nothing to compare: give --init and/or --baselines.")
    for b in baselines:
        if b not in ("imagenet", "random"):
            raise ConfigError(f"unknown baseline {b!r}; use imagenet and/or random.")
    run_info = next((run_defaults(i) for i in inits if run_defaults(i)), {})
    arch = arch or run_info.get("arch") or "resnet18"
    image_size = int(image_size or run_info.get("image_size") or 64)
    from sslstudio.models import build_backbone

    stages = build_backbone(arch).stage_names()
    probe_layers = parse_layers(layers, stages)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_labelled_data(labelled, test, image_size, per_class, test_fraction, seed, fraction)
    emit(LogEvent(f"compare: {data.summary()}; {len(all_inits)} initialisation(s) x {', '.join(modes)}"))

    jobs = []
    for init in all_inits:
        for mode in modes:
            for layer in (probe_layers if mode == "head" else [stages[-1]]):
                jobs.append((init, mode, layer))
    rows: list[dict] = []
    init_errors: dict[str, str] = {}
    for k, (init, mode, layer) in enumerate(jobs, start=1):
        control.checkpoint()
        row = {"init": init, "init_label": init_label(init), "mode": mode, "layer": layer,
               "test_accuracy": None}
        emit(LogEvent(f"[{k}/{len(jobs)}] {row['init_label']} / {mode} / {layer}"))
        try:
            if init in init_errors:
                raise ConfigError(init_errors[init])
            try:
                backbone = resolve_init(init, arch, seed, weights)  # fails fast, with a sentence
            except SSLStudioError as exc:
                init_errors[init] = str(exc)
                raise
            job_dir = out_dir / "jobs" / f"{_slug(row['init_label'])}-{mode}-{layer}"
            summary = finetune(FinetuneConfig(init=init, labelled=labelled, test=test, mode=mode, out=str(job_dir),
                                              arch=arch, per_class=per_class, layer=layer,
                                              epochs=epochs_head if mode == "head" else epochs_all,
                                              image_size=image_size, device=device, seed=seed, weights=weights,
                                              test_fraction=test_fraction, fraction=fraction),
                               on_event=emit, control=control, data=data, init=backbone)
            row["test_accuracy"] = summary["test_accuracy"]
            row["train_accuracy"] = summary["train_accuracy"]
            row["epochs"] = summary["epochs"]
            row["dir"] = str(job_dir)
            if summary["status"] == "cancelled":
                row["error"] = "cancelled"
        except SSLStudioError as exc:
            row["error"] = str(exc)
            emit(LogEvent(f"{row['init_label']} / {mode} / {layer} could not run: {exc}", "warning"))
        except Exception as exc:  # noqa: BLE001 - one broken row must not lose the others
            row["error"] = f"{type(exc).__name__}: {exc}"
            emit(LogEvent(f"{row['init_label']} / {mode} / {layer} failed: {exc}\n{traceback.format_exc()}",
                          "warning"))
        rows.append(row)
        emit(RowEvent(row=dict(row), index=k, total=len(jobs)))
        write_results(out_dir, rows, meta={"arch": arch, "image_size": image_size, "seed": seed,
                                           "classes": data.classes, "train_images": int(len(data.train_y)),
                                           "test_images": int(len(data.test_y)), "test_source": data.test_source})
        if row.get("error") == "cancelled":
            break
    return rows


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def results_table(rows: list[dict]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body (rows = initialisation) and footnotes of the Markdown table."""
    columns: list[tuple[str, str]] = []
    for r in rows:
        key = (r["mode"], r["layer"])
        if key not in columns:
            columns.append(key)
    header = ["initialisation"] + [f"head ({layer})" if mode == "head" else "all layers"
                                   for mode, layer in columns]
    inits = list(dict.fromkeys(r["init_label"] for r in rows))
    notes: list[str] = []
    body = []
    for init in inits:
        line = [init]
        for mode, layer in columns:
            match = next((r for r in rows if r["init_label"] == init and r["mode"] == mode and r["layer"] == layer), None)
            if match is None:
                line.append("")
            elif match.get("error"):
                if match["error"] not in notes:
                    notes.append(match["error"])
                line.append(f"n/a [{notes.index(match['error']) + 1}]")
            else:
                line.append(f"{100 * match['test_accuracy']:.1f}")
        body.append(line)
    return header, body, notes


def write_results(out_dir: Path, rows: list[dict], meta: dict | None = None) -> None:
    """``results.json``, ``results.csv`` and ``results.md`` (each written atomically)."""
    atomic_write_json(out_dir / "results.json", rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["init", "mode", "layer", "test_accuracy", "error"],
                            extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "error": r.get("error", "")})
    payload = buf.getvalue().encode()
    _atomic_write(out_dir / "results.csv", lambda fh: fh.write(payload))
    header, body, notes = results_table(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    text = "Test top-1 accuracy (%)"
    if meta:
        text += (f", {meta.get('arch')} at {meta.get('image_size')} px, {meta.get('train_images')} training / "
                 f"{meta.get('test_images')} test images, {len(meta.get('classes', []))} classes, seed {meta.get('seed')}")
    md = text + ".\n\n" + "\n".join(lines) + "\n"
    if notes:
        md += "\n" + "\n".join(f"[{i + 1}] {n}" for i, n in enumerate(notes)) + "\n"
    _atomic_write(out_dir / "results.md", lambda fh: fh.write(md.encode()))
    if meta:
        atomic_write_json(out_dir / "compare.json", {**meta, "rows": len(rows)})


__all__ = ["compare", "parse_layers", "results_table", "write_results"]
