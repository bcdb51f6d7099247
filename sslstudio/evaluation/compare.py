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
from dataclasses import dataclass
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
from sslstudio.evaluation.report import interpretation_notes, run_facts, write_results
from sslstudio.evaluation.table import budget_text
from sslstudio.runs import RunDir, is_run_dir
from sslstudio.settings import MAX_EPOCHS, MAX_IMAGE_SIZE, MAX_PER_CLASS, MIN_IMAGE_SIZE, check_settings, param

MODES = ("head", "knn", "all")
DEFAULT_MODES = ("head", "knn", "all")
DEFAULT_REPEATS = 3
DEFAULT_REPEATS_ALL = 1
RESULTS_FORMAT = 2
SAVE_EVERY_S = 5.0


@dataclass(frozen=True)
class CompareSettings:
    """The numeric settings of :func:`compare` with their ranges, declared once: ``compare`` checks them
    before any work and the window's spin boxes take their ranges from them. ``None``: the default."""

    per_class: int | None = param(None, "One label budget: images per class.", min=1, max=MAX_PER_CLASS)
    fraction: float | None = param(None, "One label budget as a share of each class.", min=0.0,
                                   min_exclusive=True, max=1.0)
    repeats: int | None = param(None, f"Label draws for head and knn (default {DEFAULT_REPEATS}).", min=1,
                                max=1000)
    repeats_all: int | None = param(None, f"Label draws for all-layer fine-tuning (default {DEFAULT_REPEATS_ALL}).",
                                    min=1, max=1000)
    knn_k: int = param(KNN_K, "Neighbours that vote in the kNN probe.", min=1, max=10_000)
    knn_t: float = param(KNN_T, "Temperature of the kNN vote.", min=0.0, min_exclusive=True, max=10.0)
    epochs_all: int | None = param(None, "Passes over each label draw in all-layer fine-tuning (default: 15 "
                                   "passes and at least 100 steps).", min=1, max=MAX_EPOCHS)
    image_size: int | None = param(None, "Side of the square inputs (default: the run's, else 64).",
                                   min=MIN_IMAGE_SIZE, max=MAX_IMAGE_SIZE)
    test_fraction: float = param(0.2, "Test share when there is no test folder.", min=0.0, min_exclusive=True,
                                 max=1.0, max_exclusive=True)
    seed: int = param(0, "Seed of the label draws and classifiers.", min=0)


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
            control: RunControl | None = None, trust_code: bool = False) -> dict:
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
        trust_code: Accept TorchScript archives among ``inits`` (opening one runs code from the file).
    """
    check_settings(dict(per_class=per_class, fraction=fraction, repeats=repeats, repeats_all=repeats_all, knn_k=knn_k,
                        knn_t=knn_t, epochs_all=epochs_all, image_size=image_size, test_fraction=test_fraction,
                        seed=seed), CompareSettings)  # before any work or any file is written
    plan = _plan(inits, baselines, modes, head, knn_k, knn_t, label_curve, per_class, fraction, repeats,
                 repeats_all)
    refuse_untrusted(plan["inits"], trust_code)  # a program among the inits stops the comparison at once
    with RunDir(out).hold("compare"):  # one job at a time in the output folder
        walk = _Comparison(plan, labelled=labelled, test=test, out=out, layers=layers, arch=arch,
                           image_size=image_size, device=device, seed=seed, weights=weights,
                           test_fraction=test_fraction, epochs_all=epochs_all, trust_code=trust_code,
                           cache=FeatureCache(cache_dir, enabled=feature_cache), emit=on_event or (lambda e: None),
                           control=control or RunControl())
        return walk.run()


def refuse_untrusted(inits: list[str], trust_code: bool) -> None:
    """Refuse, with one sentence, a TorchScript archive among ``inits`` unless the user trusts it."""
    from sslstudio.models.weights import is_torchscript_file, untrusted_code_error

    for init in inits:
        if not trust_code and init not in ("random", "imagenet") and Path(init).is_file() and is_torchscript_file(init):
            raise untrusted_code_error(init)


def _plan(inits, baselines, modes, head, knn_k, knn_t, label_curve, per_class, fraction, repeats,
          repeats_all) -> dict:
    """Check the settings (one sentence for a bad one) and resolve modes, initialisations, budgets, repeats."""
    requested = list(dict.fromkeys(modes or []))
    bad = [m for m in requested if m not in MODES]
    if bad or not requested:
        raise ConfigError(f"unknown mode(s) {', '.join(bad)}; use head, knn and/or all." if bad
                          else "choose at least one mode: head, knn or all.")
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; use linear or mlp.")
    baselines = list(baselines or [])
    for b in baselines:
        if b not in ("imagenet", "random"):
            raise ConfigError(f"unknown baseline {b!r}; use imagenet and/or random.")
    for init in inits:
        if init not in ("random", "imagenet") and not (is_run_dir(init) or Path(init).is_file()):
            raise ConfigError(f"--init {str(init)!r} is neither a run directory (with config.json) nor a weights "
                              "file; check the path.")
    all_inits = list(dict.fromkeys(list(inits) + [b for b in baselines if b not in inits]))
    if not all_inits:
        raise ConfigError("nothing to compare: give --init and/or --baselines.")
    if label_curve:
        budgets = parse_budgets(label_curve)
    elif per_class is not None:
        budgets = [int(per_class)]
    elif fraction is not None:
        budgets = ["all"] if float(fraction) == 1 else [f"{100 * float(fraction):g}%"]
    else:
        budgets = ["all"]
    n_rep = int(repeats if repeats is not None else DEFAULT_REPEATS)
    n_rep_all = int(repeats_all if repeats_all is not None else DEFAULT_REPEATS_ALL)
    modes = [m for m in MODES if m in requested]
    return {"inits": all_inits, "modes": modes, "probe_modes": [m for m in ("knn", "head") if m in modes],
            "head": head, "knn_k": int(knn_k), "knn_t": float(knn_t), "budgets": budgets,
            "repeats": {m: (n_rep if m != "all" else n_rep_all) for m in modes}}


class _Comparison:
    """One comparison's walk, phase by phase: set-up (data, stages, meta) -> per initialisation:
    backbone, features, probe rows, all-layer rows -> statistics across rows -> report."""

    def __init__(self, plan: dict, *, labelled, test, out, layers, arch, image_size, device, seed, weights,
                 test_fraction, epochs_all, cache: FeatureCache, emit: EventSink, control: RunControl,
                 trust_code: bool = False):
        self.plan, self.seed, self.weights, self.epochs_all = plan, seed, weights, epochs_all
        self.trust_code = trust_code
        self.cache, self.emit, self.control = cache, emit, control
        self.t_start = time.perf_counter()
        run_info = next((run_defaults(i) for i in plan["inits"] if run_defaults(i)), {})
        self.arch = arch or run_info.get("arch") or "resnet18"
        self.image_size = int(image_size or run_info.get("image_size") or 64)
        from sslstudio.models import build_backbone

        self.stages = build_backbone(self.arch).stage_names()
        self.layers = parse_layers(layers, self.stages)
        self.out_dir = Path(out)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device)
        self.precision = resolve_precision("auto", self.device)
        self.data = load_labelled_data(labelled, test, self.image_size, None, test_fraction, seed)
        self.keys = {"train": images_digest(self.data.train_paths) if self.data.train_paths else
                     f"n{len(self.data.train_y)}",
                     "test": images_digest(self.data.test_paths) if self.data.test_paths else
                     f"n{len(self.data.test_y)}"}
        data, n_probe_rows = self.data, len(plan["probe_modes"]) * len(self.layers)
        self.meta = {"format": RESULTS_FORMAT, "arch": self.arch, "image_size": self.image_size, "seed": seed,
                     "classes": data.classes, "train_images": int(len(data.train_y)),
                     "test_images": int(len(data.test_y)), "test_source": data.test_source, "modes": plan["modes"],
                     "layers": self.layers, "head": plan["head"], "knn_k": plan["knn_k"], "knn_t": plan["knn_t"],
                     "repeats": plan["repeats"], "budgets": plan["budgets"], "device": str(self.device),
                     "inits": [{"init": i, "init_label": init_label(i)} for i in plan["inits"]]}
        n_all = plan["repeats"].get("all", 0)
        self.jobs_per_init = 1 + len(plan["budgets"]) * (n_probe_rows + n_all)
        self.total_rows = len(plan["inits"]) * len(plan["budgets"]) * (n_probe_rows + ("all" in plan["modes"]))
        self.progress = _Progress(len(plan["inits"]) * self.jobs_per_init, emit)
        self.rows: list[dict] = []
        self.correct: dict[tuple, list[np.ndarray]] = {}  # (init, mode, layer, budget) -> per-draw 0/1 vectors
        self.init_facts: dict[str, dict] = {}
        self.saved_at = time.perf_counter()
        emit(LogEvent(f"compare: {data.summary()}; {len(plan['inits'])} initialisation(s) x "
                      f"{', '.join(plan['modes'])}; label budgets {', '.join(map(str, plan['budgets']))}"))

    # -- phases ----------------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            for init in self.plan["inits"]:
                self.control.checkpoint()
                self.run_init(init)
        except Cancelled:  # keep what finished: the rows so far are written before stopping
            self.meta.update(time_s=time.perf_counter() - self.t_start, cancelled=True)
            write_results(self.out_dir, self.result(["Stopped before the end: these are the rows that finished."]))
            raise
        return self.finish()

    def run_init(self, init: str) -> None:
        label = init_label(init)
        try:
            backbone, _info = resolve_init(init, self.arch, self.seed, self.weights, self.trust_code)
        except SSLStudioError as exc:
            self.unavailable(init, label, str(exc))
            return
        self.init_facts[init] = run_facts(init) if init not in ("random", "imagenet") else {}
        train_f, test_f = self.features(backbone, label)
        channels = {s: backbone.stage_channels(s) for s in self.layers}
        for budget in self.plan["budgets"]:
            for mode in self.plan["probe_modes"]:
                for layer in self.layers:
                    self.control.checkpoint()
                    self.probe_row(init, label, mode, layer, budget, train_f[layer], test_f[layer], channels[layer])
            if "all" in self.plan["modes"]:
                self.all_layers_row(init, label, backbone, budget)

    def unavailable(self, init: str, label: str, error: str) -> None:
        self.emit(LogEvent(f"{label} could not be used: {error}", "warning"))
        self.init_facts[init] = {"error": error}
        for budget in self.plan["budgets"]:
            for mode in self.plan["probe_modes"]:
                for layer in self.layers:
                    self.finish_row({**self.base_row(init, mode, layer, budget), "error": error}, None, [])
            if "all" in self.plan["modes"]:
                self.finish_row({**self.base_row(init, "all", self.stages[-1], budget), "error": error}, None, [])
        self.progress.step(f"{label}: unavailable", self.jobs_per_init)

    def features(self, backbone, label: str) -> tuple[dict, dict]:
        """Every probe stage's features of the training and test images (from the cache where present)."""
        if not self.plan["probe_modes"]:
            self.progress.step(f"{label}: ready")
            return {}, {}
        self.emit(LogEvent(f"{label}: features of {', '.join(self.layers)}"))
        digest, hits0 = weights_digest(backbone), self.cache.hits
        out = [cached_features(self.cache, backbone, digest, images, self.keys[part], self.layers, self.image_size,
                               self.device, self.precision, self.control)
               for part, images in (("train", self.data.train_x), ("test", self.data.test_x))]
        source = "from the feature cache" if self.cache.hits - hits0 == 2 * len(self.layers) else "computed"
        self.progress.step(f"{label}: features {source}")
        return out[0], out[1]

    def probe_row(self, init, label, mode, layer, budget, train_f, test_f, channels) -> None:
        data, head, row = self.data, self.plan["head"], self.base_row(init, mode, layer, budget)
        # a deterministic probe on the same draw gives the same answer: one repeat is all there is
        varies = stats.draw_leaves_choice(data.train_y, budget) or (mode == "head" and head == "mlp")
        preds, accs, chosen = [], [], []
        for r in range(self.plan["repeats"][mode] if varies else 1):
            idx = stats.label_draw(data.train_y, budget, r, self.seed)
            pred, info = _probe(mode, head, train_f, test_f, data.train_y, idx, len(data.classes), channels,
                                self.plan["knn_k"], self.plan["knn_t"], self.seed + r)
            preds.append(pred)
            accs.append(float((pred == data.test_y).mean()))
            chosen.append(info)
        row["train_images"] = int(len(stats.label_draw(data.train_y, budget, 0, self.seed)))
        if mode == "head" and head == "linear":
            row["l2"] = [c.get("C") for c in chosen]
            row["l2_source"] = chosen[0].get("C_source")
        self.finish_row(row, preds, accs)
        self.progress.step(f"{label} / {mode} / {layer} / {budget_text(budget)}: {100 * row['test_accuracy']:.1f}%")

    def all_layers_row(self, init, label, backbone, budget) -> None:
        data, layer = self.data, self.stages[-1]
        row = self.base_row(init, "all", layer, budget)
        preds, accs, results = [], [], []
        try:
            for r in range(self.plan["repeats"]["all"]):
                self.control.checkpoint()
                idx = stats.label_draw(data.train_y, budget, r, self.seed)
                result = _train_all(backbone, data, idx, len(data.classes), self.seed + r, self.device,
                                    self.precision, self.control, self.epochs_all, self.emit,
                                    {"init": init, "init_label": label, "mode": "all", "layer": layer,
                                     "per_class": budget, "repeat": r})
                preds.append(np.asarray(result["test_pred"]))
                accs.append(float(result["test_accuracy"]))
                results.append(result)
                self.progress.step(f"{label} / all layers / {budget_text(budget)} / draw {r + 1}: "
                                   f"{100 * accs[-1]:.1f}%")
            first = results[0]
            row.update(train_images=int(len(stats.label_draw(data.train_y, budget, 0, self.seed))),
                       epochs=first.get("epochs"), steps=first.get("steps"),
                       history=[list(map(float, h)) for h in first.get("history", [])],
                       settings=first.get("settings", {}), reported="last epoch")
        except SSLStudioError as exc:
            row["error"], preds = str(exc), None
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken job must not lose the others
            row["error"], preds = f"{type(exc).__name__}: {exc}", None
            self.emit(LogEvent(f"{label} / all layers failed: {exc}\n{traceback.format_exc()}", "warning"))
        self.finish_row(row, preds, accs)

    def finish(self) -> dict:
        self.meta["time_s"] = time.perf_counter() - self.t_start
        result = self.result([])
        result["notes"] = interpretation_notes(result, self.init_facts)
        write_results(self.out_dir, result, curve=len(self.plan["budgets"]) > 1)
        self.emit(LogEvent(f"compare finished in {self.meta['time_s']:.1f} s; results in {self.out_dir}"))
        return result

    # -- rows ------------------------------------------------------------------------------------
    def base_row(self, init: str, mode: str, layer: str, budget) -> dict:
        row = {"init": init, "init_label": init_label(init), "mode": mode, "layer": layer, "per_class": budget,
               "repeats": self.plan["repeats"][mode], "test_accuracy": None, "std": None, "ci_low": None,
               "ci_high": None}
        if mode == "head":
            row["head"] = self.plan["head"]
        if mode == "knn":
            row.update(k=self.plan["knn_k"], t=self.plan["knn_t"])
        return row

    def finish_row(self, row: dict, preds: list[np.ndarray] | None, accs: list[float]) -> None:
        """Statistics, per-class accuracy and confusion of a row; emit it; save partial results now and then."""
        data = self.data
        if preds:
            hits = [(p == data.test_y).astype(np.int8) for p in preds]
            self.correct[(row["init"], row["mode"], row["layer"], row["per_class"])] = hits
            row.update(stats.summarise(accs, hits[0], seed=self.seed))
            row["accuracies"] = [float(a) for a in accs]
            row["repeats"] = len(accs)
            m = sum(stats.confusion(data.test_y, p, len(data.classes)) for p in preds)
            totals = m.sum(axis=1)
            row["per_class_accuracy"] = {c: (float(m[i, i] / totals[i]) if totals[i] else None)
                                         for i, c in enumerate(data.classes)}
            row["confusion"] = m.tolist()
        self.rows.append(row)
        self.emit(RowEvent(row=dict(row), index=len(self.rows), total=self.total_rows))
        if time.perf_counter() - self.saved_at > SAVE_EVERY_S:  # partial results on disk, a few times a minute
            self.meta["time_s"] = time.perf_counter() - self.t_start
            write_results(self.out_dir, self.result([], paired=False))
            self.saved_at = time.perf_counter()

    def result(self, notes: list[str], paired: bool = True) -> dict:
        self.meta["feature_cache"] = {"enabled": self.cache.enabled, "hits": self.cache.hits,
                                      "misses": self.cache.misses}
        return {"format": RESULTS_FORMAT, "meta": self.meta, "notes": notes, "rows": self.rows,
                "paired": _paired(self.rows, self.correct, self.seed) if paired else []}


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
