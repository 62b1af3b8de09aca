"""Evaluate a prediction as a viewer holds it: a segmentation, with or without its class probabilities.

`evaluate_prediction` wraps `suite.evaluate_case` (the same rows, the same definitions):

- With class probabilities, they are evaluated as by ``segunc evaluate``; the suite's prediction is their argmax, so
  a segmentation that differs from it (e.g. edited by hand) is reported in `PredictionEvaluation.notes`.
- With a segmentation only, the suite runs on its one-hot probabilities and every metric that needs real
  probabilities (calibration, confidence, entropy, NCC, error ranking) becomes NaN with the reason `NO_PROBABILITIES`;
  overlap, surface and volume metrics (`SEGMENTATION_METRICS`) keep their values. The one-hot array costs
  (organs + 1) × 4 bytes per voxel while the suite runs.

`organ_table` turns the tidy rows into one row per organ with one aggregate value per metric (what the Metrics
widget shows and copies).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from ._kernels import argmax
from .compare import AGGREGATES
from .suite import CaseEvaluation, Mode, evaluate_case, prepare_probabilities

__all__ = [
    "MAIN_METRICS",
    "NO_PROBABILITIES",
    "SEGMENTATION_METRICS",
    "PredictionEvaluation",
    "evaluate_prediction",
    "one_hot",
    "organ_table",
]

#: Metrics that a segmentation alone defines (the others need class probabilities).
SEGMENTATION_METRICS = frozenset({"dice_consensus", "dice", "hd95", "hd100", "assd", "crps_volume", "dice_staple"})

#: Reason of the NaN rows of a segmentation-only evaluation.
NO_PROBABILITIES = "needs the class probabilities; only a segmentation was given"

#: Column order of `organ_table` (metrics the suite adds later go after these, in the suite's order).
MAIN_METRICS = (
    "dice_consensus",
    "dice",
    "hd95",
    "hd100",
    "assd",
    "crps_volume",
    "dice_staple",
    "dice_thresholded",
    "confidence",
    "ece_organ",
    "mce_organ",
    "ncc",
    "mean_entropy",
    "mean_expected_entropy",
    "mean_mutual_information",
    "ece",
    "mce",
    "ace",
    "auroc",
    "aurc",
    "eaurc",
)


@dataclasses.dataclass
class PredictionEvaluation:
    """Result of `evaluate_prediction`.

    Attributes
    ----------
    evaluation : CaseEvaluation
        The suite's rows (and reliability / risk–coverage data when probabilities were given, native mode).
    labels : dict
        The organs evaluated, name → label value.
    with_probabilities : bool
        Whether class probabilities were given.
    notes : tuple of str
        Sentences for the user (segmentation-only evaluation, segmentation ≠ argmax of the probabilities).
    """

    evaluation: CaseEvaluation
    labels: dict[str, int]
    with_probabilities: bool
    notes: tuple[str, ...] = ()

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.evaluation.rows


def _label_map(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a.view(np.uint8)
    if a.dtype.kind not in "iu":
        raise InvalidInput(f"The {what} holds {a.dtype} values; a label map of integers is needed.")
    if a.size and int(a.min()) < 0:
        raise InvalidInput(f"The {what} has negative label values; label maps use 0 for background.")
    return a


def _lut(organ_values: Sequence[int], top: int) -> np.ndarray:
    """Label value → channel index (0 background, i for the i-th organ); other values → background."""
    lut = np.zeros(max(top, max(organ_values, default=0)) + 1, np.uint8)
    for i, v in enumerate(organ_values, start=1):
        lut[v] = i
    return lut


def one_hot(segmentation: np.ndarray, organ_values: Sequence[int]) -> np.ndarray:
    """(C, Z, Y, X) float32 one-hot probabilities of a label map: channel 0 background (and every label that is not
    in `organ_values`), channel i the i-th of `organ_values` (C = len(organ_values) + 1)."""
    seg = _label_map(segmentation, "segmentation")
    channels = _lut(organ_values, int(seg.max(initial=0)))[seg]
    out = np.zeros((len(organ_values) + 1, *seg.shape), np.float32)
    for c in range(len(organ_values) + 1):
        np.equal(channels, c, out=out[c], casting="unsafe")
    return out


def _labels_present(arrays: Sequence[np.ndarray]) -> dict[str, int]:
    values: set[int] = set()
    for a in arrays:
        values |= {int(v) for v in np.unique(a)}
    return {f"label {v}": v for v in sorted(values - {0})}


def evaluate_prediction(
    segmentation: np.ndarray,
    raters: Sequence[np.ndarray],
    *,
    spacing: Sequence[float],
    probabilities: np.ndarray | None = None,
    labels: Mapping[str, int] | None = None,
    mode: Mode | str = Mode.NATIVE,
    image: np.ndarray | None = None,
    rater_names: Sequence[str] | None = None,
    case: str = "case",
    array_order: Sequence[float] | None = None,
) -> PredictionEvaluation:
    """Evaluate a segmentation (and, when given, its class probabilities) against raters with `evaluate_case`.

    Parameters
    ----------
    segmentation : ndarray, shape (Z, Y, X), integer
        The predicted label map (label values as in `labels`).
    raters : sequence of ndarray, each (Z, Y, X) integer
        At least one rater label map on the same grid.
    spacing : 3 floats
        Voxel size in mm, (z, y, x).
    probabilities : ndarray, shape (C, Z, Y, X), float, optional
        Class probabilities, background first or organ channels only (as `evaluate_case`). Without them only the
        `SEGMENTATION_METRICS` have values.
    labels : mapping name → label value, optional
        The organs. Default: with probabilities, channel i is label i; without, every non-zero label of the
        segmentation and the raters (named ``label 1``, …).
    mode, image, rater_names, case, array_order
        As `evaluate_case`.

    Returns
    -------
    PredictionEvaluation

    Raises
    ------
    InvalidInput
        No rater, a map that is not a label map, or probabilities the suite refuses.
    GeometryMismatch
        The segmentation, raters and probabilities are not all of the same (Z, Y, X) shape.
    """
    seg = _label_map(segmentation, "segmentation")
    raters = [np.asarray(r) for r in raters]
    if not raters:
        raise InvalidInput("Choose at least one rater's label map: the metrics compare the prediction with raters.")
    names = list(rater_names) if rater_names else [f"rater{k + 1}" for k in range(len(raters))]
    for name, r in zip(names, raters, strict=False):
        if r.shape != seg.shape:
            raise GeometryMismatch(
                f"Rater '{name}' has shape {r.shape} (z, y, x) but the segmentation has {seg.shape}; they must be on "
                "the same image grid."
            )
    notes: list[str] = []
    if probabilities is None:
        organs = dict(labels) if labels else _labels_present([seg, *raters])
        if not organs:
            raise InvalidInput("The segmentation and the raters hold no organ label (every voxel is 0).")
        values = sorted(int(v) for v in organs.values() if int(v) != 0)
        result = evaluate_case(
            one_hot(seg, values),
            raters,
            spacing=spacing,
            labels=organs,
            mode=mode,
            image=image,
            rater_names=names,
            case=case,
            array_order=array_order,
        )
        for row in result.rows:
            if row["metric"] not in SEGMENTATION_METRICS:
                row["value"], row["reason"] = math.nan, NO_PROBABILITIES
        result.calibration = result.risk_coverage = None
        notes.append(
            "Segmentation only: overlap, surface and volume metrics; the calibration and uncertainty "
            "metrics need class probabilities."
        )
        return PredictionEvaluation(result, organs, False, tuple(notes))

    p = np.asarray(probabilities)
    if p.ndim != 4 or p.shape[1:] != seg.shape:
        raise GeometryMismatch(
            f"The probabilities have shape {p.shape} but a (C, {', '.join(map(str, seg.shape))}) array on the "
            "segmentation's grid is needed."
        )
    organs = dict(labels) if labels else {f"label {i}": i for i in range(1, p.shape[0])}
    values = sorted(int(v) for v in organs.values() if int(v) != 0)
    p = prepare_probabilities(p, len(values))
    differ = int(np.count_nonzero(argmax(p) != _lut(values, int(seg.max(initial=0)))[seg]))
    if differ:
        notes.append(
            f"The segmentation differs from the argmax of the probabilities at {differ} voxel(s); the "
            "metrics use the argmax."
        )
    result = evaluate_case(
        p,
        raters,
        spacing=spacing,
        labels=labels,
        mode=mode,
        image=image,
        rater_names=names,
        case=case,
        array_order=array_order,
    )
    return PredictionEvaluation(result, organs, True, tuple(notes))


def organ_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[tuple[str, dict[str, Mapping[str, Any]]]]]:
    """One row per organ (then ``all``), one column per metric: the aggregate row (``mean`` over raters,
    ``consensus``, ``pooled``, …) of each (organ, metric).

    Returns
    -------
    metrics : list of str
        Column names, `MAIN_METRICS` first.
    table : list of (organ, {metric: row})
        Organs in the rows' order; a metric an organ has no aggregate row for is absent from its dict.
    """
    cells: dict[str, dict[str, Mapping[str, Any]]] = {}
    seen: list[str] = []
    for row in rows:
        if row["rater"] not in AGGREGATES:
            continue
        organ_cells = cells.setdefault(str(row["organ"]), {})
        organ_cells.setdefault(row["metric"], row)
        if row["metric"] not in seen:
            seen.append(row["metric"])
    metrics = [m for m in MAIN_METRICS if m in seen] + [m for m in seen if m not in MAIN_METRICS]
    organs = [o for o in cells if o != "all"] + (["all"] if "all" in cells else [])
    return metrics, [(o, cells[o]) for o in organs]
