"""The comparison: every initialisation x mode x stage x label budget, with repeats and intervals.

The data walks through once: labelled images are decoded once; for each initialisation the
frozen features of every stage asked for are computed once (or read from the feature cache,
:mod:`sslstudio.evaluation.features`); every probe (:mod:`~sslstudio.evaluation.probes`: linear or
MLP head, kNN), every repeat and every label budget reads those features; all-layer fine-tuning
(:mod:`~sslstudio.evaluation.finetune_all`) trains a copy of the backbone per draw; the statistics
(:mod:`~sslstudio.evaluation.stats`) turn the repeats into means, intervals and paired verdicts
against random init; the report (:mod:`~sslstudio.evaluation.report`) writes ``results.json``,
``results.csv``, ``results.md`` and ``label_curve.png``.

Nothing is chosen on the test images: the linear probe's L2 strength is chosen on a validation
split of the labelled training draw, and all-layer fine-tuning reports its last epoch.
"""

from __future__ import annotations

import copy
import time
import traceback
from pathlib import Path

import numpy as np

from sslstudio.engine.device import resolve_device, resolve_precision
from sslstudio.engine.events import Cancelled, EpochEvent, EventSink, LogEvent, ProgressEvent, RowEvent, RunControl
from sslstudio.errors import ConfigError, SSLStudioError
from sslstudio.evaluation import stats
from sslstudio.evaluation.features import FeatureCache, cached_features, global_pool, images_digest, weights_digest
from sslstudio.evaluation.finetuning import load_labelled_data, resolve_init, run_defaults
from sslstudio.evaluation.knn import KNN_K, KNN_T
from sslstudio.evaluation.probes import HEADS, knn_probe, linear_probe, mlp_probe, single_threaded_blas
from sslstudio.evaluation.report import budget_text, interpretation_notes, run_facts, write_results

MODES = ("head", "knn", "all")
DEFAULT_MODES = ("head", "knn", "all")
DEFAULT_REPEATS = 3
DEFAULT_REPEATS_ALL = 1
RESULTS_FORMAT = 2
SAVE_EVERY_S = 5.0


def parse_layers(layers: str | list[str] | None, stages: list[str]) -> list[str]:
    """``last`` | ``all`` | ``L1,L2`` -> stage names of the backbone."""
    if layers is None or layers == "last":
        return [stages[-1]]
    if layers == "all":
        return list(stages)
    names = [s.strip() for s in (layers.split(",") if isinstance(layers, str) else layers) if s.strip()]
    if names in (["all"], ["last"]):
        return parse_layers(names[0], stages)
    unknown = [s for s in names if s not in stages]
    if unknown:
        raise ConfigError(f"unknown layer(s) {', '.join(unknown)}; the stages are {', '.join(stages)}, "
                          "or use last / all.")
    return [s for s in stages if s in names]


def parse_budgets(text) -> list:
    """``"1,5,10,all"`` (commas, spaces or semicolons; or a list) -> ``[1, 5, 10, "all"]``, ascending,
    ``all`` last, no repeats."""
    items = ([s.strip() for s in text.replace(";", ",").replace(" ", ",").split(",")] if isinstance(text, str)
             else list(text))
    out: list = []
    for item in items:
        if item in ("", None):
            continue
        if str(item).lower() == "all":
            value = "all"
        else:
            try:
                value = int(item)
            except (TypeError, ValueError):
                raise ConfigError(f"a label budget is a number of images per class or 'all'; got {item!r}.") from None
            if value < 1:
                raise ConfigError(f"a label budget must be at least 1 image per class; got {value}.")
        if value not in out:
            out.append(value)
    if not out:
        raise ConfigError("the label curve needs at least one budget, e.g. 1,5,10,20,50,all.")
    return sorted(out, key=lambda b: (b == "all", b if b != "all" else 0))


def init_label(init: str) -> str:
    """``random`` / ``imagenet``, or ``<task> (<run folder>)`` for a run directory."""
    if init in ("random", "imagenet"):
        return init
    task = run_defaults(init).get("task")
    name = Path(init).resolve().name or init
    return f"{task} ({name})" if task else name


class _Progress:
    """Units of work done, with an ETA from the mean time per unit so far."""

    def __init__(self, total: int, emit: EventSink):
        self.total, self.done, self.emit, self.t0 = max(1, total), 0, emit, time.perf_counter()

    def step(self, message: str, units: int = 1) -> None:
        self.done = min(self.total, self.done + units)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        self.emit(ProgressEvent(self.done, self.total, message, elapsed, eta))


def compare(labelled: str, out: str, inits: list[str], *, test: str | None = None,
            baselines=("imagenet", "random"), modes=DEFAULT_MODES, layers: str | list[str] | None = "last",
            arch: str | None = None, per_class: int | None = None, fraction: float | None = None,
            label_curve=None, repeats: int | None = None, repeats_all: int | None = None, head: str = "linear",
            knn_k: int = KNN_K, knn_t: float = KNN_T, epochs_all: int | None = None,
            epochs_head: int | None = None, image_size: int | None = None, device: str = "auto", seed: int = 0,
            weights: str | None = None, test_fraction: float = 0.2, feature_cache: bool = True,
            cache_dir: str | None = None, on_event: EventSink | None = None,
            control: RunControl | None = None) -> dict:
    """Run the comparison and write its files to ``out``; returns what ``results.json`` holds.

    Args:
        labelled: ``DIR/<class>/...`` or ``DIR/train/<class>/...`` (``DIR/test`` is the test set).
        out: Folder for ``results.json``, ``results.csv``, ``results.md``, ``label_curve.png``.
        inits: Run directories (or weights files) to compare.
        baselines: ``imagenet`` and/or ``random``.
        modes: ``head`` (linear or MLP probe), ``knn``, ``all`` (every layer fine-tuned).
        layers: Stages read by ``head`` and ``knn``: ``last``, ``all`` or names.
        per_class / fraction: One label budget (images per class, or a share of each class).
        label_curve: Several budgets, e.g. ``[1, 5, 10, 20, 50, "all"]`` (overrides ``per_class``).
        repeats: Label draws (and classifier seeds) for ``head`` and ``knn`` (default 3).
        repeats_all: The same for ``all`` (default 1).
        head: ``linear`` (logistic regression, L2 chosen on a validation split) or ``mlp``.
        knn_k / knn_t: Neighbours and temperature of the kNN vote.
        epochs_all: Passes over each draw for all-layer fine-tuning (default: its own budget of 15
            passes and at least 100 steps; a number given here is taken as it is).
        epochs_head: Ignored (the probes fit to convergence); kept for old callers.
        feature_cache / cache_dir: Reuse features across comparisons (never changes a result).
    """
    emit = on_event or (lambda e: None)
    control = control or RunControl()
    t_start = time.perf_counter()
    requested = list(dict.fromkeys(modes or []))
    bad = [m for m in requested if m not in MODES]
    if bad or not requested:
        raise ConfigError(f"unknown mode(s) {', '.join(bad)}; use head, knn and/or all." if bad
                          else "choose at least one mode: head, knn or all.")
    modes = [m for m in MODES if m in requested]
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; use linear or mlp.")
    if int(knn_k) < 1 or float(knn_t) <= 0:
        raise ConfigError(f"kNN needs k >= 1 and T > 0; got k={knn_k}, T={knn_t}.")
    baselines = list(baselines or [])
    for b in baselines:
        if b not in ("imagenet", "random"):
            raise ConfigError(f"unknown baseline {b!r}; use imagenet and/or random.")
    all_inits = list(dict.fromkeys(list(inits) + [b for b in baselines if b not in inits]))
    if not all_inits:
        raise ConfigError("nothing to compare: give --init and/or --baselines.")
    if label_curve:
        budgets = parse_budgets(label_curve)
    elif per_class is not None:
        budgets = [int(per_class)]
    elif fraction is not None:
        if not 0 < float(fraction) <= 1:
            raise ConfigError(f"the label fraction must be in (0, 1]; got {fraction}.")
        budgets = ["all"] if float(fraction) == 1 else [f"{100 * float(fraction):g}%"]
    else:
        budgets = ["all"]
    n_rep = int(repeats if repeats is not None else DEFAULT_REPEATS)
    n_rep_all = int(repeats_all if repeats_all is not None else DEFAULT_REPEATS_ALL)
    if n_rep < 1 or n_rep_all < 1:
        raise ConfigError("repeats must be at least 1.")

    run_info = next((run_defaults(i) for i in all_inits if run_defaults(i)), {})
    arch = arch or run_info.get("arch") or "resnet18"
    image_size = int(image_size or run_info.get("image_size") or 64)
    from sslstudio.models import build_backbone

    stages = build_backbone(arch).stage_names()
    probe_layers = parse_layers(layers, stages)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    precision = resolve_precision("auto", dev)
    data = load_labelled_data(labelled, test, image_size, None, test_fraction, seed)
    n_classes = len(data.classes)
    emit(LogEvent(f"compare: {data.summary()}; {len(all_inits)} initialisation(s) x {', '.join(modes)}; "
                  f"label budgets {', '.join(map(str, budgets))}"))
    cache = FeatureCache(cache_dir, enabled=feature_cache)
    train_key = images_digest(data.train_paths) if data.train_paths else f"n{len(data.train_y)}"
    test_key = images_digest(data.test_paths) if data.test_paths else f"n{len(data.test_y)}"

    probe_modes = [m for m in ("knn", "head") if m in modes]
    reps = {m: (n_rep if m != "all" else n_rep_all) for m in modes}
    meta = {"format": RESULTS_FORMAT, "arch": arch, "image_size": image_size, "seed": seed,
            "classes": data.classes, "train_images": int(len(data.train_y)), "test_images": int(len(data.test_y)),
            "test_source": data.test_source, "modes": modes, "layers": probe_layers, "head": head,
            "knn_k": int(knn_k), "knn_t": float(knn_t), "repeats": reps, "budgets": budgets,
            "device": str(dev), "inits": [{"init": i, "init_label": init_label(i)} for i in all_inits]}

    jobs_per_init = 1 + len(budgets) * (len(probe_modes) * len(probe_layers) + (n_rep_all if "all" in modes else 0))
    progress = _Progress(len(all_inits) * jobs_per_init, emit)
    rows: list[dict] = []
    correct: dict[tuple, list[np.ndarray]] = {}  # (init, mode, layer, budget) -> per-repeat 0/1 vectors
    saved = [time.perf_counter()]
    total_rows = len(all_inits) * len(budgets) * (len(probe_modes) * len(probe_layers) + ("all" in modes))

    def finish_row(row: dict, preds: list[np.ndarray] | None, accs: list[float], key: tuple) -> None:
        if preds:
            hits = [(p == data.test_y).astype(np.int8) for p in preds]
            correct[key] = hits
            row.update(stats.summarise(accs, hits[0], seed=seed))
            row["accuracies"] = [float(a) for a in accs]
            row["repeats"] = len(accs)
            m = sum(stats.confusion(data.test_y, p, n_classes) for p in preds)
            totals = m.sum(axis=1)
            row["per_class_accuracy"] = {c: (float(m[i, i] / totals[i]) if totals[i] else None)
                                         for i, c in enumerate(data.classes)}
            row["confusion"] = m.tolist()
        rows.append(row)
        emit(RowEvent(row=dict(row), index=len(rows), total=total_rows))
        if time.perf_counter() - saved[0] > SAVE_EVERY_S:  # partial results on disk, a few times a minute
            meta["time_s"] = time.perf_counter() - t_start
            meta["feature_cache"] = {"enabled": cache.enabled, "hits": cache.hits, "misses": cache.misses}
            write_results(out_dir, {"format": RESULTS_FORMAT, "meta": meta, "notes": [], "rows": rows, "paired": []})
            saved[0] = time.perf_counter()

    def base_row(init: str, mode: str, layer: str, budget) -> dict:
        row = {"init": init, "init_label": init_label(init), "mode": mode, "layer": layer, "per_class": budget,
               "repeats": reps[mode], "test_accuracy": None, "std": None, "ci_low": None, "ci_high": None}
        if mode == "head":
            row["head"] = head
        if mode == "knn":
            row.update(k=int(knn_k), t=float(knn_t))
        return row

    init_facts: dict[str, dict] = {}
    try:
        for init in all_inits:
            control.checkpoint()
            label = init_label(init)
            try:
                backbone, info = resolve_init(init, arch, seed, weights)
            except SSLStudioError as exc:
                emit(LogEvent(f"{label} could not be used: {exc}", "warning"))
                init_facts[init] = {"error": str(exc)}
                for budget in budgets:
                    for mode in probe_modes:
                        for layer in probe_layers:
                            finish_row({**base_row(init, mode, layer, budget), "error": str(exc)}, None, [], ())
                    if "all" in modes:
                        finish_row({**base_row(init, "all", stages[-1], budget), "error": str(exc)}, None, [], ())
                progress.step(f"{label}: unavailable", jobs_per_init)
                continue
            init_facts[init] = run_facts(init) if init not in ("random", "imagenet") else {}
            train_f = test_f = {}
            if probe_modes:
                emit(LogEvent(f"{label}: features of {', '.join(probe_layers)}"))
                digest = weights_digest(backbone)
                hits0 = cache.hits
                train_f = cached_features(cache, backbone, digest, data.train_x, train_key, probe_layers, image_size,
                                          dev, precision, control)
                test_f = cached_features(cache, backbone, digest, data.test_x, test_key, probe_layers, image_size,
                                         dev, precision, control)
                source = "from the feature cache" if cache.hits - hits0 == 2 * len(probe_layers) else "computed"
                progress.step(f"{label}: features {source}")
            else:
                progress.step(f"{label}: ready")
            channels = {s: backbone.stage_channels(s) for s in probe_layers}
            for budget in budgets:
                for mode in probe_modes:
                    for layer in probe_layers:
                        control.checkpoint()
                        row = base_row(init, mode, layer, budget)
                        # a deterministic probe on the same draw gives the same answer: one repeat is all there is
                        n = reps[mode] if (stats.draw_leaves_choice(data.train_y, budget) or
                                           (mode == "head" and head == "mlp")) else 1
                        preds, accs, chosen = [], [], []
                        for r in range(n):
                            idx = stats.label_draw(data.train_y, budget, r, seed)
                            pred, info_r = _probe(mode, head, train_f[layer], test_f[layer], data.train_y, idx,
                                                  n_classes, channels[layer], knn_k, knn_t, seed + r)
                            preds.append(pred)
                            accs.append(float((pred == data.test_y).mean()))
                            chosen.append(info_r)
                        row["repeats"] = n
                        row["train_images"] = int(len(stats.label_draw(data.train_y, budget, 0, seed)))
                        if mode == "head" and head == "linear":
                            row["l2"] = [c.get("C") for c in chosen]
                            row["l2_source"] = chosen[0].get("C_source")
                        finish_row(row, preds, accs, (init, mode, layer, budget))
                        progress.step(f"{label} / {mode} / {layer} / {budget_text(budget)}: "
                                      f"{100 * row['test_accuracy']:.1f}%")
                if "all" in modes:
                    row = base_row(init, "all", stages[-1], budget)
                    preds, accs, histories = [], [], []
                    try:
                        for r in range(n_rep_all):
                            control.checkpoint()
                            idx = stats.label_draw(data.train_y, budget, r, seed)
                            result = _train_all(backbone, data, idx, n_classes, seed + r, dev, precision, control,
                                                epochs_all, emit, {"init": init, "init_label": label, "mode": "all",
                                                                   "layer": stages[-1], "per_class": budget, "repeat": r})
                            preds.append(np.asarray(result["test_pred"]))
                            accs.append(float(result["test_accuracy"]))
                            histories.append(result)
                            progress.step(f"{label} / all layers / {budget_text(budget)} / draw {r + 1}: "
                                          f"{100 * accs[-1]:.1f}%")
                        first = histories[0]
                        row.update(train_images=int(len(stats.label_draw(data.train_y, budget, 0, seed))),
                                   epochs=first.get("epochs"), steps=first.get("steps"),
                                   history=[list(map(float, h)) for h in first.get("history", [])],
                                   settings=first.get("settings", {}), reported="last epoch")
                    except SSLStudioError as exc:
                        row["error"] = str(exc)
                        preds = None
                    except Cancelled:
                        raise
                    except Exception as exc:  # noqa: BLE001 - one broken job must not lose the others
                        row["error"] = f"{type(exc).__name__}: {exc}"
                        emit(LogEvent(f"{label} / all layers failed: {exc}\n{traceback.format_exc()}", "warning"))
                        preds = None
                    finish_row(row, preds, accs, (init, "all", stages[-1], budget))
            del backbone
    except Cancelled:  # keep what finished: the rows so far are written before stopping
        meta["time_s"] = time.perf_counter() - t_start
        meta["cancelled"] = True
        write_results(out_dir, {"format": RESULTS_FORMAT, "meta": meta,
                                "notes": ["Stopped before the end: these are the rows that finished."],
                                "rows": rows, "paired": _paired(rows, correct, seed)})
        raise

    paired = _paired(rows, correct, seed)
    meta["time_s"] = time.perf_counter() - t_start
    meta["feature_cache"] = {"enabled": cache.enabled, "hits": cache.hits, "misses": cache.misses}
    result = {"format": RESULTS_FORMAT, "meta": meta, "notes": [], "rows": rows, "paired": paired}
    result["notes"] = interpretation_notes(result, init_facts)
    write_results(out_dir, result, curve=len(budgets) > 1)
    emit(LogEvent(f"compare finished in {meta['time_s']:.1f} s; results in {out_dir}"))
    return result


def _probe(mode, head, train_all_f, test_all_f, train_y, idx, n_classes, channels, k, t, seed):
    with single_threaded_blas():
        if mode == "knn":
            r = knn_probe(global_pool(train_all_f[idx], channels), train_y[idx], global_pool(test_all_f, channels),
                          n_classes, k, t)
        elif head == "mlp":
            r = mlp_probe(train_all_f[idx], train_y[idx], test_all_f, seed)
        else:
            r = linear_probe(train_all_f[idx], train_y[idx], test_all_f, seed)
    return np.asarray(r.pred), r.chosen


def _train_all(backbone, data, idx, n_classes, seed, device, precision, control, epochs, emit, label) -> dict:
    from sslstudio.evaluation.finetune_all import MIN_STEPS, train_all_layers

    def on_epoch(epoch, train_loss, train_acc, test_acc, total=None):
        emit(EpochEvent(epoch=epoch, epochs=int(total or 0), train_loss=float(train_loss),
                        train_metric=float(train_acc), val_loss=None, val_metric=float(test_acc),
                        metric_name="accuracy", lr=0.0, images_per_s=0.0, samples_per_s=0.0, elapsed_s=0.0,
                        eta_s=0.0, extra=dict(label)))

    model = copy.deepcopy(backbone)
    return train_all_layers(model, data.train_x[idx], data.train_y[idx], data.test_x, data.test_y, n_classes,
                            seed=seed, device=device, precision=precision, control=control, on_epoch=on_epoch,
                            epochs=epochs, min_steps=1 if epochs else MIN_STEPS)


def _paired(rows: list[dict], correct: dict, seed: int) -> list[dict]:
    """The paired difference of every non-random row to random init's row of the same cell."""
    out = []
    random_rows = {(r["mode"], r["layer"], r["per_class"]): r for r in rows
                   if r["init"] == "random" and r.get("test_accuracy") is not None}
    for r in rows:
        if r["init"] == "random" or r.get("test_accuracy") is None:
            continue
        ref = random_rows.get((r["mode"], r["layer"], r["per_class"]))
        if ref is None or len(ref["accuracies"]) != len(r["accuracies"]):
            continue
        ca = correct.get((r["init"], r["mode"], r["layer"], r["per_class"]))
        cb = correct.get(("random", r["mode"], r["layer"], r["per_class"]))
        d = stats.paired_difference(r["accuracies"], ref["accuracies"], ca[0] if ca else None,
                                    cb[0] if cb else None, seed=seed)
        out.append({"init": r["init"], "init_label": r["init_label"], "mode": r["mode"], "layer": r["layer"],
                    "per_class": r["per_class"], "repeats": len(r["accuracies"]), **d})
    return out


__all__ = ["MODES", "compare", "init_label", "parse_budgets", "parse_layers"]
