"""Did a pretraining run learn? The rules that turn a run's figures into its status, in one place.

A run ends in one of these states (``summary.json``'s ``status``, the CLI's last line, the window's
status line and run list):

- ``finished``: it ran its epochs and its pretext metric ended clearly away from chance;
- ``finished — not learnt``: it ran its epochs, but its held-out pretext accuracy (its training
  accuracy when nothing is held out) ended within :func:`margin` of the chance level: within
  :data:`CHANCE_MARGIN` (10 points), or, for a task of many classes, below :data:`CHANCE_MULTIPLE` times
  chance (jigsaw's 100 permutations: 9% held-out is nine times chance and has been learnt);
- ``diverged``: a step's loss became NaN or infinite, or the mean loss of the last
  :data:`START_STEPS` steps rose above :data:`DIVERGE_FACTOR` times the mean loss of the run's first
  :data:`START_STEPS` steps; the run stops by itself before that step's update and keeps its last
  checkpoint (the end of the last whole epoch);
- ``cancelled``: the user stopped it.

Each state but ``finished`` comes with one sentence of what to try. The chance level of a
classification task is one over the number of classes of its classifier (the task may say
otherwise: :meth:`chance_level`); reconstruction tasks (PSNR) have none, so only divergence is
judged for them.
"""

from __future__ import annotations

import math

from sslstudio.engine.durations import clock
from sslstudio.figures import metric_text, pct as _pct

FINISHED = "finished"
NOT_LEARNT = "finished \u2014 not learnt"
DIVERGED = "diverged"
CANCELLED = "cancelled"

#: A pretext accuracy less than this far (absolute) above chance has not been learnt...
CHANCE_MARGIN = 0.10
#: ...unless it is at least this multiple of chance (tasks of many classes: 1% chance, 5% learnt).
CHANCE_MULTIPLE = 5.0
#: A run whose recent mean step loss exceeds this multiple of its starting loss has diverged.
DIVERGE_FACTOR = 3.0
#: Steps averaged for the starting loss and for the recent loss the divergence rule compares.
START_STEPS = 10


def chance_level(task, model) -> float | None:
    """The accuracy of guessing: the task's own figure when it states one, else one over the
    number of outputs of the model's ``classifier``; ``None`` for a reconstruction task."""
    if getattr(task, "metric_name", "accuracy") != "accuracy":
        return None
    own = getattr(task, "chance_level", None)
    if callable(own):
        value = own()
        if value is not None:
            return float(value)
    classifier = getattr(model, "classifier", None)
    out = getattr(classifier, "out_features", None)
    return 1.0 / int(out) if out else None


def chance_from_state(state: dict) -> tuple[float | None, int | None]:
    """``(chance, classes)`` read from a saved model's state: its (last) ``classifier.weight``."""
    heads = [v for k, v in state.items() if k.endswith("classifier.weight") and getattr(v, "ndim", 0) == 2]
    if not heads:
        return None, None
    classes = int(heads[-1].shape[0])
    return 1.0 / classes, classes


def margin(chance: float) -> float:
    """How far above ``chance`` an accuracy must end to count as learnt: :data:`CHANCE_MARGIN`, or
    (CHANCE_MULTIPLE - 1) x chance when that is smaller (tasks of more than 40 classes)."""
    return min(CHANCE_MARGIN, (CHANCE_MULTIPLE - 1.0) * chance)


def not_learnt(metric: float | None, chance: float | None) -> bool:
    """Whether an accuracy ``metric`` ended within :func:`margin` of ``chance``."""
    return metric is not None and chance is not None and metric - chance < margin(chance)


def diverged(loss: float, start_loss: float | None) -> bool:
    """Whether ``loss`` (a step's or an epoch's) shows divergence against the starting loss."""
    if not math.isfinite(loss):
        return True
    return start_loss is not None and start_loss > 0 and loss > DIVERGE_FACTOR * start_loss


def status_of(cancelled: bool, diverged_at: int | None, metric: float | None, chance: float | None) -> str:
    """The run's status from how it ended (``diverged_at``: the epoch, from 1, that diverged)."""
    if diverged_at is not None:
        return DIVERGED
    if cancelled:
        return CANCELLED
    return NOT_LEARNT if not_learnt(metric, chance) else FINISHED


def to_try(status: str, *, lr: float | None = None, epochs: int | None = None, paper_epochs: int | None = None,
           cli: bool = True, bf16: bool = False) -> str:
    """What to try after a run that did not learn or diverged, as a sentence ('' otherwise).

    ``cli`` names command-line flags; the window passes ``False`` and gets plain words for its fields.
    ``bf16``: the run diverged under bf16 autocast, whose rounding can also be the cause."""
    lr_name = "--lr" if cli else "the learning rate"
    if status == DIVERGED:
        lower = f" (e.g. {lr / 10:g})" if lr else ""
        fp32 = (" or use --precision fp32" if cli else " or choose fp32 precision") if bf16 else ""
        return f"Lower {lr_name}{lower}{fp32} and start again."
    if status == NOT_LEARNT:
        paper = f"the paper trains {paper_epochs}" if paper_epochs and epochs and epochs < paper_epochs else ""
        inside = "; ".join(part for part in ("--epochs" if cli else "", paper) if part)
        note = f" ({inside})" if inside else ""
        lower = "a lower --lr" if cli else "a lower learning rate"
        return f"Try more epochs{note} or {lower}."
    return ""


def what_diverged(diverged_at: dict | None) -> str:
    """``the loss diverged``, or ``a gradient was not finite`` when the loss was finite but a gradient was not."""
    if diverged_at and diverged_at.get("cause") == "gradient":
        return "a gradient was not finite"
    return "the loss diverged"


def advice(status: str, *, metric: float | None = None, chance: float | None = None, lr: float | None = None,
           epochs: int | None = None, paper_epochs: int | None = None, cli: bool = True,
           where: str = "held-out", diverged_at: dict | None = None, bf16: bool = False) -> str:
    """Why the run did not learn and what to try, in one sentence ('' for a run that learnt or was stopped).

    ``where``: whose accuracy ``metric`` is (``held-out``, or ``training`` when nothing was held out);
    ``diverged_at``: the run's ``diverged`` record; ``bf16`` as in :func:`to_try`."""
    try_next = to_try(status, lr=lr, epochs=epochs, paper_epochs=paper_epochs, cli=cli, bf16=bf16)
    if status == DIVERGED:
        return f"{what_diverged(diverged_at)}. {try_next}"
    if status == NOT_LEARNT:
        return (f"the pretext task was not learnt ({where} accuracy {_pct(metric)} against a chance level of "
                f"{_pct(chance)}). {try_next}")
    return ""


def outcome(summary: dict, *, cli: bool = True) -> str:
    """How a run ended, in one line a person reads: its status, epochs, time, final figure against
    chance, and what to try when it did not learn (the window's status line; ``cli`` as in :func:`advice`)."""
    status = summary.get("status", FINISHED)
    metric = summary.get("metric") or "accuracy"
    value = summary.get(f"final_val_{metric}")
    where = "held-out"
    if value is None:
        value, where = summary.get(f"final_train_{metric}"), "training"
    head = {CANCELLED: "Stopped"}.get(status, status[:1].upper() + status[1:])
    text = f"{head}: {summary.get('epochs_completed', 0)} of {summary.get('epochs', '?')} epoch(s) in " \
           f"{clock(summary.get('time_s'))}"
    if value is not None:
        figure = metric_text(metric, value)
        text += f", {where} {metric} {figure}"
        if summary.get("chance") is not None:
            text += f" (chance {_pct(summary['chance'])})"
    diverged_at = summary.get("diverged")
    if status == DIVERGED and diverged_at:
        text += f"; {what_diverged(diverged_at)} at epoch {diverged_at['epoch']}, step {diverged_at['step']}"
    try_next = to_try(status, lr=summary.get("lr"), epochs=summary.get("epochs"),
                      paper_epochs=summary.get("paper_epochs"), cli=cli, bf16=summary.get("precision") == "bf16")
    return f"{text}. {try_next}".strip()
