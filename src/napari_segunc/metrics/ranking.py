"""Does the uncertainty rank the errors first? Error-detection AUROC and the risk–coverage curve (AURC, E-AURC).

Conventions: ``entropy`` is the predictive entropy per voxel; ``prediction`` the predicted class index per voxel
(or the (C, …) probabilities, whose argmax is taken); ``raters`` K arrays of class indices. A (voxel, rater) pair is
an error when the prediction differs from that rater.

- AUROC: positives = error pairs, negatives = the others, pooled over raters; score = entropy (higher = more likely
  an error); tied scores count ½. Equal to sklearn ``roc_auc_score`` on the explicitly pooled K·N pairs, but computed
  from one sort of the N voxels with per-voxel weights (errors, K − errors). No positive or no negative → NaN.
- Risk–coverage (fd-shifts ``rc_curve_stats`` as used by ValUES ``evaluation/metrics/aurc.py``): risk per voxel =
  fraction of raters disagreeing with the prediction, confidence = −entropy. Voxels are removed least confident
  first (``np.argsort(confids)``, numpy's default sort, so tie order is the reference's own); a curve point is
  recorded when the removed voxel's confidence differs from the previous one, each with the weight of the voxels
  removed since the last point, and a final point at coverage 0 closes the curve. AURC = Σ (r_j + r_{j+1})/2 · w_j;
  E-AURC = AURC − the AURC of the optimal ordering (risks sorted ascending, ValUES ``eaurc``). The vectorised version
  equals the published loop on the same input (it sorts with the same call, so even ties come out identical).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from .volume import Result

__all__ = ["RiskCoverage", "aurc_from_maps", "error_detection_auroc", "error_ranking", "risk_coverage"]

_MAX_PLOT_POINTS = 1000


class RiskCoverage(NamedTuple):
    """The risk–coverage curve and its areas."""

    coverage: np.ndarray
    selective_risk: np.ndarray
    weights: np.ndarray
    aurc: Result
    eaurc: Result

    def thinned(self, max_points: int = _MAX_PLOT_POINTS) -> tuple[np.ndarray, np.ndarray]:
        """(coverage, selective risk) with at most `max_points` points, first and last kept (for plotting)."""
        n = len(self.coverage)
        if n <= max_points:
            return self.coverage, self.selective_risk
        keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
        return self.coverage[keep], self.selective_risk[keep]


# ---------------------------------------------------------------------------------------------------- inputs
def _errors(entropy, prediction, raters: Sequence) -> tuple[np.ndarray, np.ndarray, int]:
    """(entropy as a flat array, number of disagreeing raters per voxel (flat int), K)."""
    e = np.asarray(entropy)
    if e.dtype.kind != "f":
        raise InvalidInput(f"The entropy map must be floating point; got {e.dtype}.")
    pred = np.asarray(prediction)
    if pred.dtype.kind == "f":
        if pred.ndim != e.ndim + 1:
            raise InvalidInput(f"Probabilities of shape {pred.shape} do not fit the entropy map {e.shape}.")
        pred = np.argmax(pred, axis=0)
    if pred.shape != e.shape:
        raise GeometryMismatch(f"The prediction has shape {pred.shape} but the entropy map has {e.shape}.")
    if not raters:
        raise InvalidInput("At least one rater is needed.")
    n_err = np.zeros(e.shape, np.int32)
    for k, r in enumerate(raters):
        r = np.asarray(r)
        if r.shape != e.shape:
            raise GeometryMismatch(f"Rater {k + 1} has shape {r.shape} but the entropy map has {e.shape}.")
        n_err += r != pred
    flat = e.ravel()
    if not np.isfinite(flat).all():
        raise InvalidInput("The entropy map contains NaN or infinite values.")
    return flat, n_err.ravel(), len(raters)


def _order(confids: np.ndarray) -> np.ndarray:
    return np.argsort(confids)  # the reference's own call (default kind): identical tie order


def _new_group(sorted_confids: np.ndarray) -> np.ndarray:
    """True where a value differs from its predecessor (index 0 True)."""
    starts = np.empty(sorted_confids.size, bool)
    starts[:1] = True
    np.not_equal(sorted_confids[1:], sorted_confids[:-1], out=starts[1:])
    return starts


# ---------------------------------------------------------------------------------------------------- AUROC
def _auroc_sorted(n_err_sorted: np.ndarray, k: int, starts: np.ndarray) -> Result:
    """AUROC from voxels sorted by confidence ascending = entropy descending, tie groups at `starts`."""
    pos_total = int(n_err_sorted.sum(dtype=np.int64))
    neg_total = k * n_err_sorted.size - pos_total
    if pos_total == 0:
        return Result(math.nan, "no error: the prediction agrees with every rater everywhere (AUROC undefined)")
    if neg_total == 0:
        return Result(math.nan, "no correct voxel: the prediction disagrees with every rater (AUROC undefined)")
    idx = np.flatnonzero(starts)
    pos = np.add.reduceat(n_err_sorted.astype(np.int64), idx).astype(np.float64)
    size = np.diff(np.append(idx, n_err_sorted.size)).astype(np.float64)
    neg = k * size - pos
    # groups run from the highest entropy to the lowest: negatives with a lower score come after
    neg_after = neg[::-1].cumsum()[::-1] - neg
    return Result(float((np.sum(pos * neg_after) + 0.5 * np.sum(pos * neg)) / (pos_total * float(neg_total))), None)


def error_detection_auroc(entropy, prediction, raters: Sequence) -> Result:
    """AUROC of the entropy for detecting (voxel, rater) disagreements (module docstring)."""
    e, n_err, k = _errors(entropy, prediction, raters)
    confids = -e
    order = _order(confids)
    return _auroc_sorted(n_err[order], k, _new_group(confids[order]))


# ---------------------------------------------------------------------------------------------------- AURC
def _rc_sorted(risk_sorted: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = risk_sorted.size
    total = float(np.sum(risk_sorted))
    if n < 2:
        return np.array([1.0]), np.array([total / max(n, 1)]), np.zeros(0)
    cums = np.cumsum(risk_sorted[:-1])
    i = np.flatnonzero(starts[: n - 1])  # loop steps i = 0 … n − 2 that record a point
    left = n - 1 - i
    coverage = np.concatenate([[1.0], left / n])
    risks = np.concatenate([[total / n], (total - cums[i]) / left])
    weights = np.diff(np.concatenate([[-1], i])) / n
    tail = (n - 2) - i[-1]
    if tail > 0:
        coverage = np.append(coverage, 0.0)
        risks = np.append(risks, risks[-1])
        weights = np.append(weights, tail / n)
    return coverage, risks, weights


def _curve(risk: np.ndarray, confids: np.ndarray, order: np.ndarray, starts: np.ndarray | None = None) -> RiskCoverage:
    starts = _new_group(confids[order]) if starts is None else starts
    coverage, sel, weights = _rc_sorted(risk[order], starts)
    aurc = float(np.sum((sel[:-1] + sel[1:]) * 0.5 * weights)) if weights.size else 0.0
    n = risk.size
    optimal = float(np.sum(np.cumsum(np.sort(risk)) / np.arange(1, n + 1)) / n)
    return RiskCoverage(coverage, sel, weights, Result(aurc, None), Result(aurc - optimal, None))


def risk_coverage(risk, confidence) -> RiskCoverage:
    """The fd-shifts / ValUES risk–coverage curve of per-sample `risk` and `confidence` (1D, same length)."""
    r = np.asarray(risk, dtype=np.float64).ravel()
    c = np.asarray(confidence).ravel()
    if r.size != c.size or r.size == 0:
        raise InvalidInput(f"risk and confidence need the same non-zero length; got {r.size} and {c.size}.")
    return _curve(r, c, _order(c))


def aurc_from_maps(entropy, prediction, raters: Sequence) -> RiskCoverage:
    """Risk = fraction of raters disagreeing per voxel, confidence = −entropy (module docstring)."""
    e, n_err, k = _errors(entropy, prediction, raters)
    confids = -e
    return _curve(n_err / k, confids, _order(confids))


@numba.njit(cache=True)
def _ranking_pass(order, confids, n_err, k, pos_total):  # pragma: no cover - compiled
    """One pass over the voxels in `order`: AUROC numerator and the rc_curve_stats points, as the published loop."""
    n = order.size
    neg_total = k * n - pos_total
    coverage = np.empty(n + 1, np.float64)
    risks = np.empty(n + 1, np.float64)
    weights = np.empty(n, np.float64)
    error_sum = 0.0
    for i in range(n):
        error_sum += n_err[order[i]] / k
    coverage[0] = 1.0
    risks[0] = error_sum / n
    m = 1
    tmp = 0
    auc = 0.0
    neg_seen = 0.0
    g_pos = 0.0
    g_neg = 0.0
    for i in range(n):
        v = order[i]
        e = n_err[v]
        new = i == 0 or confids[v] != confids[order[i - 1]]
        if new and i > 0:  # close the previous tie group (entropy descending)
            neg_seen += g_neg
            auc += g_pos * (neg_total - neg_seen) + 0.5 * g_pos * g_neg
            g_pos = 0.0
            g_neg = 0.0
        g_pos += e
        g_neg += k - e
        if i < n - 1:
            error_sum -= e / k
            tmp += 1
            if new:
                coverage[m] = (n - 1 - i) / n
                risks[m] = error_sum / (n - 1 - i)
                weights[m - 1] = tmp / n
                m += 1
                tmp = 0
    neg_seen += g_neg
    auc += g_pos * (neg_total - neg_seen) + 0.5 * g_pos * g_neg
    if tmp > 0:
        coverage[m] = 0.0
        risks[m] = risks[m - 1]
        weights[m - 1] = tmp / n
        m += 1
    return auc, coverage[:m], risks[:m], weights[: m - 1]


@numba.njit(cache=True)
def _optimal_aurc_kernel(counts, k):  # pragma: no cover - compiled
    total = 0.0
    running = 0.0
    j = 0
    for value in range(counts.size):
        r = value / k
        for _ in range(counts[value]):
            j += 1
            running += r
            total += running / j
    return total / j


def _optimal_aurc(n_err: np.ndarray, k: int) -> float:
    """ValUES AURC of the optimal ordering (risks sorted ascending); the risks take only K + 1 values, so the sorted
    sequence is known from their counts and no sort is needed."""
    return float(_optimal_aurc_kernel(np.bincount(n_err, minlength=k + 1), k))


def error_ranking(entropy, prediction, raters: Sequence) -> tuple[Result, RiskCoverage]:
    """`error_detection_auroc` and `aurc_from_maps` from a single sort and one compiled pass (what the suite uses).

    Equal to the two functions (tested); the curve's running error sum is updated by subtraction, as the loop does.
    """
    e, n_err, k = _errors(entropy, prediction, raters)
    confids = -e
    order = _order(confids)
    pos_total = int(n_err.sum(dtype=np.int64))
    auc, coverage, sel, weights = _ranking_pass(order, confids, n_err, k, pos_total)
    neg_total = k * n_err.size - pos_total
    if pos_total == 0:
        auroc = Result(math.nan, "no error: the prediction agrees with every rater everywhere (AUROC undefined)")
    elif neg_total == 0:
        auroc = Result(math.nan, "no correct voxel: the prediction disagrees with every rater (AUROC undefined)")
    else:
        auroc = Result(float(auc / (pos_total * float(neg_total))), None)
    aurc = float(np.sum((sel[:-1] + sel[1:]) * 0.5 * weights)) if weights.size else 0.0
    curve = RiskCoverage(coverage, sel, weights, Result(aurc, None), Result(aurc - _optimal_aurc(n_err, k), None))
    return auroc, curve
