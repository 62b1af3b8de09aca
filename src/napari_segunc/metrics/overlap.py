"""Overlap and surface distances: Dice, consensus Dice, HD95 / HD100 / ASSD, and the CURVAS row-wise Dice.

Definitions (masks are (Z, Y, X), nonzero = inside; spacing in mm, (z, y, x)):

- Dice = 2|A ∩ B| / (|A| + |B|); one mask empty → 0; both empty → NaN ("empty").
- consensus Dice (CURVAS, native): Dice of pred ∧ ¬D against G ∧ ¬D, where G is the raters' consensus of the organ
  and D their dissensus: only the voxels the raters agree on count.
- Surfaces (MONAI convention): surface(M) = M ∧ ¬erosion(M), erosion with the 6-connected cross and everything
  outside the image counted as background (a mask touching the border has a surface there).
- Directed distances d(A→B): Euclidean distance in mm from each surface voxel of A to the nearest surface voxel of B.
  HD95 = max(P95 d(A→B), P95 d(B→A)) with numpy's linear percentile, as MONAI ``compute_hausdorff_distance(
  percentile=95, directed=False, spacing=…)``; HD100 = the largest distance; ASSD = mean of the two directed sets
  concatenated, as MONAI ``compute_average_surface_distance(symmetric=True)``.
- An empty mask makes every surface distance NaN, with the reason naming the empty mask.

Implementation: everything is cropped to the bounding box of the masks' union padded by one voxel (clipped to the
image) before anything else, and distances come from ``scipy.ndimage.distance_transform_edt(~surface,
sampling=spacing)`` on that crop only. The crop is exact: every surface voxel of both masks lies inside it, the
transform gives each voxel the distance to the nearest zero (surface voxel) in the crop, and there is none outside.

- CURVAS Dice (``curvas_dice``): what the official CURVAS 2024 evaluation computes when it gives un-batched
  ``(S, X, Y)`` arrays to MONAI ``DiceMetric(include_background=False, reduction="mean", ignore_empty=True)``:
  MONAI reads them as (batch = slices, channel = rows, spatial = columns), so each (slice, row) pair gets a 1D Dice,
  row 0 of every slice is dropped as the "background channel", pairs whose reference row is empty are ignored, and
  MONAI's two-step mean follows: per slice, the mean over its valid rows; then the mean over the slices that have
  a valid row (0.0 when none has, as MONAI returns).
- CURVAS 2025 Dice (``staple_dice``, ``thresholded_dice``), as the official CURVAS-PDACVI 2025 evaluation
  (``merged_dice_score``) defines them, with its smoothed Dice 2Σ(a·b) / (Σa + Σb + 10⁻⁶):
  the binary prediction against the raters' STAPLE consensus at 0.5 (SimpleITK's binary ``STAPLEImageFilter``,
  foreground where its probability > 0.5, the convention of `napari_segunc.uncertainty.raters`); and the mean over
  the thresholds t = 0.1, 0.24, 0.38, 0.52, 0.66, 0.8 (``linspace(0.1, 0.8, 6)``) of the Dice of p > t against
  (mean of the raters' masks) > t, a threshold where both are empty scoring 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np
from scipy import ndimage

from ..errors import GeometryMismatch, InvalidInput
from .volume import Result, voxel_volume_ml

__all__ = [
    "CURVAS2025_THRESHOLDS",
    "SurfaceDistances",
    "consensus_dice",
    "curvas_dice",
    "dice",
    "staple_consensus",
    "staple_dice",
    "surface",
    "surface_distances",
    "surface_distances_many",
    "thresholded_dice",
    "thresholded_dice_from_votes",
]

#: The CURVAS 2025 thresholds of `thresholded_dice`: ``numpy.linspace(0.1, 0.8, 6)``.
CURVAS2025_THRESHOLDS = tuple(float(t) for t in np.linspace(0.1, 0.8, 6))
_SMOOTH = 1e-6


class SurfaceDistances(NamedTuple):
    """HD95, HD100 and ASSD (mm) of one prediction against one reference."""

    hd95: Result
    hd100: Result
    assd: Result


# ---------------------------------------------------------------------------------------------------- checks
def _mask(a, what: str) -> np.ndarray:
    m = np.asarray(a)
    if m.ndim != 3:
        raise InvalidInput(f"The {what} has shape {m.shape}; a 3D (z, y, x) mask is needed.")
    return m if m.dtype == bool else m != 0


def _same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise GeometryMismatch(f"The {what} have shapes {a.shape} and {b.shape} (z, y, x); they must match.")


def _spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    voxel_volume_ml(spacing)  # validates: 3 positive finite numbers
    return tuple(float(v) for v in spacing)


# ---------------------------------------------------------------------------------------------------- Dice
def _dice(a: np.ndarray, b: np.ndarray) -> Result:
    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if na + nb == 0:
        return Result(math.nan, "empty: neither mask has a voxel")
    return Result(2.0 * int(np.count_nonzero(a & b)) / (na + nb), None)


def dice(pred, ref) -> Result:
    """3D Dice of two masks; 0 when one is empty, NaN ("empty") when both are."""
    a, b = _mask(pred, "prediction"), _mask(ref, "reference")
    _same(a, b, "prediction and reference")
    return _dice(a, b)


def consensus_dice(pred, consensus, dissensus) -> Result:
    """Dice of pred ∧ ¬dissensus against consensus ∧ ¬dissensus (the voxels all raters agree on)."""
    a, g, d = _mask(pred, "prediction"), _mask(consensus, "consensus"), _mask(dissensus, "dissensus")
    _same(a, g, "prediction and consensus")
    _same(a, d, "prediction and dissensus")
    keep = ~d
    r = _dice(a & keep, g & keep)
    return r if r.reason is None else Result(math.nan, "empty: neither the prediction nor the consensus has a voxel")


def curvas_dice(pred, ref) -> Result:
    """The official CURVAS 2024 Dice: MONAI ``DiceMetric`` on un-batched (S, X, Y) arrays (module docstring)."""
    a, b = _mask(pred, "prediction"), _mask(ref, "reference")
    _same(a, b, "prediction and reference")
    a, b = a[:, 1:, :], b[:, 1:, :]  # include_background=False drops "channel" (row) 0
    inter = np.count_nonzero(a & b, axis=2)
    sa, sb = np.count_nonzero(a, axis=2), np.count_nonzero(b, axis=2)
    valid = sb > 0  # ignore_empty=True: rows with an empty reference are NaN and left out
    with np.errstate(invalid="ignore", divide="ignore"):
        row_dice = np.where(valid, 2.0 * inter / (sa + sb), 0.0)
    # MONAI's "mean" reduction: mean over the valid rows ("channels") of each slice ("batch item"), then over the
    # slices that have one; 0 (not NaN) when nothing is valid
    n_rows = valid.sum(axis=1)
    has = n_rows > 0
    if not has.any():
        return Result(0.0, None)
    return Result(float(np.mean(row_dice[has].sum(axis=1) / n_rows[has])), None)


# ---------------------------------------------------------------------------------------------------- CURVAS 2025
def _smoothed_dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * int(np.count_nonzero(a & b)) / (int(np.count_nonzero(a)) + int(np.count_nonzero(b)) + _SMOOTH)


def staple_consensus(masks: Sequence) -> np.ndarray:
    """The raters' binary STAPLE consensus: SimpleITK's ``STAPLEImageFilter`` probability > 0.5 (every rater or
    none drawing a voxel everywhere: their common mask, as SimpleITK answers NaN there)."""
    import SimpleITK as sitk

    stack = [_mask(m, f"rater {k + 1}'s mask").astype(np.uint8) for k, m in enumerate(masks)]
    if not stack:
        raise InvalidInput("STAPLE needs at least one rater's mask.")
    for m in stack[1:]:
        _same(stack[0], m, "raters' masks")
    votes = np.sum(stack, axis=0, dtype=np.uint16)
    if not votes.any() or votes.min() == len(stack):
        return votes > 0
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    probability = f.Execute([sitk.GetImageFromArray(m) for m in stack])  # alive while its view is read
    return sitk.GetArrayViewFromImage(probability) > 0.5


def staple_dice(pred, masks: Sequence, *, consensus: np.ndarray | None = None) -> Result:
    """CURVAS 2025: smoothed Dice of the binary prediction against the raters' STAPLE consensus (module docstring);
    `consensus` is the STAPLE mask when already computed."""
    a = _mask(pred, "prediction")
    g = staple_consensus(masks) if consensus is None else _mask(consensus, "STAPLE consensus")
    _same(a, g, "prediction and STAPLE consensus")
    return Result(_smoothed_dice(a, g), None)


def thresholded_dice(p, masks: Sequence, thresholds: Sequence[float] = CURVAS2025_THRESHOLDS) -> Result:
    """CURVAS 2025: mean over `thresholds` of the smoothed Dice of p > t against (mean of the masks) > t; a
    threshold where both are empty scores 1 (module docstring)."""
    prob = np.asarray(p)
    if prob.ndim != 3:
        raise InvalidInput(f"The probability map has shape {prob.shape}; a 3D (z, y, x) map is needed.")
    stack = [_mask(m, f"rater {k + 1}'s mask") for k, m in enumerate(masks)]
    if not stack:
        raise InvalidInput("The thresholded Dice needs at least one rater's mask.")
    votes = np.zeros(prob.shape, np.uint16)
    for m in stack:
        _same(prob, m, "probabilities and rater mask")
        votes += m
    return thresholded_dice_from_votes(prob, votes, len(stack), thresholds)


def thresholded_dice_from_votes(
    prob: np.ndarray,
    votes: np.ndarray,
    k: int,
    thresholds: Sequence[float] = CURVAS2025_THRESHOLDS,
    *,
    above_elsewhere: Sequence[int] | None = None,
) -> Result:
    """`thresholded_dice` from the raters' vote counts (`votes` of `k` raters). `above_elsewhere`: per threshold,
    the voxels with p > t outside these arrays, where no rater votes (the suite passes its ROI and counts the rest
    of the image with `napari_segunc.metrics._kernels.count_above`)."""
    extra = list(above_elsewhere) if above_elsewhere is not None else [0] * len(thresholds)
    # only voxels above the lowest threshold in either map can count: a linear pass, then a small subset
    candidates = (prob > min(thresholds)) | (votes > 0)
    pv, vv = prob[candidates], votes[candidates]
    scores = []
    for t, outside in zip(thresholds, extra, strict=True):
        a, b = pv > t, vv > t * k  # mean of the masks > t, in integer votes
        na, nb, nab = int(np.count_nonzero(a)) + int(outside), int(np.count_nonzero(b)), int(np.count_nonzero(a & b))
        scores.append(1.0 if na == 0 and nb == 0 else 2.0 * nab / (na + nb + _SMOOTH))
    return Result(float(np.mean(scores)), None)


# ---------------------------------------------------------------------------------------------------- surfaces
@numba.njit(cache=True)
def _surface_numba(m):  # pragma: no cover - compiled
    nz, ny, nx = m.shape
    out = np.zeros(m.shape, np.bool_)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if not m[z, y, x]:
                    continue
                if z == 0 or y == 0 or x == 0 or z == nz - 1 or y == ny - 1 or x == nx - 1:
                    out[z, y, x] = True
                elif not (
                    m[z - 1, y, x]
                    and m[z + 1, y, x]
                    and m[z, y - 1, x]
                    and m[z, y + 1, x]
                    and m[z, y, x - 1]
                    and m[z, y, x + 1]
                ):
                    out[z, y, x] = True
    return out


def surface_numpy(mask: np.ndarray) -> np.ndarray:
    """Surface voxels (mask ∧ ¬erosion, 6-connected, outside = background): the scipy twin of `surface`."""
    m = _mask(mask, "mask")
    return m & ~ndimage.binary_erosion(m)


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a 3D mask (numba kernel; equals `surface_numpy`)."""
    return _surface_numba(np.ascontiguousarray(_mask(mask, "mask")))


def _box(masks: Sequence[np.ndarray]) -> tuple[slice, ...] | None:
    """Bounding box of the union padded by one voxel, clipped to the image; None when all are empty."""
    shape = masks[0].shape
    lo, hi = [None] * 3, [None] * 3
    for m in masks:
        for axis in range(3):
            hit = np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != axis)))
            if hit.size:
                lo[axis] = hit[0] if lo[axis] is None else min(lo[axis], hit[0])
                hi[axis] = hit[-1] if hi[axis] is None else max(hi[axis], hit[-1])
    if lo[0] is None:
        return None
    return tuple(slice(max(int(lo[a]) - 1, 0), min(int(hi[a]) + 2, shape[a])) for a in range(3))


def _empty_reason(pred_empty: bool, ref_empty: bool) -> str:
    if pred_empty and ref_empty:
        return "prediction and reference are empty"
    return "prediction is empty" if pred_empty else "reference is empty"


def _distances(d_ab: np.ndarray, d_ba: np.ndarray) -> SurfaceDistances:
    hd95 = max(float(np.percentile(d_ab, 95)), float(np.percentile(d_ba, 95)))
    hd100 = max(float(d_ab.max()), float(d_ba.max()))
    assd = float((d_ab.sum(dtype=np.float64) + d_ba.sum(dtype=np.float64)) / (d_ab.size + d_ba.size))
    return SurfaceDistances(Result(hd95, None), Result(hd100, None), Result(assd, None))


def _nan(reason: str) -> SurfaceDistances:
    return SurfaceDistances(Result(math.nan, reason), Result(math.nan, reason), Result(math.nan, reason))


def surface_distances(pred, ref, spacing: Sequence[float]) -> SurfaceDistances:
    """HD95, HD100 and ASSD (mm) of `pred` against `ref` (module docstring); NaN with a reason for empty masks."""
    return surface_distances_many(pred, [ref], spacing)[0]


def surface_distances_many(pred, refs: Sequence, spacing: Sequence[float]) -> list[SurfaceDistances]:
    """One prediction against several references (raters), sharing the prediction's surface and distance map.

    Equals ``[surface_distances(pred, r, spacing) for r in refs]``.
    """
    s = _spacing(spacing)
    a = _mask(pred, "prediction")
    bs = [_mask(r, f"reference {k + 1}") for k, r in enumerate(refs)]
    for b in bs:
        _same(a, b, "prediction and reference")
    box = _box([a, *bs])
    if box is None:
        return [_nan(_empty_reason(True, True)) for _ in bs]
    a = a[box]
    surf_a = surface(a)
    surf_bs = [surface(b[box]) for b in bs]
    pred_empty = not surf_a.any()
    pairs = [not pred_empty and sb.any() for sb in surf_bs]
    if not any(pairs):
        return [_nan(_empty_reason(pred_empty, not sb.any())) for sb in surf_bs]
    # the transforms are independent and scipy releases the GIL in them: run them side by side
    todo = [surf_a] + [sb for sb, ok in zip(surf_bs, pairs, strict=True) if ok]
    with ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 1))) as pool:
        maps = list(pool.map(lambda m: ndimage.distance_transform_edt(~m, sampling=s), todo))
    dist_a, dist_bs = maps[0], iter(maps[1:])
    out = []
    for sb, ok in zip(surf_bs, pairs, strict=True):
        if not ok:
            out.append(_nan(_empty_reason(pred_empty, not sb.any())))
            continue
        dist_b = next(dist_bs)
        out.append(_distances(dist_b[surf_a], dist_a[sb]))
    return out
