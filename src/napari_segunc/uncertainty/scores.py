"""Summary scores of an uncertainty map: per structure, per axial slice and per case.

Same rules as `regions`: NaN is "not computed" (never counted or averaged), ±inf is refused, *above* a threshold
means strictly greater, windows ("patches") are in voxels, not mm.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InvalidInput
from .checks import check_map, check_mask, check_segmentation, names_by_value, py_scalar

__all__ = ["case_scores", "slice_scores", "structure_scores", "window_mean"]

log = logging.getLogger(__name__)

_CHUNK_VOXELS = 1 << 22


def _patch_size(patch_size: int | Sequence[int]) -> tuple[int, int, int]:
    size = tuple(int(v) for v in np.broadcast_to(np.asarray(patch_size), (3,)))
    if min(size) < 1:
        raise InvalidInput(f"The patch size must be at least 1 voxel per axis, got {patch_size}.")
    return size


def window_mean(uncertainty: np.ndarray, *, patch_size: int | Sequence[int] = 10) -> np.ndarray:
    """Mean of the map's non-NaN values in a box of `patch_size` voxels around every voxel (float32 or float64).

    Along each axis of size k the box covers indices ``i - k // 2 … i + (k - 1) // 2`` (for an even size one voxel
    more towards lower indices), clipped to the volume. A box with no non-NaN voxel gives NaN.
    """
    return _window_mean(check_map(uncertainty), _patch_size(patch_size))


def _window_mean(u: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    dtype = np.promote_types(u.dtype, np.float32)  # ndimage has no float16
    finite = ~np.isnan(u)
    if finite.all():  # the in-volume fraction of the box is separable
        out = ndimage.uniform_filter(u.astype(dtype, copy=False), size=size, mode="constant", cval=0.0)
        fz, fy, fx = (ndimage.uniform_filter1d(np.ones(u.shape[a], dtype), size[a], mode="constant") for a in range(3))
        out /= fz[:, None, None] * fy[None, :, None]
        out /= fx
        return out
    out = ndimage.uniform_filter(np.where(finite, u, 0).astype(dtype), size=size, mode="constant", cval=0.0)
    count = ndimage.uniform_filter(finite.astype(dtype), size=size, mode="constant", cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out /= count
    out[count < 0.5 / np.prod(size)] = np.nan  # no non-NaN voxel in the box (running sums leave tiny residues)
    return out


def _scores(u, groups, index, threshold, patch_size) -> dict[str, np.ndarray]:
    """Per-group sums, counts, maxima of window means and above-threshold means, in slabs of z slices."""
    if not math.isfinite(float(threshold)):
        raise InvalidInput(f"The threshold must be a finite number, got {threshold}.")
    index = np.asarray(index, np.intp)
    top = max(int(index.max(initial=0)), int(groups.max(initial=0)) if groups is not None else 1) + 1
    wm = _window_mean(u, _patch_size(patch_size))
    acc = {k: np.zeros(top) for k in ("n", "sum", "n_above", "sum_above")}
    pmax = np.full(top, np.nan, wm.dtype)  # same dtype: ufunc.at is slow when it has to cast
    step = max(1, _CHUNK_VOXELS // max(1, u.shape[1] * u.shape[2]))
    for z0 in range(0, u.shape[0], step):
        v = u[z0 : z0 + step].reshape(-1)
        g = np.ones(v.size, np.intp) if groups is None else groups[z0 : z0 + step].reshape(-1).astype(np.intp)
        np.fmax.at(pmax, g, wm[z0 : z0 + step].reshape(-1))  # NaN boxes are skipped
        nan = np.isnan(v)
        if nan.any():
            g, v = g[~nan], v[~nan]
        above = v > threshold
        acc["n"] += np.bincount(g, minlength=top)
        acc["sum"] += np.bincount(g, weights=v, minlength=top)
        acc["n_above"] += np.bincount(g[above], minlength=top)
        acc["sum_above"] += np.bincount(g[above], weights=v[above], minlength=top)
    n, n_above = acc["n"][index], acc["n_above"][index]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "n_voxels": n.astype(np.int64),
            "sum": acc["sum"][index],
            "mean": np.where(n > 0, acc["sum"][index] / n, np.nan),
            "patch_max": pmax[index].astype(np.float64),
            "n_above_threshold": n_above.astype(np.int64),
            "mean_above_threshold": np.where(n_above > 0, acc["sum_above"][index] / n_above, np.nan),
        }


def structure_scores(
    uncertainty: np.ndarray,
    segmentation: np.ndarray,
    *,
    threshold: float,
    labels: Mapping[str, int] | None = None,
    patch_size: int | Sequence[int] = 10,
) -> list[dict[str, Any]]:
    """Uncertainty scores of every structure of a segmentation.

    Parameters
    ----------
    uncertainty : ndarray of float, shape (Z, Y, X)
    segmentation : ndarray of int, shape (Z, Y, X)
        Label map, 0 = background.
    threshold : float
        For the above-threshold scores (in the map's units).
    labels : mapping of str to int, optional
        Structures to score, in this order, by name (absent ones get zero counts and NaN means). Without it every
        non-zero label present is scored in ascending order and named ``"label N"``.
    patch_size : int or 3 ints
        Window size in voxels (z, y, x).

    Returns
    -------
    list of dict
        One row per structure: ``label``, ``structure`` and the scores (NaN voxels left out; units of the map):

        - ``n_voxels`` (non-NaN voxels), ``sum``, ``mean`` (NaN when ``n_voxels`` is 0);
        - ``patch_max``: the largest `window_mean` (box of `patch_size` **voxels**, not mm, clipped to the volume,
          voxels outside the structure included) over box centres inside the structure; NaN without voxels;
        - ``n_above_threshold`` and ``mean_above_threshold``: count and mean of the values ``> threshold``; the
          mean is NaN when no voxel exceeds the threshold (nothing to average), not 0.
    """
    u = check_map(uncertainty)
    seg = check_segmentation(u, segmentation)
    names = names_by_value(labels)
    if labels:
        index = [int(v) for v in labels.values()]
    else:
        index = np.flatnonzero(np.bincount(seg.reshape(-1).astype(np.int64))[1:]) + 1 if seg.size else []
    if len(index) == 0:
        log.info("the segmentation has no structure to score")
        return []
    s = _scores(u, seg, index, threshold, patch_size)
    return [
        {"label": int(v), "structure": names.get(int(v), f"label {v}"), **{k: py_scalar(a[i]) for k, a in s.items()}}
        for i, v in enumerate(index)
    ]


def case_scores(
    uncertainty: np.ndarray, *, threshold: float, mask: np.ndarray | None = None, patch_size: int | Sequence[int] = 10
) -> dict[str, Any]:
    """Uncertainty scores of the whole map, or of the voxels inside `mask` (non-zero = inside).

    Returns a dict with the score keys and rules of `structure_scores` (``n_voxels``, ``sum``, ``mean``,
    ``patch_max``, ``n_above_threshold``, ``mean_above_threshold``); box centres are all voxels of the mask (or map).
    """
    u = check_map(uncertainty)
    m = check_mask(u, mask)
    s = _scores(u, m, [1], threshold, patch_size)
    return {k: py_scalar(a[0]) for k, a in s.items()}


def slice_scores(uncertainty: np.ndarray, *, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Sum and mean of every axial slice, optionally inside `mask`.

    Returns
    -------
    dict of ndarray, each shape (Z,)
        ``z`` (slice index), ``n_voxels`` (non-NaN voxels counted), ``sum``, ``mean`` (NaN for a slice with no
        counted voxel). NaN voxels are left out.
    """
    u = check_map(uncertainty)
    m = check_mask(u, mask)
    nz = u.shape[0]
    out = {"z": np.arange(nz), "n_voxels": np.zeros(nz, np.int64), "sum": np.zeros(nz)}
    step = max(1, _CHUNK_VOXELS // max(1, u.shape[1] * u.shape[2]))
    for z0 in range(0, nz, step):
        v = u[z0 : z0 + step].astype(np.float64)
        keep = ~np.isnan(v) if m is None else ~np.isnan(v) & m[z0 : z0 + step]
        out["n_voxels"][z0 : z0 + step] = keep.sum(axis=(1, 2))
        out["sum"][z0 : z0 + step] = np.where(keep, v, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean"] = np.where(out["n_voxels"] > 0, out["sum"] / out["n_voxels"], np.nan)
    return out
