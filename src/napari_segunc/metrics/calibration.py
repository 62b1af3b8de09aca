"""Calibration of class probabilities against several raters: ECE, MCE, ACE, per-organ ECE, reliability data.

Conventions: ``prob`` is a float (C, Z, Y, X) array of class probabilities (class 0 = background, C ≥ 2); ``raters``
are K integer arrays of the same (Z, Y, X) shape holding *class indices* 0…C−1 (the suite maps label values to
channels). Predicted class = argmax (first maximum on ties), confidence = the top probability. A (voxel, rater) pair
is correct when the predicted class equals that rater's class.

- ECE (native, top-label): 50 equal-width bins [j/50, (j+1)/50), confidence exactly 1.0 in the last bin;
  ECE_k = Σ_b (n_b / N)·|acc_b − conf_b| (L1) for each rater k, reported per rater and as their mean; MCE_k the
  largest |acc_b − conf_b| over non-empty bins. Equal to torchmetrics ``MulticlassCalibrationError(n_bins=50,
  norm="l1" | "max")`` except for confidences of exactly 1.0, which torchmetrics puts in a 51st bin of their own
  (``torch.bucketize(right=True) − 1`` over ``linspace(0, 1, 51)``); torchmetrics also accumulates in float32.
- ACE (ValUES ``calib_stats``/``calc_ace``): the same (confidence, correct) pairs pooled over raters, 20 bins with
  edges ``linspace(0, 1 + 1e-8, 21)`` and ``np.digitize − 1``, ACE = mean over non-empty bins of |acc − conf| (every
  non-empty bin weighs the same).
- Per-organ ECE / MCE (binary): confidence = p_o, outcome = "the rater says o", same 50 bins; per rater then mean.
  This is torchmetrics ``BinaryCalibrationError(n_bins=50)`` (which bins p itself), again except p = 1.0 exactly.
- CURVAS ECE (``curvas_ece``): the official CURVAS 2024 evaluation's number: background = 1 − Σ organ probabilities,
  C = organs + 1 classes, torchmetrics ``MulticlassCalibrationError(num_classes=C, n_bins=50)`` per rater,
  reproduced without torch: the 51st bin for confidence 1.0, and torchmetrics' silent softmax of the *whole* input
  when any value lies outside [0, 1] — which happens when float rounding makes 1 − Σ slightly negative at one voxel
  (a warning is logged then, because the result no longer measures the model's calibration). torchmetrics
  accumulates its bins in float32 (CPU ``scatter_add_``, serially): with ~10⁵–10⁷ voxels per bin the sums lose
  precision (on the 245 760-voxel phantom ECE 0.00259 instead of the exact 0.00302) and counts stop at 2²⁴; the
  curvas mode reproduces that arithmetic step by step, in the voxel order of the canonical (z, y, x) array.

Counting is done by numba kernels in one pass over the voxels (numpy twins in ``_calib_numpy``); nothing of size
K × N is materialised.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from .volume import Result

__all__ = [
    "ACE_BINS",
    "Calibration",
    "curvas_ece",
    "curvas_multirater_ece",
    "organ_calibration",
    "top_label_calibration",
]

log = logging.getLogger(__name__)

ACE_BINS = 20
_ACE_EDGES = np.linspace(0.0, 1.0 + 1e-8, ACE_BINS + 1)


class Calibration(NamedTuple):
    """Top-label calibration of one case (see the module docstring)."""

    ece: Result
    ece_per_rater: tuple[float, ...]
    mce: Result
    mce_per_rater: tuple[float, ...]
    ace: Result
    bin_edges: np.ndarray  # (n_bins + 1,)
    bin_confidence: np.ndarray  # mean confidence per bin (NaN when empty)
    bin_accuracy: np.ndarray  # fraction of correct (voxel, rater) pairs per bin, pooled over raters (NaN when empty)
    bin_count: np.ndarray  # (voxel, rater) pairs per bin, int64


# ---------------------------------------------------------------------------------------------------- kernels
@numba.njit(cache=True, parallel=True)
def _toplabel_kernel(p, targets, n_bins, ace_edges):  # pragma: no cover - compiled
    """Per z-slab histograms: count/conf over n_bins + 1 slots (slot n_bins = confidence ≥ 1), correct per rater."""
    n_classes, nz, ny, nx = p.shape
    k = targets.shape[0]
    n_ace = ace_edges.shape[0] - 1
    count = np.zeros((nz, n_bins + 1), np.int64)
    conf = np.zeros((nz, n_bins + 1), np.float64)
    correct = np.zeros((nz, k, n_bins + 1), np.int64)
    a_count = np.zeros((nz, n_ace), np.int64)
    a_conf = np.zeros((nz, n_ace), np.float64)
    a_correct = np.zeros((nz, n_ace), np.int64)
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                best = p[0, z, y, x]
                arg = 0
                for c in range(1, n_classes):
                    v = p[c, z, y, x]
                    if v > best:
                        best = v
                        arg = c
                b64 = np.float64(best)
                b = int(b64 * n_bins)
                if b < 0:
                    b = 0
                if b > n_bins:
                    b = n_bins
                count[z, b] += 1
                conf[z, b] += b64
                hits = 0
                for r in range(k):
                    if targets[r, z, y, x] == arg:
                        correct[z, r, b] += 1
                        hits += 1
                j = int(b64 * n_ace / ace_edges[n_ace])
                if j > n_ace - 1:
                    j = n_ace - 1
                if j < 0:
                    j = 0
                while j < n_ace - 1 and b64 >= ace_edges[j + 1]:
                    j += 1
                while j > 0 and b64 < ace_edges[j]:
                    j -= 1
                a_count[z, j] += k
                a_conf[z, j] += k * b64
                a_correct[z, j] += hits
    return (
        count.sum(axis=0),
        conf.sum(axis=0),
        correct.sum(axis=0),
        a_count.sum(axis=0),
        a_conf.sum(axis=0),
        a_correct.sum(axis=0),
    )


@numba.njit(cache=True, parallel=True)
def _binary_kernel(p, masks, n_bins):  # pragma: no cover - compiled
    """Per-organ binary histograms: count/conf over n_bins + 1 slots by p itself, positives per rater."""
    nz, ny, nx = p.shape
    k = masks.shape[0]
    count = np.zeros((nz, n_bins + 1), np.int64)
    conf = np.zeros((nz, n_bins + 1), np.float64)
    pos = np.zeros((nz, k, n_bins + 1), np.int64)
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                v = np.float64(p[z, y, x])
                b = int(v * n_bins)
                if b < 0:
                    b = 0
                if b > n_bins:
                    b = n_bins
                count[z, b] += 1
                conf[z, b] += v
                for r in range(k):
                    if masks[r, z, y, x]:
                        pos[z, r, b] += 1
    return count.sum(axis=0), conf.sum(axis=0), pos.sum(axis=0)


def _toplabel_numpy(p, targets, n_bins, ace_edges):
    """Numpy twin of `_toplabel_kernel` (reference for the tests)."""
    flat = p.reshape(p.shape[0], -1)
    arg = np.argmax(flat, axis=0)
    best = flat.max(axis=0).astype(np.float64)
    b = np.clip((best * n_bins).astype(np.int64), 0, n_bins)
    count = np.bincount(b, minlength=n_bins + 1)
    conf = np.bincount(b, weights=best, minlength=n_bins + 1)
    hit = targets.reshape(targets.shape[0], -1) == arg
    correct = np.stack([np.bincount(b[h], minlength=n_bins + 1) for h in hit])
    j = np.clip(np.digitize(best, ace_edges) - 1, 0, len(ace_edges) - 2)
    k = targets.shape[0]
    n_ace = len(ace_edges) - 1
    a_count = np.bincount(j, minlength=n_ace) * k
    a_conf = np.bincount(j, weights=best, minlength=n_ace) * k
    a_correct = np.bincount(j, weights=hit.sum(axis=0), minlength=n_ace).astype(np.int64)
    return count, conf, correct, a_count, a_conf, a_correct


def _binary_numpy(p, masks, n_bins):
    """Numpy twin of `_binary_kernel`."""
    v = p.ravel().astype(np.float64)
    b = np.clip((v * n_bins).astype(np.int64), 0, n_bins)
    count = np.bincount(b, minlength=n_bins + 1)
    conf = np.bincount(b, weights=v, minlength=n_bins + 1)
    pos = np.stack([np.bincount(b[m.ravel()], minlength=n_bins + 1) for m in masks])
    return count, conf, pos


# ---------------------------------------------------------------------------------------------------- inputs
def _prob(prob) -> np.ndarray:
    p = np.asarray(prob)
    if p.ndim == 2:  # (C, N) voxels in a row
        p = p[:, None, None, :]
    if p.ndim != 4 or p.shape[0] < 2 or p.dtype.kind != "f":
        raise InvalidInput(f"Class probabilities must be a float (C, Z, Y, X) array, C ≥ 2; got {p.dtype} {p.shape}.")
    return p


def _targets(raters: Sequence, shape: tuple[int, ...], n_classes: int | None) -> np.ndarray:
    if len(raters) == 0:
        raise InvalidInput("At least one rater is needed for calibration.")
    out = np.empty((len(raters), *shape), np.uint8 if (n_classes or 256) <= 256 else np.int32)
    for k, r in enumerate(raters):
        a = np.asarray(r)
        if a.shape != shape[: a.ndim] or a.size != int(np.prod(shape)):
            raise GeometryMismatch(f"Rater {k + 1} has shape {a.shape} but the probabilities have {shape}.")
        out[k] = a.reshape(shape)
    return out


def _use_numba(flag: bool | None) -> bool:
    return True if flag is None else bool(flag)


# ---------------------------------------------------------------------------------------------------- public
def _ece_from(count, conf, correct_k, n) -> tuple[float, float]:
    ok = count > 0
    gap = np.abs(correct_k[ok] - conf[ok])
    ece = float(gap.sum() / n)
    mce = float(np.max(gap / count[ok])) if ok.any() else math.nan
    return ece, mce


def top_label_calibration(prob, raters: Sequence, n_bins: int = 50, *, use_numba: bool | None = None) -> Calibration:
    """ECE / MCE per rater and their means, pooled ACE, and the reliability data (module docstring)."""
    p = _prob(prob)
    t = _targets(raters, p.shape[1:], p.shape[0])
    n = int(np.prod(p.shape[1:]))
    if n == 0:
        raise InvalidInput("No voxel to compute the calibration on.")
    kernel = _toplabel_kernel if _use_numba(use_numba) else _toplabel_numpy
    count, conf, correct, a_count, a_conf, a_correct = kernel(p, t, int(n_bins), _ACE_EDGES)
    # native rule: confidence 1.0 belongs to the last bin
    count, conf, correct = _merge_last(count), _merge_last(conf), _merge_last(correct)
    count_f, conf_f = count.astype(np.float64), conf
    eces, mces = zip(
        *(_ece_from(count_f, conf_f, correct[k].astype(np.float64), n) for k in range(t.shape[0])), strict=True
    )
    ok = a_count > 0
    ace = float(np.mean(np.abs(a_correct[ok] / a_count[ok] - a_conf[ok] / a_count[ok])))
    k = t.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.where(count > 0, conf / count, np.nan)
        bin_acc = np.where(count > 0, correct.sum(axis=0) / (k * count), np.nan)
    return Calibration(
        ece=Result(float(np.mean(eces)), None),
        ece_per_rater=tuple(eces),
        mce=Result(float(np.nanmean(mces)), None),
        mce_per_rater=tuple(mces),
        ace=Result(ace, None),
        bin_edges=np.linspace(0.0, 1.0, n_bins + 1),
        bin_confidence=bin_conf,
        bin_accuracy=bin_acc,
        bin_count=(count * k).astype(np.int64),
    )


def _merge_last(a: np.ndarray) -> np.ndarray:
    out = a[..., :-1].copy()
    out[..., -1] += a[..., -1]
    return out


def organ_calibration(
    p_organ, rater_masks: Sequence, n_bins: int = 50, *, use_numba: bool | None = None
) -> tuple[Result, Result]:
    """Binary ECE and MCE of one organ's probability against each rater's mask, averaged over raters."""
    p = np.asarray(p_organ)
    if p.ndim != 3 or p.dtype.kind != "f":
        raise InvalidInput(f"The organ probability must be a float (Z, Y, X) array; got {p.dtype} {p.shape}.")
    masks = np.empty((len(rater_masks), *p.shape), bool)
    for k, m in enumerate(rater_masks):
        m = np.asarray(m)
        if m.shape != p.shape:
            raise GeometryMismatch(f"Rater {k + 1}'s mask has shape {m.shape} but the probability has {p.shape}.")
        masks[k] = m if m.dtype == bool else m != 0
    if masks.shape[0] == 0:
        raise InvalidInput("At least one rater is needed for calibration.")
    kernel = _binary_kernel if _use_numba(use_numba) else _binary_numpy
    count, conf, pos = kernel(p, masks, int(n_bins))
    count, conf, pos = _merge_last(count).astype(np.float64), _merge_last(conf), _merge_last(pos).astype(np.float64)
    pairs = [_ece_from(count, conf, pos[k], p.size) for k in range(masks.shape[0])]
    return Result(float(np.mean([e for e, _ in pairs])), None), Result(float(np.mean([m for _, m in pairs])), None)


@numba.njit(cache=True)
def _torchmetrics_f32_kernel(p, target, n_bins):  # pragma: no cover - compiled
    """torchmetrics ``_binning_bucketize`` + ``_ce_compute`` (l1) on CPU, float32 arithmetic in voxel order.

    ``scatter_add_`` on the CPU adds serially in float32, so large bins lose precision (and a count saturates at
    2**24): reproduced operation by operation, checked equal to torchmetrics in the tests.
    """
    n_classes = p.shape[0]
    n = p.shape[1]
    bounds = np.linspace(0.0, 1.0, n_bins + 1).astype(np.float32)
    count = np.zeros(n_bins + 1, np.float32)
    conf = np.zeros(n_bins + 1, np.float32)
    acc = np.zeros(n_bins + 1, np.float32)
    one = np.float32(1.0)
    for i in range(n):
        best = p[0, i]
        arg = 0
        for c in range(1, n_classes):
            if p[c, i] > best:
                best = p[c, i]
                arg = c
        j = int(np.float64(best) * n_bins)  # then exact bucketize(right=True) - 1 against the float32 bounds
        if j > n_bins:
            j = n_bins
        if j < 0:
            j = 0
        while j < n_bins and best >= bounds[j + 1]:
            j += 1
        while j > 0 and best < bounds[j]:
            j -= 1
        count[j] += one
        conf[j] += best
        if target[i] == arg:
            acc[j] += one
    return count, conf, acc


def _torchmetrics_ece(p: np.ndarray, target: np.ndarray, n_bins: int) -> float:
    """torchmetrics MulticlassCalibrationError (l1) of (C, ...) float32 probabilities, float32 as torchmetrics."""
    flat = np.ascontiguousarray(p.reshape(p.shape[0], -1), dtype=np.float32)
    count, conf, acc = _torchmetrics_f32_kernel(flat, np.ascontiguousarray(target.ravel()), n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf_bin = np.nan_to_num(conf / count)
        acc_bin = np.nan_to_num(acc / count)
    prop = count / np.sum(count, dtype=np.float32)
    return float(np.sum(np.abs(acc_bin - conf_bin) * prop, dtype=np.float32))


def _curvas_input(organ_probs) -> np.ndarray:
    q = np.asarray(organ_probs)
    if q.ndim != 4 or q.dtype.kind != "f":
        raise InvalidInput(f"Organ probabilities must be a float (organs, Z, Y, X) array; got {q.dtype} {q.shape}.")
    q = q.astype(np.float32, copy=False)
    background = (np.float32(1.0) - q.sum(axis=0, dtype=np.float32))[None]
    p = np.concatenate([background, q], axis=0)
    lo, hi = float(p.min()), float(p.max())
    if lo < 0 or hi > 1:
        log.warning(
            "curvas ECE: probabilities from %g to %g (background = 1 − Σ organs went outside [0, 1]); torchmetrics, "
            "and so the official evaluation, then applies a softmax to every voxel: reproduced, but the value no "
            "longer measures the model's calibration",
            lo,
            hi,
        )
        p = np.exp(p - p.max(axis=0, keepdims=True))
        p /= p.sum(axis=0, keepdims=True)
    return p


def curvas_ece(organ_probs, rater, n_bins: int = 50) -> float:
    """The official CURVAS 2024 ECE of the organ probabilities against one rater's class indices."""
    p = _curvas_input(organ_probs)
    return _torchmetrics_ece(p, _targets([rater], p.shape[1:], p.shape[0])[0], int(n_bins))


def curvas_multirater_ece(organ_probs, raters: Sequence, n_bins: int = 50) -> list[float]:
    """`curvas_ece` for every rater (the official loop assumes exactly 3; any K ≥ 1 here)."""
    p = _curvas_input(organ_probs)
    t = _targets(raters, p.shape[1:], p.shape[0])
    return [_torchmetrics_ece(p, t[k], int(n_bins)) for k in range(t.shape[0])]
