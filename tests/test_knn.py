"""kNN real-vs-fake accuracy: chance on identical sets, perfect on disjoint ones, seeded."""

import pytest
import torch

from sarnet.metrics.knn import knn_accuracy


def blobs(n, shift, seed):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 0.5 + shift


def resampled(pool, seed):
    """Two draws with replacement from a small pool: the reference's setting for real images (892 test fives)."""
    g = torch.Generator().manual_seed(seed)
    return (pool[torch.randint(len(pool), (1000,), generator=g)] for _ in range(2))


@pytest.mark.parametrize("sets, low, high", [
    (lambda: (blobs(1000, 0.0, 0), blobs(1000, 0.0, 1)), 0.4, 0.6),  # one distribution: chance
    (lambda: resampled(blobs(300, 0.0, 0), 1), 0.4, 0.6),  # two resamples of one pool: chance too
    # exact copies: a held-out image's twin, with the other label, is its nearest neighbour 70 % of the time
    (lambda: (blobs(1000, 0.0, 0), blobs(1000, 0.0, 0)), 0.25, 0.45),
    (lambda: (blobs(1000, 0.0, 0), blobs(1000, 0.5, 1)), 1.0, 1.0),  # disjoint sets are told apart
], ids=["same", "resampled", "copies", "disjoint"])
def test_accuracy_on_known_pairs_of_sets(sets, low, high):
    assert low <= knn_accuracy(*sets()) <= high


def test_seeded_and_validated():
    a, b = blobs(100, 0.0, 0), blobs(100, 0.1, 1)
    assert knn_accuracy(a, b, seed=3) == knn_accuracy(a, b, seed=3)
    with pytest.raises(ValueError, match="k=0"):
        knn_accuracy(a, b, k=0)
