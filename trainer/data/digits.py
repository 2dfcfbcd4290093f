"""scikit-learn's 8x8 digits (1,797 grey images, 10 classes): the tiny default dataset.

It has no official test split, so a fixed 297 images (a permutation with a constant seed,
independent of the experiment's seed) are held out as the test set; searches only ever
see the other 1,500, from which the validation split is carved.
"""

from __future__ import annotations

import numpy as np

TEST_SIZE = 297
_HOLDOUT_SEED = 20170  # fixed: the test set must not move with the experiment's seed


def read_digits() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train_images, train_labels), (test_images, test_labels)), images uint8 N,1,8,8."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = d.target.astype(np.int64)
    perm = np.random.default_rng(_HOLDOUT_SEED).permutation(len(labels))
    test, train = np.sort(perm[:TEST_SIZE]), np.sort(perm[TEST_SIZE:])
    return (images[train], labels[train]), (images[test], labels[test])
