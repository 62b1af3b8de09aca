"""Uncertainty against the raters: CURVAS confidence, VALUES NCC and entropy summaries of an ensemble.

Definitions (K raters, organ `label`, votes n = number of raters saying `label` at a voxel, everything restricted
to the region of interest when one is given):

- consensus G = {n = K} (every rater drew the organ), consensus background B = {n = 0} (no rater drew it);
- confidence = ½·[(1 − mean p over B) + mean p over G] with p the organ's predicted probability: 1 means certain and
  right on every voxel the raters agree on, 0.5 is a constant p, 0 certain and wrong (CURVAS 2024, as in the
  official ``consensus_dice_score``);
- rater variance p̄(1 − p̄), p̄ = n / K: the "ground-truth uncertainty" map (0 where raters agree, ¼ at a 50/50 split);
- NCC between two maps a, b over N voxels, ValUES convention (IML-DKFZ/values ``evaluation/metrics/ncc.py``):
  Σ (a − ā)(b − b̄) / (N · s_a · s_b) with s the sample standard deviation (ddof 1), i.e. Pearson's r · (N − 1)/N;
- entropy summaries: mean predictive entropy, expected entropy and mutual information over the ROI and over the
  predicted organ (voxels whose ensemble argmax is the organ's class), in the maps' unit (nats, or fractions of ln C).

NaN rules: a NaN voxel of an uncertainty map means "not computed" and is left out (never averaged or correlated);
±inf is refused. A `Result` is NaN, with its reason, when the voxels it needs do not exist: confidence without G or
B, NCC with fewer than 2 voxels or a constant map (undefined correlation), an entropy summary over an empty
predicted organ. Bad inputs (shapes, probabilities off [0, 1], an empty ROI) raise `InvalidInput`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from ..uncertainty.checks import check_map
from ..uncertainty.raters import RaterVotes, rater_votes
from ..volume import Volume
from .volume import Result, check_probability, check_roi

__all__ = ["ENTROPY_MAPS", "Result", "confidence", "entropy_summaries", "ncc", "rater_variance_ncc"]

log = logging.getLogger(__name__)

#: Maps summarised by `entropy_summaries` (attributes of `napari_segunc.uncertainty.EnsembleMaps`).
ENTROPY_MAPS = ("entropy", "expected_entropy", "mutual_information")

_CHUNK = 1 << 22  # voxels per slab in the NCC sums (bounded float64 temporaries)


# ---------------------------------------------------------------------------------------------------- inputs
def _organ_votes(raters: Sequence[Volume | np.ndarray] | RaterVotes, label: int) -> tuple[np.ndarray, int]:
    """(Z, Y, X) number of raters drawing `label`, and K."""
    votes = raters if isinstance(raters, RaterVotes) else rater_votes(raters)
    if label not in votes.labels:
        log.warning("no rater drew label %s (raters' labels: %s)", label, list(votes.labels))
        return np.zeros(votes.shape, np.uint8), votes.n_raters
    return votes.votes[votes.labels.index(label)], votes.n_raters


def _same_shape(a: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if a.shape != shape:
        raise GeometryMismatch(
            f"The {what} has shape {a.shape} (z, y, x) but the raters have {shape}; both must come from the same "
            "image grid."
        )


def _where(roi: np.ndarray | None) -> str:
    return " in the region of interest" if roi is not None else ""


# ---------------------------------------------------------------------------------------------------- confidence
def confidence(
    probability_map: Volume | np.ndarray,
    raters: Sequence[Volume | np.ndarray] | RaterVotes,
    *,
    label: int = 1,
    roi: np.ndarray | None = None,
) -> Result:
    """CURVAS confidence of one organ's probabilities on the voxels where the raters agree.

    Parameters
    ----------
    probability_map : Volume or ndarray, shape (Z, Y, X)
        The organ's predicted probability per voxel, in [0, 1].
    raters : sequence of Volume or ndarray, each (Z, Y, X) integer labels, or RaterVotes
        The raters' label maps (boolean masks with ``label=1``), or their votes from `rater_votes`/`analyze_raters`.
        One rater is allowed (G and B are then its organ and its background).
    label : int
        Label value of the organ.
    roi : ndarray of bool, shape (Z, Y, X), optional
        Only voxels inside count (default all; the official code uses the bounding box of CT > 0).

    Returns
    -------
    Result
        ½·[(1 − mean p over B) + mean p over G], between 0 and 1 (higher is better); NaN with the reason when no
        voxel has all raters drawing the organ (G empty) or none drawing it (B empty).

    Raises
    ------
    InvalidInput
        Probabilities off [0, 1] or NaN, bad rater maps, an empty ROI.
    GeometryMismatch
        The map, the raters or the ROI on different grids.
    """
    p = check_probability(probability_map)
    n, k = _organ_votes(raters, label)
    _same_shape(p, n.shape, "probability map")
    r = check_roi(roi, p.shape, "probability map")
    inside = (lambda m: m & r) if r is not None else (lambda m: m)
    consensus, background = inside(n == k), inside(n == 0)
    missing = []
    if not consensus.any():
        missing.append(f"no voxel{_where(r)} where all {k} rater(s) drew label {label}")
    if not background.any():
        missing.append(f"no voxel{_where(r)} where no rater drew label {label}")
    if missing:
        return Result(math.nan, "; ".join(missing))
    organ = float(np.mean(p[consensus], dtype=np.float64))
    back = float(np.mean(p[background], dtype=np.float64))
    return Result(0.5 * ((1.0 - back) + organ), None)


# ---------------------------------------------------------------------------------------------------- NCC
def _slabs(shape: tuple[int, ...]) -> Iterator[slice]:
    per_slice = int(np.prod(shape[1:])) or 1
    step = max(1, _CHUNK // per_slice)
    for z in range(0, shape[0], step):
        yield slice(z, z + step)


def _ncc(pairs: Any, names: tuple[str, str]) -> Result:
    """ValUES NCC from a callable yielding (a, b) float64 pieces of the selected voxels; passes: means, centred sums."""
    n, sums = 0, [0.0, 0.0]
    lows, highs = [math.inf, math.inf], [-math.inf, -math.inf]
    for pair in pairs():
        n += pair[0].size
        for i, m in enumerate(pair):
            if m.size:
                sums[i] += float(np.sum(m))
                lows[i], highs[i] = min(lows[i], float(m.min())), max(highs[i], float(m.max()))
    if n < 2:
        return Result(math.nan, f"fewer than 2 voxels to correlate ({n})")
    # min = max, not a zero sum of squares: a constant's mean is off by rounding and would correlate noise
    constant = [name for name, lo, hi in zip(names, lows, highs, strict=True) if lo == hi]
    if constant:
        verb = "is" if len(constant) == 1 else "are"
        return Result(math.nan, f"constant map: the {' and the '.join(constant)} {verb} the same in every voxel used")
    ma, mb = sums[0] / n, sums[1] / n
    saa, sbb, sab = 0.0, 0.0, 0.0
    for a, b in pairs():
        da, db = a - ma, b - mb
        saa += float(np.dot(da, da))
        sbb += float(np.dot(db, db))
        sab += float(np.dot(da, db))
    # Σ da·db / (N · s_a · s_b), s² = Σ d² / (N − 1)
    return Result(sab / (n * math.sqrt(saa / (n - 1)) * math.sqrt(sbb / (n - 1))), None)


def _valid(a: np.ndarray, b: np.ndarray, r: np.ndarray | None) -> np.ndarray | None:
    """Selection of the voxels to correlate in one slab (None = all)."""
    keep = r
    for m in (a, b):
        if m.dtype.kind == "f":
            nan = np.isnan(m)
            if nan.any():
                keep = ~nan if keep is None else keep & ~nan
    return keep


def ncc(
    a: Volume | np.ndarray,
    b: Volume | np.ndarray,
    *,
    roi: np.ndarray | None = None,
) -> Result:
    """Normalised cross-correlation of two maps, ValUES convention (Pearson r · (N − 1)/N).

    Parameters
    ----------
    a, b : Volume or ndarray, shape (Z, Y, X)
        E.g. a predicted uncertainty map and the raters' variance map. NaN voxels of either are left out.
    roi : ndarray of bool, shape (Z, Y, X), optional
        Only voxels inside count (default all).

    Returns
    -------
    Result
        Between −1 and 1 (exactly ±(N − 1)/N for a perfect linear relation); NaN with the reason ``"constant map:
        ..."`` when either map is constant over the voxels used, or ``"fewer than 2 voxels ..."``.

    Raises
    ------
    InvalidInput
        Not 3D, not floating point, ±inf; an empty ROI.
    GeometryMismatch
        The maps or the ROI of different shapes.
    """
    x = check_map(a.data if isinstance(a, Volume) else a)
    y = check_map(b.data if isinstance(b, Volume) else b)
    if x.shape != y.shape:
        raise GeometryMismatch(f"The two maps have shapes {x.shape} and {y.shape} (z, y, x); they must match.")
    r = check_roi(roi, x.shape, "maps")

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for s in _slabs(x.shape):
            xa, ya = x[s], y[s]
            keep = _valid(xa, ya, r[s] if r is not None else None)
            if keep is None:
                yield xa.astype(np.float64).ravel(), ya.astype(np.float64).ravel()
            else:
                yield xa[keep].astype(np.float64), ya[keep].astype(np.float64)

    return _ncc(pairs, ("first map", "second map"))


def rater_variance_ncc(
    uncertainty_map: Volume | np.ndarray,
    raters: Sequence[Volume | np.ndarray] | RaterVotes,
    *,
    label: int = 1,
    roi: np.ndarray | None = None,
) -> Result:
    """ValUES NCC between a predicted uncertainty map and the raters' variance p̄(1 − p̄) of the organ.

    Parameters
    ----------
    uncertainty_map : Volume or ndarray, shape (Z, Y, X), float
        E.g. the ensemble's predictive entropy (``EnsembleMaps.entropy``). NaN voxels are left out.
    raters : sequence of Volume or ndarray, each (Z, Y, X) integer labels, or RaterVotes
        The raters' label maps (boolean masks with ``label=1``) or their votes; p̄ = fraction drawing `label`.
    label : int
        Label value of the organ.
    roi : ndarray of bool, shape (Z, Y, X), optional
        Only voxels inside count (default all).

    Returns
    -------
    Result
        As `ncc`; NaN ``"constant map: the rater variance ..."`` when the raters agree on every voxel (one rater
        always), ``"constant map: the uncertainty map ..."`` when the prediction is equally uncertain everywhere.

    Raises
    ------
    InvalidInput, GeometryMismatch
        As `ncc` and `rater_votes`.
    """
    u = check_map(uncertainty_map.data if isinstance(uncertainty_map, Volume) else uncertainty_map)
    n, k = _organ_votes(raters, label)
    _same_shape(u, n.shape, "uncertainty map")
    r = check_roi(roi, u.shape, "uncertainty map")
    fraction = np.arange(k + 1, dtype=np.float64) / k
    variance_lut = fraction * (1.0 - fraction)  # p̄(1 − p̄) of every possible vote count

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for s in _slabs(u.shape):
            ua, na = u[s], n[s]
            keep = _valid(ua, na, r[s] if r is not None else None)
            if keep is None:
                yield ua.astype(np.float64).ravel(), variance_lut[na.ravel()]
            else:
                yield ua[keep].astype(np.float64), variance_lut[na[keep]]

    return _ncc(pairs, ("uncertainty map", "rater variance"))


# ---------------------------------------------------------------------------------------------------- entropy
def _get(maps: Any, name: str) -> Any:
    return maps.get(name) if isinstance(maps, Mapping) else getattr(maps, name, None)


def entropy_summaries(
    maps: Any,
    *,
    organ: int | None = None,
    roi: np.ndarray | None = None,
) -> dict[str, Result]:
    """Mean predictive entropy, expected entropy and mutual information over the ROI and the predicted organ.

    Parameters
    ----------
    maps : EnsembleMaps or mapping
        Anything with (Z, Y, X) float arrays ``entropy``, ``expected_entropy``, ``mutual_information`` and, for
        `organ`, ``segmentation`` (the ensemble's argmax class index), as attributes or keys. A missing map
        (``None``) gives NaN results.
    organ : int, optional
        Class index (channel) of the organ in the model's output; the organ region is ``segmentation == organ``
        within the ROI. Without it only the ROI summaries are computed.
    roi : ndarray of bool, shape (Z, Y, X), optional
        Region of interest (default the whole image).

    Returns
    -------
    dict of str to Result
        Keys ``mean_<map>_roi`` and, with `organ`, ``mean_<map>_organ`` for each map of `ENTROPY_MAPS`; values in the
        maps' unit (nats, or fractions of ln C for normalised maps). NaN voxels are left out; NaN with the reason
        when the organ is predicted nowhere (in the ROI) or no non-NaN voxel is left.

    Raises
    ------
    InvalidInput
        A map that is not 3D float or holds ±inf; a non-integer segmentation; an empty ROI.
    GeometryMismatch
        Maps, segmentation or ROI of different shapes.
    """
    arrays = {name: _get(maps, name) for name in ENTROPY_MAPS}
    arrays = {name: None if a is None else check_map(a) for name, a in arrays.items()}
    shapes = {a.shape for a in arrays.values() if a is not None}
    if not shapes:
        raise InvalidInput(f"None of the maps {', '.join(ENTROPY_MAPS)} was given; run the ensemble first.")
    if len(shapes) > 1:
        raise GeometryMismatch(f"The entropy maps have different shapes {sorted(shapes)}; they must match.")
    shape = shapes.pop()
    r = check_roi(roi, shape, "entropy maps")
    regions: dict[str, tuple[np.ndarray | None, str | None]] = {"roi": (r, None)}
    if organ is not None:
        seg = _get(maps, "segmentation")
        if seg is None:
            raise InvalidInput("The organ's summaries need the ensemble's segmentation (argmax), which is missing.")
        seg = np.asarray(seg)
        if seg.shape != shape or seg.dtype.kind not in "iub":
            raise InvalidInput(
                f"The segmentation must be integer class indices of shape {shape}; got {seg.dtype} {seg.shape}."
            )
        mask = seg == organ if r is None else (seg == organ) & r
        empty = None if mask.any() else f"the model predicts no voxel of class {organ}{_where(r)}"
        regions["organ"] = (mask, empty)
    out: dict[str, Result] = {}
    for region, (mask, empty) in regions.items():
        for name, a in arrays.items():
            key = f"mean_{name}_{region}"
            if empty:
                out[key] = Result(math.nan, empty)
            elif a is None:
                out[key] = Result(math.nan, f"the {name.replace('_', ' ')} map was not given")
            else:
                values = a[mask] if mask is not None else a.ravel()
                values = values[~np.isnan(values)] if np.isnan(values).any() else values
                out[key] = (
                    Result(float(np.mean(values, dtype=np.float64)), None)
                    if values.size
                    else Result(math.nan, f"every voxel of the {name.replace('_', ' ')} map is NaN there")
                )
    return out
