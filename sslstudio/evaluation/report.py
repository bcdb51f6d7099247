"""The comparison's report: what it means in sentences, results.json / .csv / .md, label_curve.png.

``results.json`` (format 2) holds ``meta``, ``notes`` (the sentences), ``rows`` (one per
initialisation, mode, stage and label budget, with ``test_accuracy`` the mean over repeats, ``std``,
``ci_low``, ``ci_high``, per-class accuracy and a confusion matrix) and ``paired`` (each
initialisation minus random init on the same draws: ``delta``, ``ci_low``, ``ci_high``, ``verdict``).
Accuracies are fractions in the JSON and CSV, percentages in the Markdown and the plot.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sslstudio.engine.verdict import DIVERGED, FINISHED, NOT_LEARNT, chance_from_state, not_learnt
from sslstudio.evaluation.table import budget_text, column_name, mode_label, results_table, row_label
from sslstudio.runs import RunDir, atomic_write_bytes, atomic_write_json

FEW_EPOCHS = 0.5  # fewer than half the paper's epochs is called "far fewer"


# -- facts about a pretraining run -------------------------------------------------------------
def run_facts(run_dir) -> dict:
    """What a reader needs to know about a run before believing its rows.

    ``task``, ``epochs_completed``, ``epochs`` (asked for), ``paper_epochs`` (the task's recipe),
    ``status``, ``metric``, ``val_metric`` (held-out pretext figure) and ``chance`` (1 / number of
    pretext classes, read from the checkpoint's classifier; ``None`` for reconstruction tasks).
    """
    run = RunDir(run_dir)
    facts: dict = {}
    try:
        config = run.read_config()
    except Exception:  # noqa: BLE001 - a weights file, not a run: nothing to say
        return facts
    task = config.get("task")
    facts.update(task=task, epochs=config.get("epochs"))
    try:
        from sslstudio.tasks import get_task

        facts["paper_epochs"] = int(get_task(task).optim.epochs)
    except Exception:  # noqa: BLE001
        facts["paper_epochs"] = None
    summary = {}
    path = Path(run_dir) / "summary.json"
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            summary = {}
    metric = summary.get("metric") or "accuracy"
    facts["metric"] = metric
    facts["status"] = summary.get("status", "unfinished")
    history = _epoch_records(Path(run_dir) / "metrics.jsonl")
    facts["epochs_completed"] = summary.get("epochs_completed", len(history))
    val = summary.get(f"final_val_{metric}")
    if val is None and history:
        val = history[-1].get(f"val_{metric}")
    facts["val_metric"] = val
    facts["chance"] = None
    if metric == "accuracy":
        try:
            facts["chance"], facts["pretext_classes"] = chance_from_state(run.load_checkpoint("last")["model"])
        except Exception:  # noqa: BLE001 - no checkpoint: no chance level to state
            pass
    return facts


def _epoch_records(path: Path) -> list[dict]:
    out = []
    try:
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("type") == "epoch":
                out.append(rec)
    except OSError:
        pass
    return out


# -- sentences ---------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def interpretation_notes(result: dict, init_facts: dict) -> list[str]:
    """Plain sentences to read before believing a row."""
    meta, rows, paired = result["meta"], result["rows"], result["paired"]
    labels = {i["init"]: i["init_label"] for i in meta.get("inits", [])}
    notes: list[str] = []
    for init, facts in init_facts.items():
        label = labels.get(init, init)
        if "error" in facts:
            if init == "imagenet":
                notes.append(f"ImageNet weights were not available, so there is no ImageNet row: {facts['error']}")
            else:
                notes.append(f"{label} could not be used: {facts['error']}")
            continue
        if not facts:
            continue
        chance, val = facts.get("chance"), facts.get("val_metric")
        if not_learnt(val, chance):
            notes.append(f"{label}: its held-out pretext accuracy is {_pct(val)} against a chance level of "
                         f"{_pct(chance)} ({facts.get('pretext_classes')} pretext classes): the pretext task has "
                         "barely been learnt, so its features say little about the task.")
        done, paper = facts.get("epochs_completed"), facts.get("paper_epochs")
        if done is not None and paper and done < FEW_EPOCHS * paper:
            notes.append(f"{label} ran {done} epoch{'s' if done != 1 else ''}; the paper's recipe is {paper}. "
                         "Its rows show a short run, not the method.")
        if facts.get("status") == DIVERGED:
            notes.append(f"{label}: its pretraining diverged and stopped early; its rows show the last checkpoint "
                         "before that.")
        elif facts.get("status") not in (FINISHED, NOT_LEARNT, None):
            notes.append(f"{label} did not finish its pretraining ({facts.get('status')}).")
    has_random = any(r["init"] == "random" and r.get("test_accuracy") is not None for r in rows)
    others = [r for r in rows if r["init"] != "random" and r.get("test_accuracy") is not None]
    if others and not has_random:
        notes.append("Random init is not in this comparison, so no row can be called ahead of or behind it.")
    head = meta.get("head", "linear")
    by_init: dict[str, dict[str, list[dict]]] = {}
    totals: dict[str, int] = {}
    for p in paired:
        totals[p["init_label"]] = totals.get(p["init_label"], 0) + 1
        if p["verdict"] != "within noise":
            by_init.setdefault(p["init_label"], {}).setdefault(p["verdict"], []).append(p)
    for label, verdicts in by_init.items():
        for word in ("ahead", "behind"):
            cells = sorted(verdicts.get(word, []), key=lambda p: -abs(p["delta"]))
            if not cells:
                continue
            shown = "; ".join(f"{column_name(p['mode'], p['layer'], head)} at {budget_text(p['per_class'])} "
                              f"({100 * p['delta']:+.1f} points, 95% interval {100 * p['ci_low']:+.1f} to "
                              f"{100 * p['ci_high']:+.1f})" for p in cells[:2])
            more = f", and {len(cells) - 2} more" if len(cells) > 2 else ""
            where = "ahead of" if word == "ahead" else "behind"
            notes.append(f"{label} is {where} random init beyond noise in {len(cells)} of {totals[label]} cells: "
                         f"{shown}{more}.")
    if paired:
        quiet = sum(p["verdict"] == "within noise" for p in paired)
        if quiet == len(paired):
            notes.append(f"No row differs from random init beyond noise ({quiet} paired comparisons, 95% intervals).")
        elif quiet:
            notes.append(f"The other {quiet} of {len(paired)} paired comparisons with random init are within noise.")
    reps = meta.get("repeats", {})
    if any(r.get("interval") == "bootstrap" for r in rows if r["mode"] != "all"):
        notes.append("Where a probe saw every labelled image (no draw to vary), it is one deterministic fit; its "
                     "interval is a bootstrap over the test images, not over repeats.")
    if "all" in meta.get("modes", []):
        notes.append(f"All-layer fine-tuning reports its last epoch, not its best (nothing is chosen on the test "
                     f"images); {reps.get('all', 1)} draw{'s' if reps.get('all', 1) != 1 else ''} per cell.")
    n_test = meta.get("test_images") or 0
    if n_test and n_test < 2000:
        notes.append(f"The test set has {n_test} images: one image is {100 / n_test:.2f} points.")
    return notes


# -- files -------------------------------------------------------------------------------------
def results_markdown(result: dict) -> str:
    meta = result["meta"]
    reps = meta.get("repeats", {})
    lines = ["# Comparison", ""]
    if result.get("notes"):
        lines += ["What to know before reading the table:", ""] + [f"- {n}" for n in result["notes"]] + [""]
    names = {"head": "head", "knn": "kNN", "all": "all layers"}
    groups: dict[int, list[str]] = {}
    for m in meta.get("modes", []):
        if m in reps:
            groups.setdefault(reps[m], []).append(names[m])
    rep_text = "; ".join(f"{n} for {' and '.join(ms)}" for n, ms in groups.items())
    lines.append(f"Test top-1 accuracy (%), {meta.get('arch')} at {meta.get('image_size')} px, "
                 f"{meta.get('train_images')} labelled training / {meta.get('test_images')} test images, "
                 f"{len(meta.get('classes', []))} classes, seed {meta.get('seed')}. "
                 f"Cells are the mean ± standard deviation over label draws ({rep_text}); a cell with one draw "
                 "shows its 95% bootstrap interval over the test images as [low, high]. "
                 + (f"kNN: k = {meta.get('knn_k')}, T = {meta.get('knn_t')}, cosine on globally pooled features. "
                    if "knn" in meta.get("modes", []) else "")
                 + (f"Head: {'an MLP (two hidden layers)' if meta.get('head') == 'mlp' else 'logistic regression'} "
                    "on standardised pooled features, L2 strength chosen on a validation split of the training "
                    "labels. " if "head" in meta.get("modes", []) else "")
                 + ("All layers: every layer fine-tuned after a linear probe on the pooled grids of every stage "
                    "(LP-FT; the head reads all stages), a budget of at least 100 steps with warm-up; the last "
                    "evaluation is reported, not the best." if "all" in meta.get("modes", []) else ""))
    errors: list[str] = []
    table = results_table(result)
    for budget in table.budgets:
        header, body = table.for_budget(budget)
        lines += ["", f"## {budget_text(budget).capitalize()}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
    for r in result["rows"]:
        if r.get("error") and r["error"] not in errors:
            errors.append(r["error"])
    if result.get("paired"):
        head = meta.get("head", "linear")
        lines += ["", "## Difference to random init", "",
                  "Paired on the same label draws, classifier seeds and test images; 95% interval in points.", "",
                  "| initialisation | column | labels | difference | 95% interval | verdict |",
                  "|---|---|---|---|---|---|"]
        for p in result["paired"]:
            lines.append(f"| {p['init_label']} | {column_name(p['mode'], p['layer'], head)} | "
                         f"{budget_text(p['per_class'])} | {100 * p['delta']:+.1f} | "
                         f"[{100 * p['ci_low']:+.1f}, {100 * p['ci_high']:+.1f}] | {p['verdict']} |")
    if errors:
        lines += ["", "n/a:"] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["init", "init_label", "mode", "layer", "per_class", "repeats", "test_accuracy", "std", "ci_low",
              "ci_high", "interval", "error"]


def results_csv(result: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in result["rows"]:
        writer.writerow({**{k: "" for k in CSV_FIELDS}, **{k: v for k, v in r.items() if v is not None}})
    return buf.getvalue()


def write_results(out_dir, result: dict, curve: bool = False) -> None:
    """``results.json``, ``results.csv``, ``results.md`` (atomically) and, with ``curve``, ``label_curve.png``."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "results.json", result)
    atomic_write_bytes(out_dir / "results.csv", results_csv(result).encode())
    atomic_write_bytes(out_dir / "results.md", results_markdown(result).encode())
    if curve:
        write_label_curve(result, out_dir / "label_curve.png")


# -- the charts: label-efficiency curves, accuracy per stage ------------------------------------
def curve_series(result: dict) -> dict[tuple[str, str], dict[str, dict]]:
    """``{(mode, layer): {label: {"x", "y", "lo", "hi", "budget"}}}`` (accuracies in %), sorted by x.

    x is the budget in images per class; for every label or a share of each class, the mean number of
    labelled images per class of the row (twice the largest numeric budget when that is unknown). All-layer
    fine-tuning is one series, ``("all", "")``, the window's and the report's column."""
    rows = [r for r in result["rows"] if r.get("test_accuracy") is not None]
    n_classes = len(result.get("meta", {}).get("classes") or [])
    numeric = [r["per_class"] for r in rows if isinstance(r.get("per_class"), (int, float))]
    out: dict = {}
    for r in rows:
        budget = r.get("per_class", "all")
        if isinstance(budget, (int, float)):
            x = float(budget)
        elif n_classes and r.get("train_images"):
            x = r["train_images"] / n_classes
        else:
            x = float(max(numeric or [1]) * 2)
        key = (str(r.get("mode")), "" if r.get("mode") == "all" else str(r.get("layer")))
        s = out.setdefault(key, {}).setdefault(row_label(r), {"x": [], "y": [], "lo": [], "hi": [], "budget": []})
        s["x"].append(float(x))
        s["y"].append(100 * r["test_accuracy"])
        s["lo"].append(100 * (r["ci_low"] if r.get("ci_low") is not None else r["test_accuracy"]))
        s["hi"].append(100 * (r["ci_high"] if r.get("ci_high") is not None else r["test_accuracy"]))
        s["budget"].append(budget)
    for series in out.values():
        for s in series.values():
            order = sorted(range(len(s["x"])), key=s["x"].__getitem__)
            for key in s:
                s[key] = [s[key][i] for i in order]
    return out


def stage_series(rows: list[dict], budget=None, stage_order: list[str] | None = None
                 ) -> tuple[list[str], dict[str, list[dict | None]]]:
    """The per-stage chart of one label budget (None: every row): the stages probed (x, in
    ``stage_order``) and, per line (``label · mode`` when several modes, else ``label``), the row at
    each stage; all-layer fine-tuning sits at the last stage."""
    rows = [r for r in rows if budget is None or r.get("per_class", "all") == budget]
    stages = list(dict.fromkeys(r.get("layer") for r in rows if r.get("mode") != "all"))
    order = list(stage_order or [])
    stages.sort(key=lambda s: order.index(s) if s in order else len(order))
    several_modes = len({r.get("mode") for r in rows}) > 1
    out: dict[str, list[dict | None]] = {}
    for r in rows:
        if r.get("mode") == "all" and not stages:
            continue
        x = len(stages) - 1 if r.get("mode") == "all" else stages.index(r.get("layer"))
        name = f"{row_label(r)} · {mode_label(r)}" if several_modes else row_label(r)
        out.setdefault(name, [None] * len(stages))[x] = r
    return stages, out


# -- reading results back ----------------------------------------------------------------------
def normalise_result(data) -> dict:
    """A results.json of either format as the current dict (an old file is a bare list of rows)."""
    if isinstance(data, list):
        data = {"format": 1, "rows": data}
    if not isinstance(data, dict):
        data = {}
    out = dict(data)
    out["rows"] = [r for r in (out.get("rows") or []) if isinstance(r, dict)]
    out["notes"] = [str(n) for n in (out.get("notes") or [])]
    out["paired"] = [p for p in (out.get("paired") or []) if isinstance(p, dict)]
    out["meta"] = dict(out.get("meta") or {})
    return out


def latest_results_for(root, run) -> tuple[Path, dict] | None:
    """The newest comparison folder under ``root`` (``<workspace>/compare``) whose results used the run
    folder ``run``: ``(folder, result)``, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    target = Path(run).resolve()
    folders = sorted((p for p in root.iterdir() if (p / "results.json").is_file()),
                     key=lambda p: (p / "results.json").stat().st_mtime, reverse=True)
    for folder in folders:
        try:
            result = normalise_result(json.loads((folder / "results.json").read_text()))
        except (OSError, ValueError):
            continue
        for r in result["rows"]:
            init = r.get("init")
            if init not in (None, "random", "imagenet") and Path(str(init)).resolve() == target:
                return folder, result
    return None


def write_label_curve(result: dict, path) -> Path:
    """Accuracy against labelled images per class (log x), a line and a 95% band per initialisation;
    one panel per (mode, stage)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    series = curve_series(result)
    head = result["meta"].get("head", "linear")
    keys = sorted(series, key=lambda k: (("knn", "head", "all").index(k[0]), k[1]))
    n = max(1, len(keys))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.6 * cols, 3.0 * rows + 0.6), dpi=110)
    styles = ["-", "--", "-.", ":"]
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    labels = list(dict.fromkeys(lbl for s in series.values() for lbl in s))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, label in enumerate(labels):
            s = series[key].get(label)
            if not s:
                continue
            c = colours[j % len(colours)]
            ax.plot(s["x"], s["y"], styles[j % len(styles)], color=c, marker="o", ms=3, label=label)
            ax.fill_between(s["x"], s["lo"], s["hi"], color=c, alpha=0.18, linewidth=0)
        ax.set_xscale("log")
        ax.set_title(column_name(key[0], key[1], head), fontsize=9)
        ax.set_xlabel("labelled images per class", fontsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    if labels:
        handles, names = fig.axes[0].get_legend_handles_labels() if fig.axes else ([], [])
        fig.legend(handles, names, loc="upper center", ncol=min(4, len(names)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.0 * rows + 0.6)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


__all__ = ["CSV_FIELDS", "curve_series", "interpretation_notes", "latest_results_for", "normalise_result",
           "results_csv", "results_markdown", "run_facts", "stage_series", "write_label_curve", "write_results"]
