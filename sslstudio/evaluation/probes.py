"""Classifiers on frozen (cached) features: the linear probe, the MLP probe, and kNN.

Linear probe: multinomial logistic regression (scikit-learn, L-BFGS) on features standardised with
the training draw's mean and standard deviation (the validation rows' features count towards that
mean and deviation; their labels do not). Its inverse L2 strength ``C`` is chosen from
:data:`C_GRID` by accuracy on a stratified validation split carved out of the labelled *training*
draw (:func:`validation_split`; never the test images), then the probe is refitted on the whole
draw. With fewer than two images in some class there is nothing to validate on, and
:data:`DEFAULT_C` is used (the row says so).

When there are fewer training images than feature dimensions (4,096 pooled values and a few
hundred images, typically), the probe is fitted in the span of the training features: with an L2
penalty the optimal weights lie in that span (the representer theorem), so writing ``W = V A`` with
``V`` an orthonormal basis of the span gives exactly the same classifier, penalty and predictions
while L-BFGS works in ``n`` instead of ``d`` dimensions (:func:`row_space`).

MLP probe (``head="mlp"``): two hidden layers of :data:`MLP_HIDDEN` units with ReLU and a linear
output, the fc6-fc7-fc8 stack of the classic AlexNet-era transfer protocol, trained with Adam by
scikit-learn's ``MLPClassifier`` on the same standardised features.

kNN: see :mod:`sslstudio.evaluation.knn`; it reads the globally pooled, L2-normalised features.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from sslstudio.evaluation.knn import KNN_K, KNN_T, knn_predict

C_GRID = (0.001, 0.01, 0.1, 1.0)
DEFAULT_C = 0.1
VALIDATION_FRACTION = 0.2
MLP_HIDDEN = 512
MAX_ITER = 100  # L-BFGS iterations (scikit-learn's default); more moved test accuracy by < 0.5 points here
HEADS = ("linear", "mlp")


@dataclass
class ProbeResult:
    """Predictions on the test images and what was chosen on the way."""

    pred: np.ndarray
    chosen: dict = field(default_factory=dict)


def validation_split(y: np.ndarray, fraction: float = VALIDATION_FRACTION, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Stratified split of training indices into (fit, validation); ``None`` when some class has < 2 images.

    Each class gives ``max(1, round(fraction * n))`` images (but always keeps one to fit on).
    """
    y = np.asarray(y)
    rng = np.random.default_rng([int(seed), 0x5A11])
    fit, val = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < 2:
            return None
        idx = rng.permutation(idx)
        n_val = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        val.extend(idx[:n_val])
        fit.extend(idx[n_val:])
    return np.sort(np.array(fit)), np.sort(np.array(val))


def standardise(train_f: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Subtract the training mean, divide by the training standard deviation (floored at 1e-6)."""
    mean = train_f.mean(0, keepdims=True, dtype=np.float64).astype(np.float32)
    std = np.maximum(train_f.std(0, keepdims=True, dtype=np.float64), 1e-6).astype(np.float32)
    return [(a - mean) / std for a in (train_f, *others)]


def row_space(train_f: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Coordinates in an orthonormal basis of the span of the training rows (see the module doc).

    Returns ``[train_f @ V, other @ V, ...]``; inner products with the training rows, and hence the
    penalised logistic problem, are unchanged. Used only when ``n < d``.
    """
    n, d = train_f.shape
    if n >= d:
        return [train_f, *others]
    x = np.ascontiguousarray(train_f, dtype=np.float32)
    gram = (x @ x.T).astype(np.float64)  # float32 products of standardised features; eigh in float64
    lam, u = np.linalg.eigh(gram)
    keep = lam > max(float(lam[-1]), 1e-30) * 1e-6
    lam, u = lam[keep], u[:, keep]
    scale = (u / np.sqrt(lam)).astype(np.float32)  # n x r: x.T @ scale is an orthonormal basis of the span
    return [((np.asarray(a, dtype=np.float32) @ x.T) @ scale).astype(np.float32) for a in (train_f, *others)]


def _logistic(c: float, seed: int, warm: bool = False):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=MAX_ITER, tol=1e-4, random_state=seed, warm_start=warm)


def _fit(model, x, y):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def single_threaded_blas():
    """One BLAS thread for the probes: their matrices are small, and several BLAS threads on a busy
    2-core machine made a fit 10-50x slower (spinning threads), measured with OpenBLAS."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def linear_probe(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, seed: int = 0,
                 c_grid=C_GRID) -> ProbeResult:
    """Logistic regression with ``C`` chosen on a validation split of the training draw."""
    train_y = np.asarray(train_y)
    if len(np.unique(train_y)) < 2:
        return ProbeResult(np.full(len(test_f), int(train_y[0]) if len(train_y) else 0), {"C": None})
    split = validation_split(train_y, seed=seed)
    scores: dict[float, float] = {}
    # one standardisation (the draw's mean and std) and one basis of the draw's span serve the sweep
    # and the refit: the fit rows' span lies inside it, so each fit is still exact
    xt, xs = row_space(*standardise(train_f, test_f))
    if split is not None and len(c_grid) > 1:
        fit, val = split
        xf, xv = xt[fit], xt[val]
        model = _logistic(c_grid[0], seed, warm=True)
        for c in sorted(c_grid):  # strong to weak regularisation, each fit warm-started from the last
            model.set_params(C=c)
            _fit(model, xf, train_y[fit])
            scores[c] = float((model.predict(xv) == train_y[val]).mean())
        best = max(sorted(c_grid), key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
        source = "validation"
    else:
        best, source = DEFAULT_C, "default (too few images per class to validate)"
    model = _fit(_logistic(best, seed), xt, train_y)
    return ProbeResult(model.predict(xs), {"C": best, "C_source": source,
                                           "validation_accuracy": {str(k): v for k, v in scores.items()}})


def mlp_probe(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, seed: int = 0) -> ProbeResult:
    """Two hidden layers (fc6, fc7) and a linear output (fc8), Adam, fixed seed."""
    from sklearn.neural_network import MLPClassifier

    train_y = np.asarray(train_y)
    if len(np.unique(train_y)) < 2:
        return ProbeResult(np.full(len(test_f), int(train_y[0]) if len(train_y) else 0), {})
    xt, xs = standardise(train_f, test_f)
    model = MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN, MLP_HIDDEN), alpha=1e-3, batch_size=min(128, len(xt)),
                          learning_rate_init=1e-3, max_iter=100, random_state=seed)
    _fit(model, xt, train_y)
    return ProbeResult(model.predict(xs), {"hidden": [MLP_HIDDEN, MLP_HIDDEN], "iterations": int(model.n_iter_)})


def knn_probe(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, num_classes: int, k: int = KNN_K,
              t: float = KNN_T) -> ProbeResult:
    """Weighted kNN vote (cosine similarity, ``exp(sim / T)`` weights)."""
    return ProbeResult(knn_predict(train_f, train_y, test_f, k, t, num_classes), {"k": int(k), "t": float(t)})


__all__ = ["C_GRID", "DEFAULT_C", "HEADS", "MLP_HIDDEN", "ProbeResult", "knn_probe", "linear_probe", "mlp_probe",
           "row_space", "standardise", "validation_split"]
