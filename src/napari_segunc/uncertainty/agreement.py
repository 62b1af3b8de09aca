"""Agreement statistics between raters: pairwise Dice, Fleiss' kappa, and SimpleITK's STAPLE.

Definitions are in `raters` (module docstring); this module holds the computations `analyze_raters` calls. They
work on plain arrays (vote counts, class-index maps) and know nothing of `raters`' result classes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import InvalidInput

__all__ = ["StapleResult", "class_kappa", "fleiss_kappa", "pairwise_dice", "staple"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 22


def pairwise_dice(
    index_maps: Sequence[np.ndarray], labels: Sequence[int], label_names: Mapping[int, str], names: Sequence[str]
) -> list[dict[str, Any]]:
    """Dice of every pair of raters for every class but the background, from their class-index maps.

    `index_maps[r]` holds class indices 0..C−1 (class i is label ``labels[i]``). One confusion matrix per pair, in
    chunks. Rows: ``rater_a``, ``rater_b``, ``label``, ``name``, ``dice`` (NaN when neither drew the class).
    """
    c, rows = len(labels), []
    for (i, a), (j, b) in itertools.combinations(enumerate(index_maps), 2):
        conf = np.zeros(c * c, np.int64)  # confusion matrix rater i × rater j, one pass per pair
        fa, fb = a.reshape(-1), b.reshape(-1)
        for s in range(0, fa.size, _CHUNK):
            conf += np.bincount(fa[s : s + _CHUNK].astype(np.int64) * c + fb[s : s + _CHUNK], minlength=c * c)
        conf = conf.reshape(c, c)
        both, size_a, size_b = np.diag(conf), conf.sum(axis=1), conf.sum(axis=0)
        for ci, lab in enumerate(labels[1:], start=1):
            denom = size_a[ci] + size_b[ci]
            dice = 2.0 * float(both[ci]) / float(denom) if denom else math.nan
            row = {"rater_a": names[i], "rater_b": names[j], "label": lab, "name": label_names[lab], "dice": dice}
            rows.append(row)
    return rows


def class_kappa(class_votes: np.ndarray, k: int, roi: np.ndarray | None = None) -> float:
    """Fleiss' kappa of "class vs not class" over the voxels (in `roi` when given) from the class's vote counts
    (0..k per voxel, k raters): voxels grouped by their vote count (K + 1 distinct rows)."""
    v = class_votes[roi] if roi is not None else class_votes.reshape(-1)
    if k <= 16:  # a few comparisons beat bincount's cast to int64
        hist = np.array([np.count_nonzero(v == j) for j in range(k + 1)], np.int64)
    else:
        hist = sum(np.bincount(v[s : s + _CHUNK], minlength=k + 1) for s in range(0, v.size, _CHUNK))
    table = np.stack([np.arange(k + 1), k - np.arange(k + 1)], axis=1)
    return _fleiss(table, hist)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of N subjects each rated by the same number n ≥ 2 of raters into categories.

    Parameters
    ----------
    counts : array_like of int, shape (N, categories)
        ``counts[i, j]`` = raters who put subject i in category j; every row sums to n.

    Returns
    -------
    float
        κ = (P̄ − P_e) / (1 − P_e) with P̄ the mean per-subject agreement (Σ_j n_ij² − n) / (n (n − 1)) and
        P_e = Σ_j p_j² (p_j = share of all ratings in category j). 1 = perfect agreement, ≤ 0 = chance or worse;
        NaN when all ratings fall in one category (P_e = 1).
    """
    t = np.asarray(counts)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise InvalidInput(f"The count table has shape {t.shape}; (subjects, categories) counts are needed.")
    if t.dtype.kind not in "iuf" or (t.dtype.kind == "f" and not np.array_equal(t, np.round(t))) or t.min() < 0:
        raise InvalidInput("The count table must hold whole numbers of raters (≥ 0).")
    return _fleiss(t.astype(np.int64), np.ones(t.shape[0], np.int64))


def _fleiss(table: np.ndarray, weight: np.ndarray) -> float:
    """Fleiss' kappa of distinct rows `table` (r × categories) each occurring `weight` times."""
    n_raters = table.sum(axis=1)
    if np.any(n_raters != n_raters[0]) or n_raters[0] < 2:
        raise InvalidInput("Every subject must be rated by the same number of raters, at least 2.")
    n, total = float(n_raters[0]), float(weight.sum())
    p_j = (weight[:, None] * table).sum(axis=0) / (total * n)
    p_i = ((table.astype(np.float64) ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = float((weight * p_i).sum() / total), float((p_j**2).sum())
    return (p_bar - p_e) / (1.0 - p_e) if p_e < 1.0 else math.nan


@dataclasses.dataclass
class StapleResult:
    """SimpleITK's STAPLE on the raters' maps: binary per class, and multi-label."""

    probability: np.ndarray  # (C, Z, Y, X) float32: binary STAPLE probability of each class (background included)
    sensitivity: dict[int, tuple[float, ...]]  # label → per-rater sensitivity (NaN for classes not run)
    specificity: dict[int, tuple[float, ...]]
    labels: np.ndarray  # multi-label STAPLE, undecided voxels given the majority vote


def staple(
    votes: np.ndarray,
    labels: Sequence[int],
    index_maps: Sequence[np.ndarray],
    majority: np.ndarray,
    workers: int | None = None,
) -> StapleResult:
    """Binary STAPLE per class (threads; a class no rater or every rater drew is not run) and multi-label STAPLE.

    `votes` (C, Z, Y, X) counts per class, `index_maps` the raters' class-index maps, `majority` the majority vote
    (label values) that undecided voxels of the multi-label result take.
    """
    import SimpleITK as sitk

    k, c = len(index_maps), len(labels)
    probability = np.zeros(votes.shape, np.float32)
    nan = (math.nan,) * k

    def binary(ci: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        v = votes[ci]
        if not v.any() or v.min() == k:  # SimpleITK answers NaN everywhere for these
            probability[ci] = 1.0 if v.any() else 0.0
            return nan, nan
        f = sitk.STAPLEImageFilter()
        f.SetForegroundValue(float(ci))
        prob = f.Execute([sitk.GetImageFromArray(m) for m in index_maps])  # own images per thread: no shared state
        probability[ci] = sitk.GetArrayViewFromImage(prob)
        return tuple(f.GetSensitivity()), tuple(f.GetSpecificity())

    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, c))) as pool:  # ITK's STAPLE runs on one thread
        performance = list(pool.map(binary, range(c)))
    sensitivity = {lab: performance[ci][0] for ci, lab in enumerate(labels) if lab != 0}
    specificity = {lab: performance[ci][1] for ci, lab in enumerate(labels) if lab != 0}
    if np.isnan(probability).any():
        log.warning("SimpleITK STAPLE returned NaN probabilities for some voxels (no convergence).")

    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(c)
    fused = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in index_maps]))
    undecided = fused == c
    fused[undecided] = 0
    labels_arr = np.asarray(labels).astype(majority.dtype)
    fused_labels = np.where(undecided, majority, labels_arr[fused])
    log.debug("multi-label STAPLE: %d undecided voxel(s) set to the majority vote", int(undecided.sum()))
    return StapleResult(probability, sensitivity, specificity, fused_labels)
