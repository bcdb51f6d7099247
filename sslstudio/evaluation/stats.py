"""Statistics of a comparison: label draws, repeats, 95% intervals and paired verdicts.

- A **label draw** takes ``b`` training images of every class. Draw ``r`` of a comparison is a
  seeded permutation of each class (from ``(seed, r)``), of which a budget takes the first ``b``: the
  draws of one repeat are nested across budgets (the 5 images of a class include its 1), which keeps
  a label-efficiency curve from zig-zagging on draw noise alone.
- **Across repeats** (``N >= 2``): mean, sample standard deviation and the t-interval
  ``mean +- t(0.975, N-1) * std / sqrt(N)``.
- **One repeat**: a percentile bootstrap over the test images (which images are tested is the only
  remaining source of noise that can be estimated), :data:`BOOTSTRAP` resamples, seeded.
- **Paired difference** of an initialisation to random init: the same draws, the same classifier
  seeds and the same test images; per repeat ``delta_r = acc_r - acc_random_r`` with the t-interval of
  the deltas (``N >= 2``), or a paired bootstrap over test images (``N = 1``). The verdict is
  ``ahead`` when the whole interval is above zero, ``behind`` when it is below, else ``within noise``.
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP = 2000
VERDICTS = ("ahead", "behind", "within noise")


def label_draw(y: np.ndarray, budget, repeat: int, seed: int = 0) -> np.ndarray:
    """Indices of a seeded draw of ``budget`` images per class (``"all"``/``None``: every image).

    ``budget`` may be an int (images per class, capped at the class's size) or a string ``"p%"``
    (a share of each class, at least one image). Nested across budgets for one ``(seed, repeat)``.
    """
    y = np.asarray(y)
    if budget in (None, "all"):
        return np.arange(len(y))
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        perm = np.random.default_rng([int(seed), int(repeat), int(c), 0xD4A3]).permutation(idx)
        n = _budget_count(budget, len(idx))
        out.extend(perm[:n])
    return np.sort(np.asarray(out, dtype=np.int64))


def _budget_count(budget, n: int) -> int:
    if isinstance(budget, str) and budget.endswith("%"):
        return max(1, min(n, round(float(budget[:-1]) / 100.0 * n)))
    return max(1, min(n, int(budget)))


def draw_leaves_choice(y: np.ndarray, budget) -> bool:
    """Whether two draws of ``budget`` can differ (some class has more images than the budget)."""
    if budget in (None, "all"):
        return False
    y = np.asarray(y)
    return any(_budget_count(budget, int((y == c).sum())) < int((y == c).sum()) for c in np.unique(y))


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def mean_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float | None, float, float]:
    """``(mean, std, low, high)`` across repeats; needs at least two values (std with ddof 1)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        raise ValueError("an interval across repeats needs at least two repeats")
    mean, std = float(v.mean()), float(v.std(ddof=1))
    half = t_quantile(len(v) - 1, confidence) * std / math.sqrt(len(v))
    return mean, std, mean - half, mean + half


def bootstrap_interval(correct, confidence: float = CONFIDENCE, n_boot: int = BOOTSTRAP,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-test-image values (0/1 correct, or differences)."""
    c = np.asarray(correct, dtype=np.float64)
    if len(c) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng([int(seed), 0xB007])
    means = np.empty(n_boot)
    for start in range(0, n_boot, 250):  # chunks keep memory small for large test sets
        stop = min(n_boot, start + 250)
        idx = rng.integers(0, len(c), size=(stop - start, len(c)))
        means[start:stop] = c[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarise(accuracies, correct_first=None, seed: int = 0) -> dict:
    """Row statistics: ``test_accuracy`` (mean), ``std``, ``ci_low``, ``ci_high``, ``interval``."""
    acc = [float(a) for a in accuracies]
    if len(acc) >= 2:  # an accuracy lies in [0, 1], and so does its interval
        mean, std, lo, hi = mean_interval(acc)
        return {"test_accuracy": mean, "std": std, "ci_low": max(0.0, lo), "ci_high": min(1.0, hi),
                "interval": "repeats"}
    lo, hi = bootstrap_interval(correct_first, seed=seed) if correct_first is not None else (None, None)
    return {"test_accuracy": acc[0], "std": None, "ci_low": lo, "ci_high": hi, "interval": "bootstrap"}


def verdict(low: float, high: float) -> str:
    """``ahead`` if the interval lies above 0, ``behind`` if below, else ``within noise``."""
    if low > 0:
        return "ahead"
    if high < 0:
        return "behind"
    return "within noise"


def paired_difference(acc_a, acc_b, correct_a=None, correct_b=None, seed: int = 0) -> dict:
    """Paired difference ``a - b`` over the same repeats (``N >= 2``) or the same test images (``N = 1``)."""
    a, b = np.asarray(acc_a, dtype=np.float64), np.asarray(acc_b, dtype=np.float64)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("a paired difference needs the same number of repeats on both sides")
    if len(a) >= 2:
        delta, _std, lo, hi = mean_interval(a - b)
        lo, hi = max(-1.0, lo), min(1.0, hi)  # a difference of accuracies lies in [-1, 1]
        kind = "repeats"
    else:
        diff = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
        delta = float(a[0] - b[0])
        lo, hi = bootstrap_interval(diff, seed=seed)
        kind = "bootstrap"
    return {"delta": float(delta), "ci_low": float(lo), "ci_high": float(hi), "interval": kind,
            "verdict": verdict(lo, hi)}


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


__all__ = ["BOOTSTRAP", "CONFIDENCE", "VERDICTS", "bootstrap_interval", "confusion", "draw_leaves_choice",
           "label_draw", "mean_interval", "paired_difference", "summarise", "t_quantile", "verdict"]
