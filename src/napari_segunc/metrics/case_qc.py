"""Case-level quality control: per-case uncertainty scores, and how well they find the cases that failed.

Seed 001 §4.1 (refer the uncertain cases to a human) measured as ValUES measures failure detection
(``IML-DKFZ/values``, ``evaluation/uncertainty_aggregation/aggregate_uncertainties.py`` and
``evaluation/metrics/aurc.py``), so the numbers compare with its benchmark.

Per case (`case_scores`), from an uncertainty map over the whole image:

- ``<map>_image``: ValUES' image-level aggregation, the **sum** of the map over the image
  (``image_level_aggregation`` with its default ``mean=False``);
- ``<map>_patch``: ValUES' patch-level aggregation, the largest **sum** of the map over any `PATCH` × `PATCH` ×
  `PATCH` voxel patch inside the image (``patch_level_aggregation``: ``scipy.signal.convolve(map, ones, "valid")``,
  its maximum; here with compiled running sums in float64, in linear time). An image thinner than the patch along
  an axis takes its whole extent along it;
- ``entropy_foreground``: the mean predictive entropy over the predicted foreground (every organ voxel of the
  segmentation; NaN when it has none).

Over cases (`failure_detection`): risk = 1 − the case's Dice, confidence = −score (ValUES ``get_risk`` and
``get_confid``); AURC and E-AURC of fd-shifts' ``rc_curve_stats`` (`napari_segunc.metrics.ranking.risk_coverage`,
equal to ValUES ``aurc`` / ``eaurc``); and the AUROC of the score for detecting the failed cases (Dice below a
threshold), ties counted ½ (sklearn ``roc_auc_score``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInput
from . import _kernels
from .ranking import RiskCoverage, risk_coverage
from .volume import Result

__all__ = [
    "PATCH",
    "SCORES",
    "FailureDetection",
    "case_scores",
    "cohort_cases",
    "failure_detection",
    "patch_max",
]

#: ValUES' patch size (``aggregation_patch_image.yaml``: ``patch_size: 10``).
PATCH = 10

#: The case scores, in table order (`case_scores` gives those its maps allow).
SCORES = (
    "entropy_foreground",
    "entropy_image",
    "entropy_patch",
    "mutual_information_image",
    "mutual_information_patch",
)


def patch_max(a: np.ndarray, size: int = PATCH, *, use_numba: bool = True) -> float:
    """The largest sum of the 3D map `a` over a ``size``-wide box (each axis; the whole axis when shorter), as
    ValUES' ``patch_level_aggregation`` (compiled running sums in float64; `use_numba=False`: the numpy twin)."""
    a = np.asarray(a)
    if a.ndim != 3 or a.size == 0:
        raise InvalidInput(f"A patch maximum needs a non-empty 3D map, got shape {a.shape}.")
    return (_kernels.patch_max if use_numba else _kernels.patch_max_numpy)(a, size)


def case_scores(
    entropy: np.ndarray, segmentation: np.ndarray, mutual_information: np.ndarray | None = None
) -> dict[str, Result]:
    """The case's scores (module docstring) from its whole-image maps; MI scores are NaN without the map."""
    e = np.asarray(entropy)
    seg = np.asarray(segmentation)
    if e.shape != seg.shape:
        raise InvalidInput(f"The entropy map is {e.shape} voxels and the segmentation {seg.shape}; they must match.")
    fg = seg != 0
    out = {
        "entropy_foreground": (
            Result(float(np.mean(e[fg], dtype=np.float64)), None)
            if fg.any()
            else Result(math.nan, "no predicted foreground")
        ),
        "entropy_image": Result(float(np.sum(e, dtype=np.float64)), None),
        "entropy_patch": Result(patch_max(e), None),
    }
    if mutual_information is None:
        reason = "needs the ensemble's mutual information (members)"
        out["mutual_information_image"] = out["mutual_information_patch"] = Result(math.nan, reason)
    else:
        mi = np.asarray(mutual_information)
        out["mutual_information_image"] = Result(float(np.sum(mi, dtype=np.float64)), None)
        out["mutual_information_patch"] = Result(patch_max(mi), None)
    return out


@dataclass
class FailureDetection:
    """How well one score finds the failed cases."""

    score: str
    cases: int
    failures: int
    threshold: float
    aurc: float
    eaurc: float
    auroc: Result
    curve: RiskCoverage

    def row(self) -> dict:
        return {
            "score": self.score,
            "cases": self.cases,
            "failures": self.failures,
            "dice_threshold": self.threshold,
            "aurc": self.aurc,
            "eaurc": self.eaurc,
            "auroc": self.auroc.value,
            "auroc_reason": self.auroc.reason or "",
        }


def _auroc(positive: np.ndarray, score: np.ndarray) -> Result:
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return Result(math.nan, "every case failed" if n_neg == 0 else "no case failed")
    ranks = rankdata(score)  # average ranks: a tie between a failure and a success counts ½
    return Result(float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)), None)


def failure_detection(
    scores: Mapping[str, Sequence[float]], dice: Sequence[float], *, threshold: float = 0.8
) -> list[FailureDetection]:
    """AURC, E-AURC and the AUROC of detecting Dice < `threshold`, for each score (higher = less sure), over cases.

    Cases whose Dice or score is NaN are left out of that score's numbers.
    """
    d = np.asarray(dice, dtype=np.float64)
    if not 0 < threshold <= 1:
        raise InvalidInput(f"The Dice threshold of a failure must lie in (0, 1]; got {threshold}.")
    out = []
    for name, values in scores.items():
        s = np.asarray(values, dtype=np.float64)
        if s.shape != d.shape:
            raise InvalidInput(f"Score '{name}' has {s.size} cases and the Dice {d.size}; one value per case each.")
        ok = np.isfinite(s) & np.isfinite(d)
        if not ok.any():
            raise InvalidInput(f"Score '{name}' has no case with both a value and a Dice.")
        risk, score = 1.0 - d[ok], s[ok]
        curve = risk_coverage(risk, -score)
        failed = d[ok] < threshold
        out.append(
            FailureDetection(
                name,
                int(ok.sum()),
                int(failed.sum()),
                threshold,
                curve.aurc.value,
                curve.eaurc.value,
                _auroc(failed, score),
                curve,
            )
        )
    return out


def cohort_cases(
    rows: Sequence[Mapping], *, group_column: str = "group", dice_metric: str = "dice_consensus"
) -> dict[str, dict[str, dict[str, float]]]:
    """``{group: {case: {"dice": …, score: …}}}`` from a tidy results table (evaluate-cohort, study): the case's
    Dice is the mean over its organs of `dice_metric` (rater ``consensus``; NaN organs left out), its scores the
    ``qc_<score>`` rows. A table without `group_column` is one group, ``"all"``."""
    out: dict[str, dict[str, dict[str, list[float] | float]]] = {}
    for r in rows:
        metric, value = str(r.get("metric", "")), r.get("value")
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        case = out.setdefault(str(r.get(group_column) or "all"), {}).setdefault(str(r.get("case", "")), {})
        if metric == dice_metric and r.get("rater") == "consensus":
            case.setdefault("_dice", []).append(value)
        elif metric.startswith("qc_") and metric[3:] in SCORES:
            case[metric[3:]] = value
    for cases in out.values():
        for case in cases.values():
            organs = [v for v in case.pop("_dice", []) if not math.isnan(v)]
            case["dice"] = float(np.mean(organs)) if organs else math.nan
    return out
