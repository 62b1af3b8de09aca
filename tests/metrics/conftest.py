"""A small evaluation case: the phantom's raters and a blurred model of its truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_segunc.phantom import LABELS, make_phantom


def model_probabilities(truth: np.ndarray, n_classes: int, sigma: float, shift: int = 0) -> np.ndarray:
    """(C, Z, Y, X) float32: the one-hot truth blurred by `sigma` voxels (shifted along x), normalised per voxel."""
    onehot = np.stack([(truth == c).astype(np.float32) for c in range(n_classes)])
    if shift:
        onehot = np.roll(onehot, shift, axis=3)
    blurred = np.stack([ndimage.gaussian_filter(ch, sigma) for ch in onehot]) + 1e-4
    return (blurred / blurred.sum(axis=0, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def phantom_case():
    """dict with image, truth, raters (3 arrays), probabilities (6 classes), spacing, labels."""
    study = make_phantom(seed=3, n_raters=3, shape=(32, 80, 96))
    n_classes = max(LABELS.values()) + 1
    return {
        "image": study.image.data,
        "truth": study.truth.data,
        "raters": [r.data for r in study.raters],
        "probabilities": model_probabilities(study.truth.data, n_classes, sigma=1.2, shift=1),
        "spacing": study.image.spacing,
        "labels": dict(study.labels),
        "study": study,
    }
