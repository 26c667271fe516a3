"""kNN real-vs-fake accuracy: chance on identical sets, perfect on disjoint ones, seeded."""

import pytest
import torch

from sarnet.metrics.knn import knn_accuracy


def blobs(n, shift, seed):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 0.5 + shift


def test_same_distribution_is_near_chance():
    acc = knn_accuracy(blobs(1000, 0.0, 0), blobs(1000, 0.0, 1))
    assert 0.4 < acc < 0.6


def test_two_resamples_of_one_pool_are_near_chance():
    # the reference's setting for real images: draws with replacement from a small pool (892 test fives)
    pool = blobs(300, 0.0, 0)
    g = torch.Generator().manual_seed(1)
    a, b = (pool[torch.randint(len(pool), (1000,), generator=g)] for _ in range(2))
    assert 0.4 < knn_accuracy(a, b) < 0.6


def test_exact_copies_fall_below_chance():
    # a held-out image's twin, with the other label, is its nearest training neighbour 70 % of the time
    x = blobs(1000, 0.0, 0)
    assert 0.25 < knn_accuracy(x, x.clone()) < 0.45


def test_disjoint_sets_are_told_apart():
    assert knn_accuracy(blobs(1000, 0.0, 0), blobs(1000, 0.5, 1)) == 1.0


def test_seeded_and_validated():
    a, b = blobs(100, 0.0, 0), blobs(100, 0.1, 1)
    assert knn_accuracy(a, b, seed=3) == knn_accuracy(a, b, seed=3)
    with pytest.raises(ValueError, match="k=0"):
        knn_accuracy(a, b, k=0)
