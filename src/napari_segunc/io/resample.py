"""Resampling onto an image's grid with SimpleITK: what "resample it onto the image first" asks for.

Both volumes are placed in physical space (mm, LPS) by their own geometry, and every voxel centre of the reference
grid takes the moving volume's value there (`sitk.Resample` with the identity transform):

- a label map by nearest neighbour (labels are never blended);
- an intensity image or a float map by linear interpolation;
- class probabilities (C, z, y, x) channel by channel, linearly, then renormalised so each voxel sums to 1.

Reference voxels outside the moving volume's extent get background (label 0, probability 1 for class 0), or the
moving image's minimum for intensities; `Resampled.outside` says how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..volume import Volume, VolumeKind

__all__ = ["Resampled", "resample_like", "resample_probabilities_like"]


@dataclass
class Resampled:
    """The resampled data on the reference grid and the fraction of its voxels outside the moving volume."""

    data: np.ndarray
    outside: float


def _inside(moving: Volume, reference: Volume) -> np.ndarray:
    """Which reference voxels fall inside the moving volume (nearest-neighbour resampling of a mask of ones)."""
    import SimpleITK as sitk

    ones = moving.with_data(np.ones(moving.shape, np.uint8), kind=VolumeKind.LABELS)
    out = sitk.Resample(ones.to_sitk(), reference.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(out).astype(bool)


def resample_like(moving: Volume, reference: Volume, *, kind: VolumeKind | None = None) -> Resampled:
    """`moving` on `reference`'s canonical grid (labels: nearest neighbour; anything else: linear)."""
    import SimpleITK as sitk

    kind = kind or moving.kind
    labels = kind is VolumeKind.LABELS
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    data = np.asarray(moving.data)
    image = moving.to_sitk() if labels else moving.with_data(data.astype(np.float64)).to_sitk()
    fill = 0.0 if labels else float(np.nanmin(data)) if data.size else 0.0
    out = sitk.GetArrayFromImage(sitk.Resample(image, reference.to_sitk(), sitk.Transform(), interpolator, fill))
    out = out.astype(data.dtype if labels else np.float32)
    inside = _inside(moving, reference)
    return Resampled(out, float(1.0 - inside.mean()))


def resample_probabilities_like(probabilities: np.ndarray, grid: Volume, reference: Volume) -> Resampled:
    """Class probabilities ``(C, z, y, x)`` on `grid` moved onto `reference`'s grid, renormalised per voxel."""
    import SimpleITK as sitk

    target = reference.to_sitk()
    out = np.empty((probabilities.shape[0], *reference.shape), np.float32)
    for c, channel in enumerate(probabilities):
        image = grid.with_data(np.asarray(channel, np.float64), kind=VolumeKind.FLOAT_MAP).to_sitk()
        out[c] = sitk.GetArrayFromImage(sitk.Resample(image, target, sitk.Transform(), sitk.sitkLinear, 0.0))
    inside = _inside(grid, reference)
    out[0][~inside] = 1.0  # outside the map: background
    total = out.sum(axis=0)
    empty = total <= 0
    out[0][empty] = 1.0
    total[empty] = 1.0
    out /= total
    return Resampled(out, float(1.0 - inside.mean()))
