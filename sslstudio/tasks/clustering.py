"""Clustering utilities in torch: PCA with whitening, k-means and normalised mutual information.

These are the pieces of DeepCluster's clustering step (Caron et al., ECCV 2018, section 3.3 and
the paper's implementation details): features are reduced to 256 dimensions with PCA, whitened,
L2-normalised and clustered with k-means; an empty cluster is refilled by splitting a random
non-empty one (its centroid, slightly perturbed, becomes the new centroid and the two share its
points); the stability of the assignments from one epoch to the next is measured with the
normalised mutual information (NMI).

Everything runs on the device of the input tensor and draws its randomness from an explicit
``torch.Generator`` seed, so that the same features and seed always give the same clusters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["KMeansResult", "pca_whiten", "l2_normalize", "kmeans", "kmeans_plus_plus", "nmi",
           "uniform_cluster_order"]


def pca_whiten(x: torch.Tensor, dim: int, eps: float = 1e-6) -> torch.Tensor:
    """Project ``x`` on its ``dim`` leading principal components and whiten them.

    Args:
        x: Data ``[N, D]`` (any float dtype; computed in float64 for accuracy).
        dim: Number of components kept (capped at ``D`` and ``N - 1``).
        eps: Eigenvalues below ``eps`` times the largest are clamped to it, so that directions
            without variance are not blown up into noise.

    Returns:
        ``[N, dim']`` float32 data with zero mean and (up to the clamped directions) identity
        covariance.
    """
    if x.dim() != 2:
        raise ValueError(f"expected [N, D] data, got shape {tuple(x.shape)}")
    n, d = x.shape
    dim = max(1, min(int(dim), d, max(1, n - 1)))
    chunk = max(1, 2**24 // max(d, 1))  # rows per float64 chunk (no full float64 copy of x)
    mean = x.sum(0, dtype=torch.float64) / n
    cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for start in range(0, n, chunk):
        xc = x[start:start + chunk].double() - mean
        cov += xc.T @ xc
    cov /= max(1, n - 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0)[:dim], evecs.flip(1)[:, :dim]
    # Fix the sign of each eigenvector (largest absolute entry positive): eigh's signs are arbitrary.
    idx = evecs.abs().argmax(0)
    signs = torch.sign(evecs[idx, torch.arange(dim, device=evecs.device)])
    evecs = evecs * torch.where(signs == 0, torch.ones_like(signs), signs)
    floor = float(evals.max().clamp_min(0)) * eps + 1e-12
    proj = evecs * evals.clamp_min(floor).rsqrt()
    return torch.cat([((x[start:start + chunk].double() - mean) @ proj).float() for start in range(0, n, chunk)])


def l2_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale every row of ``x`` to unit Euclidean length."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


@dataclass
class KMeansResult:
    """What :func:`kmeans` found.

    Attributes:
        labels: Cluster of each point, ``[N]`` int64 in ``[0, k)``.
        centroids: ``[k, D]`` cluster centres.
        empty_fixed: How many times an empty cluster was refilled by splitting another one.
        inertia: Sum of squared distances of the points to their centroids.
    """

    labels: torch.Tensor
    centroids: torch.Tensor
    empty_fixed: int
    inertia: float


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each point and its squared distance (in chunks of about 2**26 distances)."""
    c2 = (centroids * centroids).sum(1)
    chunk = max(256, 2**26 // max(1, centroids.shape[0]))
    labels, dists = [], []
    for start in range(0, x.shape[0], chunk):
        xs = x[start:start + chunk]
        d = (xs * xs).sum(1, keepdim=True) - 2.0 * xs @ centroids.T + c2
        dist, lab = d.min(1)
        labels.append(lab)
        dists.append(dist.clamp_min(0))
    return torch.cat(labels), torch.cat(dists)


def _means(x: torch.Tensor, labels: torch.Tensor, k: int, old: torch.Tensor) -> torch.Tensor:
    """Mean of the points of each cluster (an empty cluster keeps its old centroid)."""
    sums = torch.zeros_like(old).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k).to(x.dtype)
    out = sums / counts.clamp_min(1).unsqueeze(1)
    return torch.where(counts.unsqueeze(1) > 0, out, old)


def _fix_empty(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, k: int,
               generator: torch.Generator, perturbation: float) -> int:
    """Refill every empty cluster by splitting a random non-empty one (in place); return how many.

    As in DeepCluster (section 3.3): a non-empty cluster is drawn (with probability proportional
    to its size minus one, so singletons are never split), its centroid with a small random
    perturbation becomes the empty cluster's centroid (the donor moves the opposite way), and the
    donor's points are split between the two by which of the two centroids is nearer. If all of
    them land on one side (identical points), half of them are moved.
    """
    fixed = 0
    counts = torch.bincount(labels, minlength=k)
    empty = (counts == 0).nonzero().flatten().tolist()
    for ci in empty:
        weights = (counts - 1).clamp_min(0).double().cpu()
        if weights.sum() <= 0:
            break  # fewer points than clusters: nothing to split
        cj = int(torch.multinomial(weights, 1, generator=generator))
        noise = torch.randn(centroids.shape[1], generator=generator, dtype=torch.float64)
        noise = (noise / noise.norm().clamp_min(1e-12)).to(centroids.device, centroids.dtype)
        scale = perturbation * float(centroids[cj].norm().clamp_min(1e-6))
        members = (labels == cj).nonzero().flatten()
        side = (x[members] - centroids[cj]) @ noise > 0  # nearer to the +noise copy
        centroids[ci] = centroids[cj] + scale * noise
        centroids[cj] = centroids[cj] - scale * noise
        moved = members[side]
        if len(moved) == 0 or len(moved) == len(members):
            moved = members[: len(members) // 2]
        labels[moved] = ci
        counts[ci] = len(moved)
        counts[cj] -= len(moved)
        centroids[ci] = x[moved].mean(0)
        centroids[cj] = x[labels == cj].mean(0)
        fixed += 1
    return fixed


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur and Vassilvitskii, 2007; scikit-learn's variant).

    Each new centre is chosen among ``2 + log(k)`` candidate points drawn with probability
    proportional to their squared distance to the nearest centre so far: the candidate that
    lowers the total squared distance most. The work is a few Lloyd iterations' worth of
    distances, done on the device of ``x``; only the uniform numbers come from ``generator``.

    Returns:
        Indices ``[k]`` of the initial centres.
    """
    n = x.shape[0]
    trials = 2 + int(math.log(max(k, 1)))
    sq = (x * x).sum(1)

    def dist_to(idx: torch.Tensor) -> torch.Tensor:  # [N, len(idx)] squared distances, float64
        c = x[idx]
        return (sq.unsqueeze(1) - 2.0 * x @ c.T + (c * c).sum(1)).clamp_min(0).double()

    first = int(torch.randint(n, (1,), generator=generator))
    picks = [first]
    d2 = dist_to(torch.tensor([first], device=x.device))[:, 0]
    for _ in range(1, k):
        cdf = d2.cumsum(0)
        total = float(cdf[-1])
        u = torch.rand(trials, generator=generator, dtype=torch.float64)
        if total <= 0.0:  # every point sits on a centre already: take any
            picks.append(int(u[0] * n) % n)
            continue
        cand = torch.searchsorted(cdf, (u * total).to(cdf.device)).clamp_max(n - 1)
        new = torch.minimum(d2.unsqueeze(1), dist_to(cand))
        best = int(new.sum(0).argmin())
        picks.append(int(cand[best]))
        d2 = new[:, best]
    return torch.tensor(picks, dtype=torch.long, device=x.device)


def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, init: torch.Tensor | str = "k-means++",
           perturbation: float = 1e-4) -> KMeansResult:
    """Lloyd's k-means on the device of ``x``, with DeepCluster's empty-cluster handling.

    DeepCluster's implementation (faiss) starts from ``k`` random points; here the default start
    is k-means++, which costs about one extra iteration and avoids the bad local minima a random
    start falls into when two initial points come from the same true cluster.

    Args:
        x: Points ``[N, D]``.
        k: Number of clusters (at most ``N``).
        iters: Assignment / update rounds (DeepCluster's implementation uses 20).
        seed: Seed of the initial centroids and of the splits.
        init: ``"k-means++"``, ``"random"`` (``k`` distinct random points, as faiss) or initial
            centroids ``[k, D]`` (tests use them to force an empty cluster).
        perturbation: Relative size of the perturbation that separates a split centroid from
            its donor.

    Returns:
        A :class:`KMeansResult`; its labels come from the last assignment after empty clusters
        were refilled, so no cluster is empty when ``N >= k``.
    """
    n = x.shape[0]
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points; got k={k} for {n} points")
    x = x.float()
    generator = torch.Generator().manual_seed(int(seed))
    if isinstance(init, torch.Tensor):
        centroids = init.to(x.device, x.dtype).clone()
        if centroids.shape != (k, x.shape[1]):
            raise ValueError(f"init must have shape {(k, x.shape[1])}; got {tuple(centroids.shape)}")
    elif init == "k-means++":
        centroids = x[kmeans_plus_plus(x, k, generator)].clone()
    elif init == "random":
        centroids = x[torch.randperm(n, generator=generator)[:k].to(x.device)].clone()
    else:
        raise ValueError(f"unknown k-means init {init!r}; use 'k-means++', 'random' or a tensor")
    fixed = 0
    labels = torch.zeros(n, dtype=torch.long, device=x.device)
    for _ in range(max(1, int(iters))):
        labels, _ = _assign(x, centroids)
        fixed += _fix_empty(x, labels, centroids, k, generator, perturbation)
        centroids = _means(x, labels, k, centroids)
    labels, _ = _assign(x, centroids)
    fixed += _fix_empty(x, labels, centroids, k, generator, perturbation)
    inertia = float(((x - centroids[labels]) ** 2).sum())
    return KMeansResult(labels=labels, centroids=centroids, empty_fixed=fixed, inertia=inertia)


def nmi(a: torch.Tensor, b: torch.Tensor, average: str = "arithmetic") -> float:
    """Normalised mutual information between two labelings of the same points.

    ``NMI(a, b) = I(a; b) / mean(H(a), H(b))`` (``average="arithmetic"``, scikit-learn's default;
    ``"geometric"`` divides by ``sqrt(H(a) H(b))``, the normalisation DeepCluster reported with).
    1 for labelings equal up to a renaming of the labels, about 0 for independent ones. Two
    labelings that each put every point in one cluster are identical: 1.

    Args:
        a: Labels ``[N]`` (non-negative integers).
        b: Labels ``[N]``.
        average: ``"arithmetic"`` or ``"geometric"``.

    Returns:
        The NMI in [0, 1].
    """
    a = torch.as_tensor(a).flatten().long().cpu()
    b = torch.as_tensor(b).flatten().long().cpu()
    if a.shape != b.shape:
        raise ValueError("the two labelings must have the same length")
    if a.numel() == 0:
        return 1.0
    _, a = torch.unique(a, return_inverse=True)
    _, b = torch.unique(b, return_inverse=True)
    n = a.numel()
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    if ka == 1 and kb == 1:
        return 1.0
    pa = torch.bincount(a, minlength=ka).double() / n
    pb = torch.bincount(b, minlength=kb).double() / n
    ha = float(-(pa * pa.log()).sum())
    hb = float(-(pb * pb.log()).sum())
    if ha == 0.0 or hb == 0.0:
        return 0.0
    # only the non-empty cells of the contingency table (k x k can be huge, most cells are empty)
    cells, counts = torch.unique(a * kb + b, return_counts=True)
    pij = counts.double() / n
    mi = float((pij * (pij / (pa[cells // kb] * pb[cells % kb])).log()).sum())
    if average == "arithmetic":
        denom = 0.5 * (ha + hb)
    elif average == "geometric":
        denom = (ha * hb) ** 0.5
    else:
        raise ValueError("average must be 'arithmetic' or 'geometric'")
    return float(min(1.0, max(0.0, mi / denom)))


def uniform_cluster_order(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` item indices drawn uniformly over the non-empty clusters, shuffled.

    As DeepCluster's sampler: every non-empty cluster gets ``n // clusters + 1`` draws from its
    members (without replacement when it has more members than draws, with replacement
    otherwise), the draws are shuffled and the first ``n`` kept, so a big cluster does not
    dominate an epoch and a small one is not forgotten.

    Args:
        labels: Cluster of each item ``[N]``.
        n: Length of the order (usually ``N``).
        seed: Seed of the draws.

    Returns:
        ``[n]`` int64 item indices (CPU).
    """
    labels = torch.as_tensor(labels).flatten().long().cpu()
    generator = torch.Generator().manual_seed(int(seed))
    counts = torch.bincount(labels)
    by_cluster = torch.argsort(labels, stable=True)  # members of cluster 0, then of cluster 1, ...
    ends = counts.cumsum(0).tolist()
    sizes = counts.tolist()
    per = n // max(1, int((counts > 0).sum())) + 1
    draws = []
    for end, size in zip(ends, sizes):
        if size == 0:
            continue
        members = by_cluster[end - size:end]
        if len(members) > per:
            pick = torch.randperm(len(members), generator=generator)[:per]
        else:
            pick = torch.randint(len(members), (per,), generator=generator)
        draws.append(members[pick])
    allo = torch.cat(draws)
    allo = allo[torch.randperm(len(allo), generator=generator)]
    return allo[:n]
