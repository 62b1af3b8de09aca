"""One case → one tidy table of every accuracy, calibration and uncertainty metric (`evaluate_case`).

Inputs: the class probabilities P of a model or ensemble (background first, or organ channels only with background
= 1 − Σ organs), K rater label maps on the same grid, the voxel spacing and the organs (label value → name).
Label values of the raters are mapped to P's channels through the organs' values (channel i holds the i-th organ
in increasing label order); a rater label that is not an evaluated organ counts as background.

Modes (`Mode`):

- ``native``: the definitions in ``docs/metrics.md`` (and the metric modules' docstrings). Everything except the
  volumes is computed inside the ROI: the bounding box of all raters' organ voxels ∪ the predicted organs, padded by
  `roi_margin` (20) voxels, clipped to the image (never wrapping). Volumes (CRPS) use the whole image.
- ``curvas``: the official CURVAS 2024 evaluation's numbers: in-plane crop to the bounding box of CT > 0 (the
  `image` is needed for it, otherwise nothing is cropped and a warning is logged), its row-wise Dice, its confidence,
  its CRPS (in voxels, the official default ``voxel_proportion=1``) and its 4-class torchmetrics ECE per rater.
  The official code works on the arrays as SimpleITK reads the files, and its crop and row-wise Dice depend on that
  axis order; so when `image` is a `Volume` read from a file, every array is first put back into that file's own
  array order (`napari_segunc.volume.array_to_source`), and a file not stored in LPS axial order gives the
  official numbers too (`CaseEvaluation.roi` is then in the file's order).

Output rows (`CaseEvaluation.rows`, one per organ × metric × rater or aggregate) have the columns of `COLUMNS`:
``organ`` is the organ's name or ``"all"`` for whole-ROI metrics; ``rater`` is a rater name, ``"mean"`` (the mean
over raters of the per-rater values, NaN ones left out), ``"consensus"`` (computed against the raters' consensus)
or ``"pooled"`` (all (voxel, rater) pairs together). A NaN value always has its ``reason``. Nothing raises on an
empty organ, a single rater or an absent label: those give NaN rows with reasons.

One responsibility, the per-case metric table in both modes; kept in one module past 400 lines.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from ..uncertainty.raters import RaterVotes
from ..volume import Volume, array_to_source
from . import _kernels
from . import calibration as cal
from . import overlap as ov
from . import ranking as rk
from ._kernels import argmax as _argmax
from ._kernels import entropy as _entropy
from ._kernels import probability_stats as _probability_stats
from .case_qc import case_scores
from .uncertainty_metrics import confidence, entropy_summaries, rater_variance_ncc
from .volume import CRPSMode, Result, VolumeUnit, volume_crps, voxel_volume_ml

__all__ = ["COLUMNS", "CaseEvaluation", "Mode", "evaluate_case", "prepare_probabilities"]

log = logging.getLogger(__name__)

#: Columns of every result row, in order.
COLUMNS = ("case", "mode", "organ", "label", "metric", "rater", "value", "unit", "reason")

_SUM_ATOL = 1e-3  # Σ_c p_c = 1 tolerance, as the ensemble accumulator
_RANGE_ATOL = 1e-6


class Mode(str, enum.Enum):
    """Which definitions `evaluate_case` uses."""

    NATIVE = "native"
    CURVAS = "curvas"


@dataclasses.dataclass
class CaseEvaluation:
    """Result of `evaluate_case`.

    Attributes
    ----------
    rows : list of dict
        The tidy table (keys `COLUMNS`).
    roi : tuple of slice
        The (z, y, x) box every ROI metric was computed in (curvas mode with an image read from a file: in that
        file's array order).
    calibration : calibration.Calibration or None
        Top-label calibration with the reliability-diagram data (native mode).
    risk_coverage : ranking.RiskCoverage or None
        The risk–coverage curve (native mode).
    """

    rows: list[dict[str, Any]]
    roi: tuple[slice, slice, slice]
    calibration: Any = None
    risk_coverage: Any = None

    def value(self, metric: str, organ: str = "all", rater: str = "mean") -> float:
        """The value of one row (KeyError when absent)."""
        for row in self.rows:
            if row["metric"] == metric and row["organ"] == organ and row["rater"] == rater:
                return float(row["value"])
        raise KeyError(f"no row metric={metric!r} organ={organ!r} rater={rater!r}")


# ---------------------------------------------------------------------------------------------------- inputs
def _organs(labels: Mapping[str, int] | None, n_channels: int, raters: Sequence[np.ndarray]) -> dict[int, str]:
    """Organ label value → name, in increasing value order."""
    if labels:
        organs = {int(v): str(k) for k, v in labels.items() if int(v) != 0}
        if len(set(labels.values()) - {0}) != len(organs):
            raise InvalidInput(f"Two organs share a label value in {dict(labels)}; each needs its own.")
        return dict(sorted(organs.items()))
    return {i: f"label {i}" for i in range(1, n_channels)}


def prepare_probabilities(probabilities: np.ndarray, n_organs: int) -> np.ndarray:
    """(C, Z, Y, X) with background first: checked, and the background channel added when only organs are given.

    Raises `InvalidInput` for NaN, values off [0, 1], sums off 1 (with background) or above 1 (organs only), or a
    channel count that matches neither ``n_organs + 1`` nor ``n_organs``.
    """
    p = np.asarray(probabilities)
    if p.ndim != 4 or p.dtype.kind != "f":
        raise InvalidInput(f"Class probabilities must be a float (C, Z, Y, X) array; got {p.dtype} {p.shape}.")
    if p.shape[0] not in (n_organs, n_organs + 1):
        raise InvalidInput(
            f"The probabilities have {p.shape[0]} channels but {n_organs} organ(s) are evaluated; give background + "
            f"one channel per organ ({n_organs + 1}) or the organ channels only ({n_organs}), and name the organs "
            "with --labels in channel order."
        )
    lo, hi, sum_lo, sum_hi = _probability_stats(p)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidInput("The class probabilities contain NaN or infinite values.")
    if lo < -_RANGE_ATOL or hi > 1 + _RANGE_ATOL:
        raise InvalidInput(
            f"The class probabilities range from {lo:g} to {hi:g}; they must lie in [0, 1] (softmax outputs, not "
            "logits)."
        )
    if p.shape[0] == n_organs + 1:
        off = max(abs(sum_lo - 1.0), abs(sum_hi - 1.0))
        if off > _SUM_ATOL:
            raise InvalidInput(
                f"The class probabilities sum to 1 ± {off:.3g} at some voxels (tolerance {_SUM_ATOL}); they are not "
                "normalised. If the background channel is missing, give the organ channels only."
            )
        return p
    if sum_hi > 1 + _SUM_ATOL:
        raise InvalidInput(f"The organ probabilities sum to {sum_hi:.4g} at some voxels; the sum must not exceed 1.")
    total = np.sum(p, axis=0, dtype=np.float32)
    background = np.clip(1.0 - total, 0.0, 1.0).astype(p.dtype)[None]
    return np.concatenate([background, p], axis=0)


def _class_indices(rater: np.ndarray, organ_values: Sequence[int], name: str) -> np.ndarray:
    """Rater label values → channel indices (0 background, i for the i-th organ); other labels → background."""
    a = np.asarray(rater)
    if a.dtype.kind not in "iub":
        raise InvalidInput(f"Rater '{name}' holds {a.dtype} values; a label map of integers is needed.")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        raise InvalidInput(f"Rater '{name}' has negative label values ({lo}); label maps use 0 for background.")
    if list(organ_values) == list(range(1, len(organ_values) + 1)) and hi <= len(organ_values):
        return a if a.dtype == np.uint8 else a.astype(np.uint8)  # labels 1…n are already the channel indices
    lut = np.zeros(max(hi, max(organ_values, default=0)) + 1, np.uint8)
    for i, v in enumerate(organ_values, start=1):
        lut[v] = i
    present = np.flatnonzero(np.bincount(a.ravel())) if hi < 65536 else np.unique(a)
    other = sorted(set(int(v) for v in present) - set(organ_values) - {0})
    if other:
        log.info("rater '%s': labels %s are not evaluated organs and count as background", name, other[:20])
    return lut[a]


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice] | None:
    if not mask.any():
        return None
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------- rows
class _Table:
    def __init__(self, case: str, mode: Mode) -> None:
        self.case, self.mode, self.rows = case, mode.value, []

    def add(self, organ: str, label: Any, metric: str, rater: str, result: Result | float, unit: str = "") -> None:
        r = result if isinstance(result, Result) else Result(float(result), None)
        value = float(r.value)
        reason = r.reason if math.isnan(value) else None
        if math.isnan(value) and not reason:
            reason = "not defined for this input"
        self.rows.append(
            dict(
                case=self.case,
                mode=self.mode,
                organ=organ,
                label=label,
                metric=metric,
                rater=rater,
                value=value,
                unit=unit,
                reason=reason,
            )
        )

    def per_rater(
        self, organ: str, label: Any, metric: str, names: Sequence[str], results: Sequence[Result | float], unit=""
    ) -> None:
        """One row per rater and their mean (NaN ones left out; NaN with the reasons when all are NaN)."""
        rs = [r if isinstance(r, Result) else Result(float(r), None) for r in results]
        for name, r in zip(names, rs, strict=True):
            self.add(organ, label, metric, name, r, unit)
        self.add(organ, label, metric, "mean", _mean(rs), unit)


def _mean(results: Sequence[Result]) -> Result:
    values = [r.value for r in results if not math.isnan(r.value)]
    if values:
        return Result(float(np.mean(values)), None)
    reasons = sorted({r.reason or "undefined" for r in results})
    return Result(math.nan, "; ".join(reasons) or "no rater")


# ---------------------------------------------------------------------------------------------------- the suite
def evaluate_case(
    probabilities: np.ndarray,
    raters: Sequence[Volume | np.ndarray],
    *,
    spacing: Sequence[float],
    labels: Mapping[str, int] | None = None,
    mode: Mode | str = Mode.NATIVE,
    image: Volume | np.ndarray | None = None,
    ensemble: Any = None,
    rater_names: Sequence[str] | None = None,
    case: str = "case",
    roi_margin: int = 20,
    array_order: Sequence[float] | None = None,
) -> CaseEvaluation:
    """Evaluate one case: accuracy, calibration and uncertainty of the probabilities against the raters.

    Parameters
    ----------
    probabilities : ndarray, shape (C, Z, Y, X), float
        Class probabilities, background first (C = organs + 1), or the organ channels only (C = organs).
    raters : sequence of Volume or ndarray, each (Z, Y, X) integer label map
        One or more raters on the probabilities' grid.
    spacing : 3 floats
        Voxel size in mm, (z, y, x).
    labels : mapping name → label value, optional
        The organs, in channel order of increasing value (default: channel i is label i).
    mode : Mode
        ``native`` or ``curvas`` (module docstring).
    image : Volume or ndarray, optional
        The CT, for the curvas in-plane crop to CT > 0.
    ensemble : EnsembleMaps or mapping, optional
        The ensemble's maps (``entropy``, ``expected_entropy``, ``mutual_information``) on the full grid; without it
        the predictive entropy is computed from `probabilities` and the two member-based summaries are NaN.
    rater_names : sequence of str, optional
        Default ``rater1``, ``rater2``, …
    case : str
        Written in the ``case`` column.
    roi_margin : int
        Voxels added on each side of the native ROI box.
    array_order : 9 floats, optional
        Curvas mode: the ITK direction of the file whose array order the official code reads (default: the
        `image` Volume's source file, when it has one).

    Returns
    -------
    CaseEvaluation
    """
    mode = Mode(mode)
    arrays = [r.data if isinstance(r, Volume) else np.asarray(r) for r in raters]
    if not arrays:
        raise InvalidInput("At least one rater's label map is needed to evaluate a case.")
    names = list(rater_names) if rater_names else [f"rater{k + 1}" for k in range(len(arrays))]
    if len(names) != len(arrays) or len(set(names)) != len(names):
        raise InvalidInput(f"Rater names {names} must be unique, one per rater ({len(arrays)}).")
    p_in = np.asarray(probabilities)
    for name, a in zip(names, arrays, strict=True):
        if a.shape != p_in.shape[1:]:
            raise GeometryMismatch(
                f"Rater '{name}' has shape {a.shape} (z, y, x) but the probabilities have {p_in.shape[1:]}; "
                "they must be on the same image grid (resample the label map onto the image first)."
            )
    voxel_volume_ml(spacing)  # validates the spacing
    organs = _organs(labels, p_in.shape[0], arrays)
    p = prepare_probabilities(p_in, len(organs))
    values = list(organs)
    classes = [_class_indices(a, values, n) for a, n in zip(arrays, names, strict=True)]
    table = _Table(case, mode)
    if mode is Mode.CURVAS:
        if array_order is None and isinstance(image, Volume) and image.source is not None:
            array_order = image.source.direction
        if array_order is not None:  # the official code's array order: the file's own (module docstring)
            p = np.ascontiguousarray(array_to_source(p, array_order))
            classes = [np.ascontiguousarray(array_to_source(c, array_order)) for c in classes]
            if image is not None:
                data = image.data if isinstance(image, Volume) else np.asarray(image)
                image = array_to_source(data, array_order) if data.ndim == 3 else data
        roi = _curvas_crop(image, p.shape[1:])
        _curvas(table, p, classes, organs, names, roi)
        return CaseEvaluation(table.rows, roi)
    return _native(table, p, classes, organs, names, spacing, ensemble, roi_margin)


def _native(table, p, classes, organs, names, spacing, ensemble, margin) -> CaseEvaluation:
    full_shape = p.shape[1:]
    pred_full = _argmax(p)
    foreground = pred_full != 0
    for c in classes:
        foreground |= c != 0
    roi = _bbox(foreground, margin) or tuple(slice(0, n) for n in full_shape)
    del foreground
    pc = p[(slice(None), *roi)]
    pred = pred_full[roi]
    cls = [np.ascontiguousarray(c[roi]) for c in classes]
    k = len(cls)
    entropy_full = _full_map(ensemble, "entropy")
    if entropy_full is None:
        entropy_full = _entropy(p)  # the whole image: the case's QC scores sum it there
    mi_full = _full_map(ensemble, "mutual_information")
    maps = {
        "entropy": _crop(entropy_full, roi),
        "expected_entropy": _crop(_full_map(ensemble, "expected_entropy"), roi),
        "mutual_information": _crop(mi_full, roi),
    }
    maps["segmentation"] = pred
    entropy = maps["entropy"]

    with ThreadPoolExecutor(max_workers=min(2, len(organs)) or 1) as pool:  # ITK's STAPLE runs on one thread
        staples = list(pool.map(lambda i: ov.staple_consensus([c == i for c in cls]), range(1, len(organs) + 1)))
    for i, (value, organ) in enumerate(organs.items(), start=1):
        masks = [c == i for c in cls]
        votes = masks[0].astype(np.uint8)
        for m in masks[1:]:
            votes += m
        consensus, dissensus = votes == k, (votes > 0) & (votes < k)
        pred_o = pred == i
        table.add(organ, value, "dice_consensus", "consensus", ov.consensus_dice(pred_o, consensus, dissensus))
        table.per_rater(organ, value, "dice", names, [ov.dice(pred_o, m) for m in masks])
        table.add(organ, value, "dice_staple", "consensus", ov.staple_dice(pred_o, masks, consensus=staples[i - 1]))
        # p > 0.1 may reach outside the ROI, where no rater votes: counted there on the whole image
        above = _kernels.count_above(p[i], ov.CURVAS2025_THRESHOLDS) - _kernels.count_above(
            pc[i], ov.CURVAS2025_THRESHOLDS
        )
        table.add(
            organ,
            value,
            "dice_thresholded",
            "consensus",
            ov.thresholded_dice_from_votes(pc[i], votes, k, above_elsewhere=above),
        )
        surfaces = ov.surface_distances_many(pred_o, masks, spacing)
        for metric in ("hd95", "hd100", "assd"):
            table.per_rater(organ, value, metric, names, [getattr(s, metric) for s in surfaces], "mm")
        organ_votes = RaterVotes(
            votes=votes[None], labels=(1,), label_names={1: organ}, names=tuple(names), missing_labels={}
        )
        table.add(organ, value, "confidence", "consensus", confidence(pc[i], organ_votes, label=1))
        table.add(
            organ,
            value,
            "crps_volume",
            "consensus",
            volume_crps(p[i], classes, spacing=spacing, label=i, mode=CRPSMode.NATIVE),
            "ml",
        )
        ece, mce = cal.organ_calibration(pc[i], masks)
        table.add(organ, value, "ece_organ", "mean", ece)
        table.add(organ, value, "mce_organ", "mean", mce)
        table.add(organ, value, "ncc", "consensus", rater_variance_ncc(entropy, organ_votes, label=1))
        for key, r in entropy_summaries(maps, organ=i).items():
            if key.endswith("_organ"):
                table.add(organ, value, key.removesuffix("_organ"), "prediction", r, "nats")

    calib = cal.top_label_calibration(pc, cls)
    table.per_rater("all", "", "ece", names, [Result(float(v), None) for v in calib.ece_per_rater])
    table.per_rater("all", "", "mce", names, [Result(float(v), None) for v in calib.mce_per_rater])
    table.add("all", "", "ace", "pooled", calib.ace)
    auroc, rc = rk.error_ranking(entropy, pred, cls)
    table.add("all", "", "auroc", "pooled", auroc)
    table.add("all", "", "aurc", "pooled", rc.aurc)
    table.add("all", "", "eaurc", "pooled", rc.eaurc)
    for key, r in entropy_summaries(maps).items():
        table.add("all", "", key.removesuffix("_roi"), "roi", r, "nats")
    for key, r in case_scores(entropy_full, pred_full, mi_full).items():  # case-level QC (metrics.case_qc)
        table.add("all", "", f"qc_{key}", "case", r, "nats")
    return CaseEvaluation(table.rows, roi, calibration=calib, risk_coverage=rc)


def _full_map(ensemble: Any, name: str) -> np.ndarray | None:
    if ensemble is None:
        return None
    found = ensemble.get(name) if isinstance(ensemble, Mapping) else getattr(ensemble, name, None)
    return None if found is None else np.asarray(found)


def _crop(a: Any, roi: tuple[slice, ...]) -> np.ndarray | None:
    return None if a is None else np.asarray(a)[roi]


# ---------------------------------------------------------------------------------------------------- curvas
def _curvas_crop(image: Volume | np.ndarray | None, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """The official in-plane crop: the (y, x) bounding box of CT > 0 over all slices (z is never cropped)."""
    full = tuple(slice(0, n) for n in shape)
    if image is None:
        log.warning("curvas mode without the CT image: the official in-plane crop to CT > 0 is not applied")
        return full
    ct = image.data if isinstance(image, Volume) else np.asarray(image)
    if ct.shape != shape:
        raise GeometryMismatch(f"The image has shape {ct.shape} (z, y, x) but the probabilities have {shape}.")
    box = _bbox(ct > 0, 0)
    if box is None:
        log.warning("curvas mode: the image has no voxel > 0; nothing is cropped")
        return full
    return (full[0], box[1], box[2])


def _curvas(table, p, classes, organs, names, roi) -> None:
    organ_p = p[(slice(1, None), *roi)]
    pred = _argmax(p[(slice(None), *roi)])
    cls = [c[roi] for c in classes]
    k = len(cls)
    for i, (value, organ) in enumerate(organs.items(), start=1):
        masks = [c == i for c in cls]
        votes = np.sum(masks, axis=0, dtype=np.uint8)
        consensus, dissensus = votes == k, (votes > 0) & (votes < k)
        keep = ~dissensus
        table.add(organ, value, "dice_consensus", "consensus", ov.curvas_dice((pred == i) & keep, consensus & keep))
        table.add(organ, value, "confidence", "consensus", confidence(organ_p[i - 1], masks, label=1))
        table.add(
            organ,
            value,
            "crps_volume",
            "consensus",
            volume_crps(
                organ_p[i - 1], cls, spacing=(1.0, 1.0, 1.0), label=i, mode=CRPSMode.CURVAS, unit=VolumeUnit.VOXELS
            ),
            "voxels",
        )
    eces = cal.curvas_multirater_ece(organ_p, cls)
    table.per_rater("all", "", "ece", names, [Result(float(v), None) for v in eces])
