"""Rater agreement: K label maps of one image turned into soft labels, disagreement maps and agreement tables.

Definitions (K raters, classes c = background 0 + every non-zero label any rater used or `labels` names, ordered by
label value; votes n_c = number of raters saying c at a voxel):

- soft label p_c = n_c / K; rater variance p_c (1 − p_c) (the "ground-truth uncertainty" used by NCC);
- vote entropy −Σ_c p_c ln p_c in nats with 0·ln 0 = 0 (``normalized=True`` divides by ln C; 0 when C = 1);
- majority vote = label with most votes, ties → lowest label value (background wins a 1–1 tie between 2 raters);
- consensus mask of c: all K raters say c; dissensus mask of c: some but not all raters say c;
- STAPLE (Warfield et al. 2004) is SimpleITK's, not a re-implementation: one binary ``STAPLEImageFilter`` per class
  gives the probability that a voxel truly is c and each rater's sensitivity/specificity for c;
  ``MultiLabelSTAPLEImageFilter`` gives the consensus label map, its undecided voxels (tied probabilities) set to
  the majority vote. A binary STAPLE mask is ``staple_probability[c] > 0.5`` (maximum a posteriori; exactly 0.5 is
  a tie and stays out; SimpleITK's own notebooks also use 0.95 for a conservative reference). SimpleITK returns NaN
  for a class no rater drew (or every rater drew everywhere): such classes are not run; their probability is 0 (or
  1) and their sensitivity/specificity NaN. With one rater drawing a class the others lack, STAPLE stops at once
  with that rater's sensitivity 1, the others' 0 and probability 1/K there: read it as "no evidence", not a verdict.
  The multi-label filter is given the class indices 0..C−1, not the label values: with gaps in the values (1, 5,
  117...) ITK's EM keeps an identity confusion matrix and leaves every voxel two raters dispute undecided.
- Dice between two raters for class c = 2|A∩B| / (|A| + |B|); NaN when neither drew c (nothing to compare; 1 would
  inflate averages with classes absent from the image, 0 would punish agreement).
- Fleiss' kappa (Fleiss 1971) per class: class c vs not c with the voxels as subjects; NaN when every rating falls
  in one category (P_e = 1, chance-corrected agreement undefined).

One responsibility, the raters' maps and tables; kept in one module past 400 lines (the pairwise scores and STAPLE
are in `napari_segunc.uncertainty.agreement`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from ..volume import Volume, check_same_grid
from .agreement import class_kappa, pairwise_dice
from .agreement import staple as run_staple
from .checks import names_by_value

__all__ = [
    "AGREEMENT_COLUMNS",
    "AgreementKind",
    "ModelRaterAgreement",
    "RaterAnalysis",
    "RaterVotes",
    "analyze_raters",
    "model_vs_raters",
    "rater_votes",
]

log = logging.getLogger(__name__)

#: Column order of `RaterAnalysis.agreement_rows`.
AGREEMENT_COLUMNS = ("kind", "label", "name", "rater_a", "rater_b", "value")


class AgreementKind(str, enum.Enum):
    """What a row of `RaterAnalysis.agreement_rows` measures."""

    DICE = "dice"  # one pair of raters (rater_a, rater_b)
    FLEISS_KAPPA = "fleiss_kappa"  # all raters together (rater_a, rater_b empty)
    STAPLE_SENSITIVITY = "staple_sensitivity"  # one rater (rater_a) against the STAPLE estimate
    STAPLE_SPECIFICITY = "staple_specificity"


class ModelRaterAgreement(enum.IntEnum):
    """Codes of `model_vs_raters`."""

    AGREE = 0  # raters unanimous and the model says the same
    MODEL_ERROR = 1  # raters unanimous, the model differs: a clear model error
    DISPUTED_MODEL_OFF_MAJORITY = 2  # raters disagree and the model differs from their majority vote
    DISPUTED_MODEL_MAJORITY = 3  # raters disagree and the model follows their majority vote


@dataclasses.dataclass(eq=False)
class RaterVotes:
    """How many raters chose each class at each voxel. Works from one rater on (soft labels need no disagreement).

    Attributes
    ----------
    votes : ndarray, shape (C, Z, Y, X), uint8 (uint16 beyond 255 raters)
    labels : tuple of int
        Label value of each class index, background 0 first, increasing.
    label_names : dict of int to str
        ``labels`` names, ``"background"`` for 0, ``"label <value>"`` for unnamed values.
    names : tuple of str
        Rater names, in input order.
    missing_labels : dict of int to list of str
        Non-zero labels that some raters never drew → those raters' names (also logged as a warning).
    soft_labels : ndarray, shape (C, Z, Y, X), float32
        Fraction of raters choosing each class (computed on first access).
    """

    votes: np.ndarray
    labels: tuple[int, ...]
    label_names: dict[int, str]
    names: tuple[str, ...]
    missing_labels: dict[int, list[str]]

    @property
    def n_raters(self) -> int:
        return len(self.names)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.votes.shape[1:])

    def index(self, label: int) -> int:
        """Class index of a label value; `InvalidInput` when no rater drew it and `labels` does not name it."""
        if label not in self.labels:
            raise InvalidInput(f"Label {label} is not among the raters' labels {list(self.labels)}.")
        return self.labels.index(label)

    @functools.cached_property
    def soft_labels(self) -> np.ndarray:  # a plain field in RaterAnalysis
        return np.divide(self.votes, np.float32(self.n_raters), out=np.empty(self.votes.shape, np.float32))


@dataclasses.dataclass(eq=False)
class RaterAnalysis(RaterVotes):
    """Disagreement maps and agreement tables of K ≥ 2 raters (see the module docstring for definitions).

    Attributes
    ----------
    votes, labels, label_names, names, missing_labels, soft_labels
        As in `RaterVotes`.
    vote_entropy : ndarray, shape (Z, Y, X), float32
        Nats, or fraction of ln C when `normalized`.
    rater_variance : ndarray, shape (C, Z, Y, X), float32
    majority : ndarray, shape (Z, Y, X)
        Majority-vote label map (ties → lowest label). Label maps are uint8 (uint16/uint32 for larger labels).
    majority_votes : ndarray, shape (Z, Y, X), uint8
        Number of raters agreeing with `majority` (K = unanimous).
    consensus : ndarray, shape (Z, Y, X)
        Label c where all K raters say c ≠ 0, else 0.
    dissensus : ndarray, shape (Z, Y, X)
        Where raters disagree: the most-voted non-background label (ties → lowest), else 0.
    staple : ndarray or None
        Multi-label STAPLE label map (undecided voxels → majority vote); ``None`` when run with ``staple=False``.
    staple_probability : ndarray, shape (C, Z, Y, X), float32, or None
        Binary STAPLE probability of each class (background included).
    sensitivity, specificity : dict of int to tuple of float
        Per non-zero label, each rater's STAPLE sensitivity/specificity (rater order); NaN when not estimable.
    pairwise_dice : list of dict
        Rows ``rater_a, rater_b, label, name, dice`` for each pair i < j and each non-zero label.
    fleiss_kappa : dict of int to float
        Per non-zero label, Fleiss' kappa of "c vs not c" over all voxels or the `roi`.
    normalized : bool
    """

    soft_labels: np.ndarray = dataclasses.field()  # shadows the base class's cached property
    vote_entropy: np.ndarray
    rater_variance: np.ndarray
    majority: np.ndarray
    majority_votes: np.ndarray
    consensus: np.ndarray
    dissensus: np.ndarray
    normalized: bool = False
    staple: np.ndarray | None = None
    staple_probability: np.ndarray | None = None
    sensitivity: dict[int, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    specificity: dict[int, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    pairwise_dice: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    fleiss_kappa: dict[int, float] = dataclasses.field(default_factory=dict)

    def consensus_mask(self, label: int) -> np.ndarray:
        """Boolean (Z, Y, X): every rater says `label`."""
        return self.votes[self.index(label)] == self.n_raters

    def dissensus_mask(self, label: int) -> np.ndarray:
        """Boolean (Z, Y, X): some but not all raters say `label`."""
        v = self.votes[self.index(label)]
        return (v > 0) & (v < self.n_raters)

    def agreement_rows(self) -> list[dict[str, Any]]:
        """Tidy rows (keys `AGREEMENT_COLUMNS`) for a CSV: Dice per pair, kappa, then STAPLE per rater; NaN kept."""
        rows = [
            _row(AgreementKind.DICE, r["label"], r["name"], r["rater_a"], r["rater_b"], r["dice"])
            for r in self.pairwise_dice
        ]
        rows += [
            _row(AgreementKind.FLEISS_KAPPA, c, self.label_names[c], None, None, k)
            for c, k in self.fleiss_kappa.items()
        ]
        for kind, table in (
            (AgreementKind.STAPLE_SENSITIVITY, self.sensitivity),
            (AgreementKind.STAPLE_SPECIFICITY, self.specificity),
        ):
            for c, values in table.items():
                rows += [
                    _row(kind, c, self.label_names[c], n, None, v) for n, v in zip(self.names, values, strict=True)
                ]
        return rows


def _row(kind: AgreementKind, label: int, name: str, a: str | None, b: str | None, value: float) -> dict[str, Any]:
    return dict(zip(AGREEMENT_COLUMNS, (kind.value, int(label), name, a, b, float(value)), strict=True))


# ---------------------------------------------------------------------------------------------------- inputs
def rater_arrays(raters: Sequence[Volume | np.ndarray], names: Sequence[str] | None) -> tuple[list, list[str]]:
    """Validated integer (Z, Y, X) arrays and rater names; grids checked against the first rater."""
    if isinstance(raters, Volume | np.ndarray) and np.ndim(getattr(raters, "data", raters)) == 3:
        raters = [raters]
    raters = list(raters)
    if not raters:
        raise InvalidInput("No rater segmentation was given; load at least one label map per rater.")
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(raters):
            raise InvalidInput(f"{len(names)} rater name(s) were given for {len(raters)} rater segmentation(s).")
        if len(set(names)) != len(names):
            raise InvalidInput(f"Rater names must differ from each other; got {names}.")
    else:
        names = [r.name if isinstance(r, Volume) else f"rater {i + 1}" for i, r in enumerate(raters)]
        names = [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]
    arrays = []
    for r, name in zip(raters, names, strict=True):
        a = r.data if isinstance(r, Volume) else np.asarray(r)
        if a.ndim != 3:
            raise InvalidInput(f"Rater '{name}' has shape {a.shape}; a 3D (z, y, x) label map is needed.")
        if isinstance(r, Volume) and isinstance(raters[0], Volume):
            check_same_grid(raters[0], r)
        elif arrays and a.shape != arrays[0].shape:
            raise GeometryMismatch(
                f"Rater '{name}' has shape {a.shape} (z, y, x) but '{names[0]}' has {arrays[0].shape}; "
                "all raters must segment the same image grid."
            )
        if a.dtype == bool:
            a = a.view(np.uint8)
        elif a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
                raise InvalidInput(f"Rater '{name}' holds non-integer values; an integer label map is needed.")
            a = a.astype(np.int64)
        elif a.dtype.kind not in "iu":
            raise InvalidInput(f"Rater '{name}' holds {a.dtype} values; an integer label map is needed.")
        if a.dtype.kind == "i" and a.size and a.min() < 0:
            raise InvalidInput(f"Rater '{name}' contains negative labels; labels must be 0 (background) or more.")
        arrays.append(a)
    return arrays, names


def _present(a: np.ndarray) -> np.ndarray:
    """Sorted label values present in `a` (numpy ≥ 2 finds them without sorting the volume)."""
    unique = getattr(np, "unique_values", np.unique)
    return np.sort(unique(a.reshape(-1)))


def _prepare(raters, names, labels) -> tuple[RaterVotes, list[np.ndarray]]:
    arrays, names = rater_arrays(raters, names)
    label_names = names_by_value(labels)
    present = [set(_present(a).tolist()) for a in arrays]
    values = sorted({0} | set(label_names) | set().union(*present))
    label_names = {v: label_names.get(v, f"label {v}") for v in values}
    missing = {v: [n for n, p in zip(names, present, strict=True) if v not in p] for v in values[1:]}
    missing = {v: ns for v, ns in missing.items() if ns}
    if missing:
        log.warning(
            "labels missing in some raters: %s",
            "; ".join(f"{v} ({label_names[v]}) in {', '.join(ns)}" for v, ns in missing.items()),
        )
    c = len(values)
    idx_dtype = np.uint8 if c < 256 else np.uint16  # index c stays free for STAPLE's "undecided"
    shape = arrays[0].shape
    votes = np.zeros((c, *shape), np.uint8 if len(arrays) < 256 else np.uint16)
    position = {v: i for i, v in enumerate(values)}
    index_maps = []
    for a, p in zip(arrays, present, strict=True):
        if values[-1] < 1 << 20:
            lut = np.zeros(values[-1] + 1, idx_dtype)
            lut[values] = np.arange(c, dtype=idx_dtype)
            idx = lut[a]
        else:
            idx = np.searchsorted(np.asarray(values), a).astype(idx_dtype)
        for v in p:
            votes[position[v]] += idx == position[v]
        index_maps.append(idx)
    return RaterVotes(votes, tuple(values), label_names, tuple(names), missing), index_maps


def rater_votes(
    raters: Sequence[Volume | np.ndarray],
    *,
    names: Sequence[str] | None = None,
    labels: Mapping[str, int] | None = None,
) -> RaterVotes:
    """Count the raters' votes per class (one rater is enough); ``rater_votes(...).soft_labels`` gives p_c.

    Parameters
    ----------
    raters : sequence of Volume or ndarray, each (Z, Y, X) integer labels
        Volumes are checked with `check_same_grid` against the first; arrays need the same shape.
    names : sequence of str, optional
        Rater names; default the volumes' names, else ``"rater 1"``, ``"rater 2"``...
    labels : mapping of str to int, optional
        Structure name → label value; named labels no rater drew still get a class (all votes 0).

    Raises
    ------
    InvalidInput
        No rater, non-integer or negative labels, wrong dimensionality, names not matching the raters.
    GeometryMismatch
        A rater on another grid (the message names its file).
    """
    return _prepare(raters, names, labels)[0]


# ---------------------------------------------------------------------------------------------------- analysis
def analyze_raters(
    raters: Sequence[Volume | np.ndarray],
    *,
    names: Sequence[str] | None = None,
    labels: Mapping[str, int] | None = None,
    roi: np.ndarray | None = None,
    normalized: bool = False,
    staple: bool = True,
    workers: int | None = None,
) -> RaterAnalysis:
    """Disagreement maps and agreement numbers of K ≥ 2 raters' label maps of one image.

    Parameters
    ----------
    raters, names, labels
        As in `rater_votes`. Labels missing in some raters are reported in ``missing_labels`` (and logged).
    roi : ndarray of bool, shape (Z, Y, X), optional
        Voxels over which Fleiss' kappa is computed (default all); nothing else is restricted.
    normalized : bool
        Divide the vote entropy by ln C (0..1; stays 0 when background is the only class).
    staple : bool
        Run SimpleITK's STAPLE (about 6 s per class per 30 million voxels and thread); ``False`` leaves
        ``staple``/``staple_probability`` ``None`` and the sensitivity/specificity tables empty.
    workers : int, optional
        Threads running the per-class STAPLE filters (default ``min(4, CPUs)``); each holds about (K + 8) bytes per
        voxel.

    Returns
    -------
    RaterAnalysis
        Memory: about 9 bytes per voxel and class (votes, soft labels, variance) plus 4 more with STAPLE; votes are
        counted in integers, never in K × C float copies.

    Raises
    ------
    InvalidInput
        Fewer than 2 raters, or the inputs `rater_votes` refuses; an empty or misshapen `roi`.
    GeometryMismatch
        A rater on another grid (the message names its file).
    """
    votes, index_maps = _prepare(raters, names, labels)
    k, c = votes.n_raters, len(votes.labels)
    if k < 2:
        raise InvalidInput(
            f"at least 2 raters are needed to measure disagreement; got 1: {votes.names[0]}. Add another rater's "
            "segmentation (soft labels of a single rater are available from rater_votes)."
        )
    if roi is not None:
        roi = np.asarray(roi)
        if roi.shape != votes.shape:
            raise GeometryMismatch(f"The ROI has shape {roi.shape} (z, y, x) but the raters have {votes.shape}.")
        roi = roi if roi.dtype == bool else roi != 0
        if not roi.any():
            raise InvalidInput("The region of interest is empty; Fleiss' kappa needs at least one voxel in it.")
    n = np.arange(k + 1) / k
    with np.errstate(divide="ignore", invalid="ignore"):
        h_lut = np.nan_to_num(-n * np.log(n)).astype(np.float32)  # −p ln p of every possible vote fraction
    entropy, term = np.zeros(votes.shape, np.float32), np.empty(votes.shape, np.float32)
    for v in votes.votes:
        entropy += np.take(h_lut, v, out=term)
    if normalized:
        entropy /= np.float32(math.log(c)) if c > 1 else np.float32(1)
    soft = votes.soft_labels
    variance = np.square(soft)
    np.subtract(soft, variance, out=variance)  # p (1 − p) without a second temporary
    labels_arr = np.asarray(votes.labels)
    out_dtype = np.uint8 if labels_arr[-1] < 256 else np.uint16 if labels_arr[-1] < 1 << 16 else np.uint32
    arg, best = _argmax_first(votes.votes, 0)
    majority = labels_arr.astype(out_dtype)[arg]
    unanimous = best == k
    consensus = np.where(unanimous, majority, 0).astype(out_dtype, copy=False)
    fg_arg = _argmax_first(votes.votes, 1)[0] if c > 1 else arg
    dissensus = np.where(unanimous, 0, labels_arr.astype(out_dtype)[fg_arg]).astype(out_dtype, copy=False)
    result = RaterAnalysis(
        votes.votes,
        votes.labels,
        votes.label_names,
        votes.names,
        votes.missing_labels,
        soft,
        entropy,
        variance,
        majority,
        best,
        consensus,
        dissensus,
        normalized,
    )
    result.pairwise_dice = pairwise_dice(index_maps, votes.labels, votes.label_names, votes.names)
    result.fleiss_kappa = {lab: class_kappa(votes.votes[i], k, roi) for i, lab in enumerate(votes.labels) if lab != 0}
    if staple:
        fused = run_staple(votes.votes, votes.labels, index_maps, majority, workers)
        result.staple_probability, result.staple = fused.probability, fused.labels
        result.sensitivity.update(fused.sensitivity)
        result.specificity.update(fused.specificity)
    return result


def _argmax_first(votes: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Class index with most votes from `start` on (first on ties) and its vote count, without int64 temporaries."""
    arg = np.full(votes.shape[1:], start, np.uint8 if len(votes) <= 256 else np.uint16)
    best = votes[start].copy()
    for i in range(start + 1, len(votes)):
        better = votes[i] > best
        arg[better] = i
        np.maximum(best, votes[i], out=best)
    return arg, best


def model_vs_raters(segmentation: Volume | np.ndarray, analysis: RaterAnalysis) -> np.ndarray:
    """Where a model's segmentation agrees with the raters, codes `ModelRaterAgreement`.

    Parameters
    ----------
    segmentation : Volume or ndarray, shape (Z, Y, X), integer labels
        E.g. the ensemble's argmax, on the raters' grid, with the raters' label values.
    analysis : RaterAnalysis

    Returns
    -------
    ndarray of uint8, shape (Z, Y, X)
        0 raters unanimous and model equal; 1 raters unanimous, model differs; 2 raters disagree and model ≠
        majority vote; 3 raters disagree and model = majority vote (ties → lowest label, as in ``majority``).
    """
    seg = segmentation.data if isinstance(segmentation, Volume) else np.asarray(segmentation)
    if seg.shape != analysis.shape:
        raise GeometryMismatch(
            f"The segmentation has shape {seg.shape} (z, y, x) but the raters have {analysis.shape}; "
            "both must come from the same image grid."
        )
    if seg.dtype.kind not in "iub":
        raise InvalidInput(f"The segmentation holds {seg.dtype} values; an integer label map is needed.")
    same = seg == analysis.majority
    unanimous = analysis.majority_votes == analysis.n_raters
    return np.where(unanimous, ~same, 2 + same).astype(np.uint8)
