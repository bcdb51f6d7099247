"""Weighted k-nearest-neighbour classification on frozen features (the DINO / InstDisc protocol).

Features are L2-normalised and compared by cosine similarity; each of the ``k`` nearest training
images votes for its class with weight ``exp(similarity / T)``, and the class with the highest
summed weight wins (ties go to the lower class index). Defaults ``k = 20, T = 0.07`` follow DINO's
``eval_knn.py``; ``k = 200, T = 0.1`` is the InstDisc / lightly setting.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

KNN_K = 20
KNN_T = 0.07


def knn_predict(train_f, train_y, test_f, k: int = KNN_K, t: float = KNN_T, num_classes: int | None = None,
                chunk: int = 1024) -> np.ndarray:
    """Predicted class of every test row (numpy int64 ``[M]``).

    Args:
        train_f: Training features ``[N, D]`` (numpy or torch).
        train_y: Training labels ``[N]``.
        test_f: Test features ``[M, D]``.
        k: Neighbours that vote (clipped to ``N``).
        t: Temperature of the vote weights ``exp(sim / t)``.
        num_classes: Number of classes (default ``max(train_y) + 1``).
    """
    if k < 1 or t <= 0:
        raise ValueError(f"kNN needs k >= 1 and T > 0; got k={k}, T={t}.")
    tr = F.normalize(torch.as_tensor(np.asarray(train_f), dtype=torch.float32), dim=1)
    te = F.normalize(torch.as_tensor(np.asarray(test_f), dtype=torch.float32), dim=1)
    y = torch.as_tensor(np.asarray(train_y), dtype=torch.int64)
    c = int(num_classes if num_classes is not None else int(y.max()) + 1)
    k = min(int(k), len(y))
    preds = []
    for start in range(0, len(te), chunk):
        sim = te[start:start + chunk] @ tr.T
        top, idx = sim.topk(k, dim=1)
        weights = (top / t).exp()
        votes = torch.zeros(len(top), c, dtype=torch.float32)
        votes.scatter_add_(1, y[idx], weights)
        preds.append(votes.argmax(1))
    return torch.cat(preds).numpy() if preds else np.zeros(0, np.int64)


def knn_accuracy(train_f, train_y, test_f, test_y, k: int = KNN_K, t: float = KNN_T,
                 num_classes: int | None = None) -> float:
    """Top-1 accuracy of :func:`knn_predict` on ``(test_f, test_y)``."""
    pred = knn_predict(train_f, train_y, test_f, k, t, num_classes)
    return float((pred == np.asarray(test_y)).mean()) if len(pred) else float("nan")


__all__ = ["KNN_K", "KNN_T", "knn_accuracy", "knn_predict"]
