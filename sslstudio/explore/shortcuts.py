"""Shortcut checks: the trained pretext model's accuracy with and without each defence its task declares.

A pretext task declares its defences next to its settings (:class:`~sslstudio.tasks.base.Defence`:
the settings that switch one off). For each, the trained model is scored on the same held-out images
twice: with the samples the task makes as trained, and with the samples a task with the defence
switched off makes, each by the task's own ``make_batch`` with the same seed (the run's seed and
the held-out "epoch", so the first column reproduces the run's own validation), so only the
defence differs. A large gain without a defence is a shortcut the defence is closing: the network
would use the cue if it could. Rotation declares none; its check blanks the image borders (an
eighth of the side, grey) against the plain images. The gain's 95% interval is a paired bootstrap
over the images (seeded).

The images are the run's held-out images when the split can be reproduced (same folder, same number
of usable images: the split is a seeded permutation of them), else the first ``images`` images of
the folder sorted by path; the table says which.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sslstudio.engine.events import LogEvent, ProgressEvent, RunControl
from sslstudio.engine.loader import VAL_EPOCH, epoch_batches, make_task_batch
from sslstudio.figures import pct

#: Tasks without declared defences whose check blanks the image borders instead.
BORDER_CHECK_TASKS = ("rotation",)
BORDER_FRACTION = 1 / 8
BORDER_GREY = 128
BOOTSTRAP = 2000
#: A gain without a defence from which the table calls it a shortcut (when its interval is above 0).
LARGE_GAIN = 0.02


@dataclass
class Check:
    """One comparison: the samples "with" (the defence on, or the cue removed) against "without"."""

    name: str
    description: str
    off: dict
    task_without: Any
    trained: str  # which column the model was trained on: "with" or "without"
    blank_items: Callable | None = None  # for the border check: what turns items into the "with" items


# -- the checks of a task ----------------------------------------------------------------------
def blank_borders(images: np.ndarray, fraction: float = BORDER_FRACTION, value: int = BORDER_GREY) -> np.ndarray:
    """A copy of uint8 ``[N, S, S, 3]`` images whose outer band (``round(S * fraction)`` px, at least 1) is grey."""
    out = np.array(images, copy=True)
    b = max(1, int(round(out.shape[1] * fraction)))
    out[:, :b], out[:, -b:], out[:, :, :b], out[:, :, -b:] = value, value, value, value
    return out


def task_checks(task) -> list[Check]:
    """The checks of a (configured) task: one per declared defence, the border check for rotation, else none."""
    from sslstudio.tasks import create_task

    options = dataclasses.asdict(task.config)
    checks = [Check(d.name, d.description, dict(d.off), create_task(task.name, {**options, **d.off}, task.image_size),
                    "with") for d in type(task).defences]
    if not checks and task.name in BORDER_CHECK_TASKS:
        size = task.image_size
        band = max(1, int(round(size * BORDER_FRACTION)))
        share = 1 - (max(0, size - 2 * band) / size) ** 2
        checks.append(Check("borders blanked", f"A {band} px band along every side (an eighth of the side, {share:.0%} "
                            f"of the pixels) set to grey; {task.name} declares no defence: how much of the answer "
                            "comes from the image's border.", {}, task, "without", blank_borders))
    return checks


def has_checks(task) -> bool:
    return bool(type(task).defences) or task.name in BORDER_CHECK_TASKS


# -- scoring -----------------------------------------------------------------------------------
def _item_correct(model, inputs: torch.Tensor, target: torch.Tensor, items: int) -> np.ndarray:
    """Per item of a batch: the share of its samples the model classifies right (labels below 0 not counted)."""
    output = model(inputs)
    t = target.reshape(-1)
    valid = (t >= 0).view(items, -1)
    right = ((output.argmax(1) == t).view(items, -1) & valid).cpu().double().sum(1)  # no float64 on MPS
    return (right / valid.cpu().double().sum(1).clamp_min(1)).numpy()


@torch.no_grad()
def paired_correct(model, with_: tuple, without: tuple, seed: int, batch_size: int, device,
                   control: RunControl | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-item accuracies ``[N]`` of ``model`` on ``(task, items)`` "with" and "without", and whether every
    sample was identical.

    The batches are the run's validation batches: ``batch_size`` items in order, batch ``k`` made by
    :func:`~sslstudio.engine.loader.make_task_batch` with ``(seed, VAL_EPOCH, k)`` for both.
    """
    (task_a, items_a), (task_b, items_b) = with_, without
    model.eval()
    a, b, identical = [], [], True
    batches = epoch_batches(len(items_a), batch_size, seed, VAL_EPOCH, shuffle=False, drop_last=False)
    for step, keys in enumerate(batches):
        if control is not None:
            control.checkpoint()
        index = np.array([i for _, i in keys], dtype=np.int64)
        xa, ta = make_task_batch(task_a, items_a, index, seed, VAL_EPOCH, step, device)
        xb, tb = make_task_batch(task_b, items_b, index, seed, VAL_EPOCH, step, device)
        identical = identical and xa.shape == xb.shape and bool(torch.equal(xa, xb)) and bool(torch.equal(ta, tb))
        a.append(_item_correct(model, xa, ta, len(index)))
        b.append(_item_correct(model, xb, tb, len(index)))
    return np.concatenate(a), np.concatenate(b), identical


def paired_bootstrap(with_: np.ndarray, without: np.ndarray, seed: int, reps: int = BOOTSTRAP) -> tuple[float, float]:
    """95% interval of ``mean(without - with)`` by resampling the items (paired), seeded."""
    diff = np.asarray(without, dtype=np.float64) - np.asarray(with_, dtype=np.float64)
    if len(diff) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(reps)
    for start in range(0, reps, 250):  # bounded memory for large sets
        idx = rng.integers(0, len(diff), (min(250, reps - start), len(diff)))
        means[start:start + len(idx)] = diff[idx].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _geometry_change(task_a, task_b) -> str:
    """What else switching changes in pixels (patch or tile size...), from the two tasks' ``run_info``."""
    a, b = task_a.run_info(), task_b.run_info()
    changed = [f"{k[:-3].replace('_', ' ')} {a[k]} \u2192 {b[k]} px" for k in a
               if k.endswith("_px") and k in b and a[k] != b[k]]
    return ", ".join(changed)


def measure_checks(task, model, train_images: np.ndarray, eval_images: np.ndarray, seed: int, batch_size: int,
                   device, source: str, bootstrap_seed: int = 0, emit=None,
                   control: RunControl | None = None) -> list[dict]:
    """The table's rows for a configured ``task`` and its trained ``model`` (see :func:`write_shortcut_table`).

    ``train_images`` are what the task prepares (as pretraining does, with ``seed``); the checks are
    measured on ``task.holdout_items(...)`` of ``eval_images``.
    """
    emit = emit or (lambda event: None)
    checks = task_checks(task)
    if not checks:
        return [no_defence_row(task, source)]
    items = task.holdout_items(task.prepare(train_images, seed), eval_images)
    rows = []
    for i, check in enumerate(checks):
        emit(ProgressEvent(i, len(checks), f"shortcut check: {check.name}"))
        if check.blank_items is not None:  # the cue removed from the items, the task as trained
            with_, without = (task, check.blank_items(items)), (task, items)
        else:
            off = check.task_without
            with_, without = (task, items), (off, off.holdout_items(off.prepare(train_images, seed), eval_images))
        a, b, identical = paired_correct(model, with_, without, seed, batch_size, device, control)
        rows.append(_row(task, check, a, b, identical, source, bootstrap_seed))
    emit(ProgressEvent(len(checks), len(checks), "shortcut checks done"))
    return rows


def no_defence_row(task, source: str) -> dict:
    return {"task": task.name, "check": "no defences declared", "kind": "none",
            "description": f"The {task.name} task declares no defences against shortcuts, so there is nothing "
                           "to switch off.", "off": {}, "trained": "", "accuracy_with": None,
            "accuracy_without": None, "gain": None, "gain_low": None, "gain_high": None, "n": 0,
            "images": source, "identical": False, "already_off": False, "note": "",
            "meaning": "No defences declared: nothing to check."}


def _row(task, check: Check, a: np.ndarray, b: np.ndarray, identical: bool, source: str, seed: int) -> dict:
    lo, hi = (0.0, 0.0) if identical else paired_bootstrap(a, b, seed)
    options = dataclasses.asdict(task.config)
    already_off = bool(check.off) and all(options.get(k) == v for k, v in check.off.items())
    row = {"task": task.name, "check": check.name, "kind": "defence" if check.blank_items is None else "border check",
           "description": check.description, "off": dict(check.off), "trained": check.trained,
           "accuracy_with": float(a.mean(dtype=np.float64)), "accuracy_without": float(b.mean(dtype=np.float64)),
           "gain": float(b.mean(dtype=np.float64) - a.mean(dtype=np.float64)), "gain_low": lo, "gain_high": hi,
           "n": int(len(a)),
           "images": source, "identical": bool(identical), "already_off": already_off,
           "note": "" if check.blank_items is not None else _geometry_change(task, check.task_without)}
    row["meaning"] = meaning(row)
    return row


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def meaning(row: dict) -> str:
    """One sentence saying what a row means."""
    if row["kind"] == "none":
        return "No defences declared: nothing to check."
    if row["identical"]:
        why = "it is already off in this run's settings" if row.get("already_off") else \
            "it has no effect at this image size"
        return f"Switching it off gives the very same samples ({why}), so it cannot be judged here."
    gain, lo, hi = row["gain"], row["gain_low"], row["gain_high"]
    also = f" (switching it off also changes {row['note']})" if row["note"] else ""
    if row["kind"] == "border check":
        if lo > 0:
            return (f"Blanking the borders costs {_points(gain)[1:]} points: part of the answer comes from the outer "
                    "band, from its content (sky, ground) or from framing and edge cues that give the orientation "
                    "away; gradcam.png shows where the head looks.")
        if hi < 0:
            return "Accuracy rises with the borders blanked: the border does not help the model here."
        return "Blanking the borders makes no clear difference: the model does not depend on the image's outer band."
    if lo > 0 and gain >= LARGE_GAIN:
        return (f"Without it the model scores {_points(gain)} points higher{also}: the network would use a shortcut "
                "that this defence is closing.")
    if lo > 0:
        return (f"Without it the model scores slightly higher ({_points(gain)} points, the interval above 0){also}: "
                "at most a weak shortcut that this defence closes.")
    if hi < 0:
        return (f"Without it accuracy drops by {_points(gain)[1:]} points{also}: the samples look unlike those it "
                "was trained on; no sign of a shortcut the defence closes.")
    return f"No clear difference (the interval includes 0){also}: no sign on these images of a shortcut it closes."


# -- the images --------------------------------------------------------------------------------
def holdout_split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(held-out, training)`` sorted indices of ``n`` images, as pretraining splits them (a seeded
    permutation, ``floor(holdout * n)`` held out, none below 20 images)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(math.floor(holdout * n)) if n >= 20 else 0
    return np.sort(order[:n_val]), np.sort(order[n_val:])


def evaluation_images(config: dict, data: str, image_size: int, task, images: int,
                      emit=None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(training images, evaluation images, where they come from in words)`` for the checks."""
    from sslstudio.data import decode_folder

    emit = emit or (lambda event: None)
    emit(LogEvent(f"reading images in {data}"))
    decoded = decode_folder(data, image_size, min_source_size=task.min_image_size,
                            small_policy=task.small_image_policy, workers=2)
    arrays = np.asarray(decoded.arrays)
    same_folder = Path(data).resolve() == Path(str(config.get("data", ""))).resolve()
    same = same_folder and len(arrays) == int(config.get("images") or -1)
    if same and config.get("held_out_images"):
        val, train = holdout_split(len(arrays), float(config.get("holdout", 0.0)), int(config.get("seed", 0)))
        chosen = val[:images]
        return arrays[train], arrays[chosen], (f"the run's held-out images ({len(chosen)} of {len(val)}, the split "
                                               f"reproduced from its seed {config.get('seed', 0)})")
    if same:
        why = "the run held no images out, so these are training images"
    elif same_folder:
        why = (f"the folder has {len(arrays)} usable images now against {config.get('images')} then, so the run's "
               "split cannot be reproduced")
    else:
        why = "not the run's own folder"
    first = arrays[:images]
    return first, first, f"the first {len(first)} images of {data} sorted by path ({why})"


# -- the table ---------------------------------------------------------------------------------
def shortcut_markdown(rows: list[dict], title: str, details: str) -> str:
    """``shortcuts.md``: a title, where the numbers come from, the table and one sentence per row."""
    lines = [f"# {title}", "", details, ""]
    if rows and rows[0]["kind"] == "none":
        return "\n".join(lines + [f"**No defences declared** for the {rows[0]['task']} task: nothing to switch off, "
                                  "so there is no shortcut check for it.", ""])
    lines += ["| check | accuracy with (cue removed) | accuracy without (cue available) | gain without | "
              "95% interval of the gain | n | trained on |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['check']} | {pct(r['accuracy_with'])} | {pct(r['accuracy_without'])} | "
                     f"{_points(r['gain'])} pts | {_points(r['gain_low'])} to {_points(r['gain_high'])} | {r['n']} | "
                     f"{r['trained']} |")
    lines.append("")
    lines += [f"- **{r['check']}** ({r['description']}{' Off: ' + _off_text(r['off']) + '.' if r['off'] else ''}) "
              f"{r['meaning']}" for r in rows]
    return "\n".join(lines + [""])


def _off_text(off: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in off.items())


def write_shortcut_table(out_dir: Path, run: str, data: str, image_size: int, device, seed: int, images: int = 500,
                         emit=None, control=None) -> list[dict]:
    """Shortcut checks of a pretraining run: write ``shortcuts.md`` in ``out_dir`` and return the rows.

    Each row (plain numbers): ``check``, ``kind`` (``defence``, ``border check`` or ``none``),
    ``accuracy_with`` (the defence on / the cue removed), ``accuracy_without``, ``gain`` (without
    minus with), ``gain_low`` / ``gain_high`` (its 95% paired-bootstrap interval, seeded with
    ``seed``), ``n`` (images), ``images`` (where they come from), ``trained`` (which column the model
    was trained on), ``note`` and ``meaning`` (one sentence). The samples use the run's seed, so the
    "as trained" column of the run's held-out images is the run's own validation accuracy.
    """
    from sslstudio.engine.device import resolve_device
    from sslstudio.explore.activations import load_pretext_model
    from sslstudio.runs import RunDir
    from sslstudio.tasks import create_task

    emit = emit or (lambda event: None)
    config = RunDir(run).read_config()
    size = int(image_size or config.get("image_size") or 64)
    task = create_task(config["task"], config.get("task_options") or {}, size)
    if has_checks(task):
        device = device if isinstance(device, torch.device) else resolve_device(device or "auto")
        _, model = load_pretext_model(run, device)
        data = data or config.get("data")  # none given: the run's own folder
        train, evaluation, source = evaluation_images(config, str(data), size, task, int(images), emit)
        emit(LogEvent(f"shortcut checks of {task.name} on {source}"))
        rows = measure_checks(task, model, train, evaluation, int(config.get("seed", 0)),
                              int(config.get("batch_size") or 64), device, source, seed, emit, control)
    else:
        rows = [no_defence_row(task, "none (no defences declared)")]
    details = (f"Run {Path(run).resolve()} ({task.name}, {config.get('arch')}); {size} px; "
               f"images: {rows[0]['images']}. "
               f"Both columns are made by the task's own make_batch with the run's seed {config.get('seed', 0)}, so "
               "only the defence differs; the gain is accuracy without minus with; its interval is a paired "
               f"bootstrap over the images ({BOOTSTRAP} resamples, seed {seed}). A large gain without a defence is "
               "a shortcut the defence is closing.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "shortcuts.md").write_text(shortcut_markdown(rows, f"Shortcut checks: {Path(run).resolve().name}",
                                                            details), encoding="utf-8")
    return rows
