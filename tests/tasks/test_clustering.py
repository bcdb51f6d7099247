import math

import numpy as np
import pytest
import torch

from sslstudio.tasks.clustering import kmeans, l2_normalize, nmi, pca_whiten, uniform_cluster_order


def blobs(n_per=60, k=5, dim=16, spread=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 10
    labels = torch.arange(k).repeat_interleave(n_per)
    x = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return x, labels


def test_kmeans_finds_planted_clusters():
    x, truth = blobs()
    for seed in range(5):  # k-means++ seeding: no bad local minimum on well-separated blobs
        assert nmi(kmeans(x, 5, iters=20, seed=seed).labels, truth) > 0.99
    many, many_truth = blobs(n_per=20, k=30, seed=1)
    assert nmi(kmeans(many, 30, seed=0).labels, many_truth) > 0.99
    result = kmeans(x, 5, iters=20, seed=3)
    assert torch.bincount(result.labels, minlength=5).tolist() == [60] * 5
    assert result.labels.min() >= 0 and result.labels.max() < 5
    # the centroids are the means of their points
    for c in range(5):
        assert torch.allclose(result.centroids[c], x[result.labels == c].mean(0), atol=1e-4)


def test_kmeans_is_deterministic_for_a_seed():
    x, _ = blobs(n_per=30, k=8, spread=6.0)  # overlapping blobs: the result depends on the initialisation
    a, b = kmeans(x, 8, seed=11), kmeans(x, 8, seed=11)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)


def test_empty_cluster_is_refilled_by_splitting():
    x, truth = blobs()
    # one centroid far from every point: after the first assignment its cluster is empty
    init = torch.cat([x[[0, 60, 120, 180]], torch.full((1, x.shape[1]), 1e4)])
    result = kmeans(x, 5, iters=20, seed=0, init=init)
    assert result.empty_fixed >= 1
    with pytest.raises(ValueError, match="init"):
        kmeans(x, 5, init=init[:4])
    counts = torch.bincount(result.labels, minlength=5)
    assert (counts > 0).all()
    assert nmi(result.labels, truth) > 0.99  # the split centroid migrated to the orphaned blob
    assert result.centroids.abs().max() < 1e3


def test_empty_clusters_are_refilled_even_for_identical_points():
    x = torch.ones(10, 4)
    result = kmeans(x, 3, iters=5, seed=0)
    counts = torch.bincount(result.labels, minlength=3)
    assert (counts > 0).all() and counts.sum() == 10
    assert result.empty_fixed >= 2


def test_kmeans_rejects_more_clusters_than_points():
    with pytest.raises(ValueError, match="k-means"):
        kmeans(torch.randn(3, 2), 4)


def test_nmi_values():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 10, (5000,), generator=g)
    b = torch.randint(0, 10, (5000,), generator=g)
    assert nmi(a, a) == pytest.approx(1.0)
    assert nmi(a, (a * 7 + 3) % 10) == pytest.approx(1.0)  # a renaming of the labels
    assert nmi(a, b) < 0.01  # independent labelings
    assert nmi(a, b) == pytest.approx(nmi(b, a))
    # b refines a: I = H(a) = ln 2, H(b) = 1.5 ln 2 -> arithmetic NMI = 1 / 1.25 = 0.8
    assert nmi(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 2])) == pytest.approx(0.8)
    assert nmi(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 2]), "geometric") == pytest.approx(
        1 / math.sqrt(1.5))
    assert nmi(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    assert nmi(torch.zeros(5), torch.zeros(5)) == 1.0
    assert nmi(torch.zeros(4), torch.tensor([0, 1, 0, 1])) == 0.0


def test_pca_whitening_gives_identity_covariance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 32, generator=g) @ torch.randn(32, 32, generator=g) * 5 + 3
    y = pca_whiten(x, 8)
    assert y.shape == (2000, 8)
    assert y.mean(0).abs().max() < 1e-4
    assert torch.allclose(torch.cov(y.T), torch.eye(8), atol=1e-3)
    # the components are the leading ones: their variance in x is larger than in any other direction
    assert pca_whiten(x, 64).shape == (2000, 32)  # capped at the data dimension
    assert pca_whiten(x[:5], 64).shape == (5, 4)  # and at N - 1
    assert torch.allclose(l2_normalize(y).norm(dim=1), torch.ones(2000), atol=1e-5)


def test_pca_keeps_the_high_variance_direction():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 3, generator=g) * torch.tensor([10.0, 1.0, 0.1])
    y = pca_whiten(x, 1)
    corr = torch.corrcoef(torch.stack([y[:, 0], x[:, 0]]))[0, 1]
    assert abs(float(corr)) > 0.99


def test_uniform_cluster_order_balances_clusters():
    labels = torch.tensor([0] * 90 + [1] * 6 + [2] * 4)
    order = uniform_cluster_order(labels, 100, seed=0)
    assert order.shape == (100,)
    counts = torch.bincount(labels[order], minlength=3)
    assert counts.min() >= 30 and counts.max() <= 35
    # the big cluster is drawn without replacement: no repeats among its 34 draws
    big = order[labels[order] == 0]
    assert len(torch.unique(big)) == len(big)
    # only members of a cluster are drawn for it, and it is deterministic for a seed
    assert torch.equal(order, uniform_cluster_order(labels, 100, seed=0))
    assert not torch.equal(order, uniform_cluster_order(labels, 100, seed=1))
    assert set(np.unique(order.numpy())) <= set(range(100))
