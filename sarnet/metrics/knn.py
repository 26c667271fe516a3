"""kNN real-vs-fake accuracy: the two-sample test the reference used beside FID (docs/reference.md §6).

Label real and generated images 1 and 0, split them 70/30, classify the held-out 30 % by a majority vote of the k
nearest training images (Euclidean distance on raw pixels). 50 % means the classifier cannot tell the sets apart
(ideal); 100 % means it always can. Ties between the two labels go to the lower label (0, "generated"), as
scikit-learn's KNeighborsClassifier breaks them.
"""

import torch

CHUNK = 1024  # test images whose distances to the training images are held at once (the default n: one chunk)


def knn_accuracy(real, fake, k=4, test_fraction=0.3, seed=42) -> float:
    """real, fake: [N, ...] image tensors (any shape per image, same for both). Returns the test accuracy."""
    if len(real) < 2 or len(fake) < 2 or k < 1:
        raise ValueError(f"knn_accuracy needs >= 2 real and >= 2 generated images and k >= 1, got {len(real)}, "
                         f"{len(fake)}, k={k}")
    x = torch.cat([real.flatten(1), fake.flatten(1)]).double()
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).long()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = max(round(test_fraction * len(x)), 1)
    test, train = perm[:n_test], perm[n_test:]
    if k > len(train):
        raise ValueError(f"k={k} is larger than the {len(train)} training images")
    # among equal distances, any order; in chunks of test images, so memory stays ~CHUNK x train images
    nearest = torch.cat([torch.cdist(x[rows], x[train]).topk(k, largest=False).indices
                         for rows in test.split(CHUNK)])  # [n_test, k]
    votes_real = y[train][nearest].sum(1)
    predicted = (2 * votes_real > k).long()  # a tie (votes_real == k / 2) goes to 0
    return (predicted == y[test]).double().mean().item()
