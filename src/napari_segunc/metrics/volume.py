"""Volume accuracy: CRPS of a predicted organ volume against the raters' volume distribution (CURVAS).

Definitions (K raters, organ `label`, volumes in ml unless ``unit=VolumeUnit.VOXELS``):

- rater volume v_k = number of voxels rater k labels `label` × voxel volume (∏ spacing / 1000 ml);
- predicted volume v = Σ p over the organ's probability map × voxel volume ("probabilistic volume": a voxel at
  p = 0.3 counts for 0.3 of a voxel);
- the raters define a Normal distribution N(μ, σ²) with μ = mean v_k and σ = population standard deviation
  (ddof 0), as the CURVAS challenge does;
- CRPS(F, v) = ∫ (F(x) − 1{x ≥ v})² dx, in the volumes' unit (ml); 0 is perfect, lower is better.

Two modes (`CRPSMode`):

- ``native``: the exact closed form for a Normal F (Gneiting & Raftery 2007),
  σ·[z(2Φ(z) − 1) + 2φ(z) − 1/√π] with z = (v − μ)/σ; when σ = 0 (raters agree, or one rater) F is a step and the
  CRPS is |v − μ|, the absolute volume error. It grows without bound with the error.
- ``curvas``: reproduces the official CURVAS 2024 evaluation (``SYCAI-Technologies/curvas-challenge``,
  ``CURVAS_2024/evaluation_metrics/metrics.py``, ``crps_computation`` and ``calculate_volumes_distributions``): F is
  the Normal CDF sampled at 100 points between its 1 % and 99 % quantiles, linearly interpolated, 0 below and 1 above
  that range; the squared difference is integrated with ``scipy.integrate.quad`` (default settings, whose own error
  is reproduced, not corrected: volumes 100, 110, 120 and v = 130 give 15.4456 where the exact integral of the
  interpolated CDF is 15.4477) over μ ± 3σ only. Consequences, all reproduced: a prediction beyond μ ± 3σ always
  scores the same (for volumes 100, 110, 120 ml both 140 and 1000 score 19.9427); when σ = 0 the range is empty and
  the score is 0 whatever the prediction (logged as a warning). The official evaluation first crops every array to
  the in-plane bounding box of CT > 0 (pass that box as `roi`) and, with its default ``voxel_proportion=1``, counts
  volumes in voxels (``unit=VolumeUnit.VOXELS``); quad's absolute tolerance (1.5e-8) makes its numbers depend
  slightly on the unit (~1e-7 relative in the tests).

NaN rule: these volume scores are never NaN; inputs that make them meaningless (no rater, probabilities outside
[0, 1], NaN voxels, an empty ROI) raise `InvalidInput`. An organ no rater drew has μ = σ = 0: ``native`` then
scores the predicted volume itself (every ml predicted is a false positive).
"""

from __future__ import annotations

import enum
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from ..uncertainty.raters import RaterVotes, rater_arrays
from ..volume import Volume

__all__ = [
    "CRPSMode",
    "Result",
    "VolumeUnit",
    "crps_curvas",
    "crps_gaussian",
    "predicted_volume",
    "rater_volumes",
    "voxel_volume_ml",
    "volume_crps",
]

log = logging.getLogger(__name__)

_PROBABILITY_ATOL = 1e-6  # float32 softmax output may overshoot [0, 1] by rounding
_CURVAS_GRID = 100  # points of the official interpolated CDF
_CURVAS_QUANTILES = (0.01, 0.99)  # its first and last point
_CURVAS_HALF_WIDTH = 3.0  # integration range μ ± 3σ


class Result(NamedTuple):
    """A metric value and, when the value is NaN, why (``None`` otherwise)."""

    value: float
    reason: str | None = None


class CRPSMode(str, enum.Enum):
    """How `volume_crps` integrates (see the module docstring)."""

    NATIVE = "native"  # exact closed form for the raters' Normal distribution
    CURVAS = "curvas"  # the official CURVAS 2024 code's interpolated CDF and truncated numerical integral


class VolumeUnit(str, enum.Enum):
    """Unit of the volumes, and therefore of the CRPS."""

    ML = "ml"  # millilitres from the voxel spacing
    VOXELS = "voxels"  # voxel counts: what the official CURVAS code gives with its default voxel_proportion=1


# ---------------------------------------------------------------------------------------------------- scalars
def _volumes(v: float, volumes: Sequence[float]) -> tuple[float, float, float]:
    """Validated predicted volume, μ and population σ of the rater volumes."""
    vols = np.asarray(volumes, dtype=np.float64).reshape(-1)
    if vols.size == 0:
        raise InvalidInput("No rater volume was given; at least one rater's segmentation is needed.")
    if not np.all(np.isfinite(vols)) or not math.isfinite(float(v)):
        raise InvalidInput(f"Volumes must be finite numbers; got predicted {v} and rater volumes {vols.tolist()}.")
    return float(v), float(np.mean(vols)), float(np.std(vols))


def crps_gaussian(v: float, volumes: Sequence[float]) -> float:
    """Exact CRPS of volume `v` against N(μ, σ²) fitted to the rater `volumes` (``native`` mode).

    Parameters
    ----------
    v : float
        Predicted volume.
    volumes : sequence of float
        The raters' volumes, same unit as `v`. μ = mean, σ = population standard deviation (ddof 0).

    Returns
    -------
    float
        σ·[z(2Φ(z) − 1) + 2φ(z) − 1/√π], z = (v − μ)/σ, in the unit of the volumes; |v − μ| when σ = 0.
        E.g. volumes 100, 110, 120 and v = 110 → 1.9081; v = 130 → 15.4316; v = 1000 → 885.3934.

    Raises
    ------
    InvalidInput
        No volume, or a non-finite one.
    """
    v, mu, sigma = _volumes(v, volumes)
    if sigma == 0.0:
        return abs(v - mu)
    z = (v - mu) / sigma
    cdf = 0.5 * math.erfc(-z / math.sqrt(2.0))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return sigma * (z * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))


def crps_curvas(v: float, volumes: Sequence[float]) -> float:
    """CRPS of volume `v` as the official CURVAS 2024 evaluation computes it (``curvas`` mode).

    Parameters
    ----------
    v : float
        Predicted volume.
    volumes : sequence of float
        The raters' volumes, same unit as `v`.

    Returns
    -------
    float
        ∫ (F̃(x) − H(x − v))² dx over μ ± 3σ by ``scipy.integrate.quad`` (default limits), F̃ the Normal CDF
        interpolated linearly between 100 points from its 1 % to its 99 % quantile (0 below, 1 above) and H the
        Heaviside step with H(0) = ½. Volumes 100, 110, 120 and v = 110, 130, 140, 1000 → 1.9081, 15.4456, 19.9427,
        19.9427. 0 when σ = 0.

    Raises
    ------
    InvalidInput
        No volume, or a non-finite one.
    """
    from scipy import integrate, special

    v, mu, sigma = _volumes(v, volumes)
    if sigma == 0.0:
        log.warning(
            "CURVAS CRPS: the raters' volumes are identical (%g), the integration range μ ± 3σ is empty and the "
            "score is 0 whatever the predicted volume (%g)",
            mu,
            v,
        )
        return 0.0
    lo, hi = (float(special.ndtri(q)) * sigma + mu for q in _CURVAS_QUANTILES)
    grid = np.linspace(lo, hi, _CURVAS_GRID)
    cdf = special.ndtr((grid - mu) / sigma)

    def integrand(x: float) -> float:
        f = float(np.interp(x, grid, cdf, left=0.0, right=1.0))
        step = 0.5 * (math.copysign(1.0, x - v) + 1.0) if x != v else 0.5
        return (f - step) ** 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)  # the official run hits the same limit
        value, _ = integrate.quad(integrand, mu - _CURVAS_HALF_WIDTH * sigma, mu + _CURVAS_HALF_WIDTH * sigma)
    return float(value)


# ---------------------------------------------------------------------------------------------------- arrays
def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in ml from its `spacing` (3 positive mm values, any order)."""
    try:
        s = tuple(float(x) for x in spacing)
    except (TypeError, ValueError):
        raise InvalidInput(f"The voxel spacing must be 3 numbers in mm, got {spacing!r}.") from None
    if len(s) != 3 or not all(math.isfinite(x) and x > 0 for x in s):
        raise InvalidInput(f"The voxel spacing must be 3 positive numbers in mm, got {spacing!r}.")
    return s[0] * s[1] * s[2] / 1000.0


def _check_spacing(spacing: Sequence[float], *items: Any) -> float:
    ml = voxel_volume_ml(spacing)
    for item in items:
        if isinstance(item, Volume) and not np.allclose(item.spacing, tuple(spacing), rtol=1e-5, atol=0):
            raise GeometryMismatch(
                f"'{item.name}' has voxel spacing {item.spacing} mm but spacing {tuple(spacing)} mm was given; "
                "pass the spacing of the image the maps were computed on."
            )
    return ml


def check_probability(probability_map: Volume | np.ndarray, what: str = "probability map") -> np.ndarray:
    """Validated (Z, Y, X) probability array (float or 0/1 integers; NaN, ±inf and values off [0, 1] refused)."""
    p = probability_map.data if isinstance(probability_map, Volume) else np.asarray(probability_map)
    if p.ndim != 3:
        raise InvalidInput(f"The {what} has shape {p.shape}; one organ's 3D (z, y, x) probability map is needed.")
    if p.dtype.kind not in "fiub":
        raise InvalidInput(f"The {what} holds {p.dtype} values; probabilities between 0 and 1 are needed.")
    if p.size == 0:
        raise InvalidInput(f"The {what} is empty.")
    if p.dtype.kind == "f" and not np.isfinite(p).all():
        raise InvalidInput(f"The {what} contains NaN or infinite values; every voxel needs a probability.")
    lo, hi = float(p.min()), float(p.max())
    if lo < -_PROBABILITY_ATOL or hi > 1 + _PROBABILITY_ATOL:
        raise InvalidInput(
            f"The {what} holds values from {lo:g} to {hi:g}; probabilities must lie between 0 and 1 "
            "(logits or percentages cannot be used as they are)."
        )
    return p


def check_roi(roi: Any, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    """A boolean region of interest of `shape` (None stays None); `what` names it in the messages."""
    if roi is None:
        return None
    r = roi.data if isinstance(roi, Volume) else np.asarray(roi)
    if r.shape != shape:
        raise GeometryMismatch(f"The region of interest has shape {r.shape} (z, y, x) but the {what} has {shape}.")
    r = r if r.dtype == bool else r != 0
    if not r.any():
        raise InvalidInput("The region of interest is empty; it must contain at least one voxel.")
    return r


def predicted_volume(
    probability_map: Volume | np.ndarray,
    *,
    spacing: Sequence[float],
    roi: np.ndarray | None = None,
    unit: VolumeUnit | str = VolumeUnit.ML,
) -> float:
    """Probabilistic volume Σ p × voxel volume of one organ's probability map.

    Parameters
    ----------
    probability_map : Volume or ndarray, shape (Z, Y, X)
        The organ's probability per voxel, in [0, 1].
    spacing : sequence of 3 float
        Voxel size in mm.
    roi : ndarray of bool, shape (Z, Y, X), optional
        Only voxels inside are counted (e.g. the CURVAS crop box).
    unit : VolumeUnit
        ``ml`` (default) or ``voxels`` (Σ p).

    Returns
    -------
    float
        Volume in ml (or voxels), summed in float64.
    """
    p = check_probability(probability_map)
    ml = _check_spacing(spacing, probability_map)  # checked in voxel units too: a wrong grid is still wrong
    scale = ml if VolumeUnit(unit) is VolumeUnit.ML else 1.0
    r = check_roi(roi, p.shape, "probability map")
    return float(np.sum(p[r] if r is not None else p, dtype=np.float64)) * scale


def rater_volumes(
    raters: Sequence[Volume | np.ndarray],
    *,
    spacing: Sequence[float],
    label: int = 1,
    roi: np.ndarray | None = None,
    unit: VolumeUnit | str = VolumeUnit.ML,
) -> np.ndarray:
    """Each rater's volume of the organ `label`.

    Parameters
    ----------
    raters : sequence of Volume or ndarray, each (Z, Y, X) integer labels (or boolean masks with ``label=1``)
        Same grid for all (checked as in `napari_segunc.uncertainty.rater_votes`).
    spacing : sequence of 3 float
        Voxel size in mm.
    label : int
        Label value of the organ.
    roi : ndarray of bool, shape (Z, Y, X), optional
        Only voxels inside are counted.
    unit : VolumeUnit

    Returns
    -------
    ndarray of float64, shape (K,)
        Volumes in ml (or voxel counts), rater order.

    Raises
    ------
    InvalidInput
        No rater, non-integer or negative labels, wrong dimensionality, a bad spacing or an empty ROI.
    GeometryMismatch
        Raters or ROI on different grids; a `Volume` whose spacing differs from `spacing`.
    """
    arrays = _rater_arrays(raters)
    ml = _check_spacing(spacing, *_as_list(raters))
    scale = ml if VolumeUnit(unit) is VolumeUnit.ML else 1.0
    r = check_roi(roi, arrays[0].shape, "raters' label maps")
    counts = [np.count_nonzero((a == label) & r if r is not None else a == label) for a in arrays]
    return np.asarray(counts, dtype=np.float64) * scale


def _as_list(raters: Any) -> list:
    if isinstance(raters, Volume | np.ndarray) and np.ndim(getattr(raters, "data", raters)) == 3:
        return [raters]
    return list(raters)


def _rater_arrays(raters: Any) -> list[np.ndarray]:
    if isinstance(raters, RaterVotes):
        raise InvalidInput("Per-rater volumes need the raters' label maps, not their pooled votes.")
    return rater_arrays(_as_list(raters), None)[0]


def volume_crps(
    probability_map: Volume | np.ndarray,
    raters: Sequence[Volume | np.ndarray],
    *,
    spacing: Sequence[float],
    mode: CRPSMode | str = CRPSMode.NATIVE,
    label: int = 1,
    roi: np.ndarray | None = None,
    unit: VolumeUnit | str = VolumeUnit.ML,
) -> Result:
    """CRPS of the organ's predicted probabilistic volume against the raters' volumes.

    Parameters
    ----------
    probability_map : Volume or ndarray, shape (Z, Y, X)
        The organ's probability per voxel, in [0, 1] (e.g. one channel of the ensemble's mean probabilities).
    raters : sequence of Volume or ndarray, each (Z, Y, X)
        The raters' label maps (or boolean masks with ``label=1``), on the probability map's grid.
    spacing : sequence of 3 float
        Voxel size in mm, (z, y, x).
    mode : CRPSMode
        ``native`` (exact, default) or ``curvas`` (the official challenge code's numbers).
    label : int
        Label value of the organ in the raters' maps.
    roi : ndarray of bool, shape (Z, Y, X), optional
        Count prediction and rater voxels only inside (the official code first crops every array to the in-plane
        bounding box of CT > 0, see the module docstring).
    unit : VolumeUnit
        ``ml`` (default) or ``voxels``; the CRPS is in this unit. ``curvas`` with ``voxels`` is the official default.

    Returns
    -------
    Result
        ``value`` the CRPS (never NaN, see the module docstring), ``reason`` None.

    Raises
    ------
    InvalidInput, GeometryMismatch
        As `predicted_volume` and `rater_volumes`; the map and the raters on different grids.
    """
    mode, unit = CRPSMode(mode), VolumeUnit(unit)
    p = check_probability(probability_map)
    arrays = _rater_arrays(raters)
    if arrays[0].shape != p.shape:
        raise GeometryMismatch(
            f"The probability map has shape {p.shape} (z, y, x) but the raters have {arrays[0].shape}; "
            "both must come from the same image grid."
        )
    ml = _check_spacing(spacing, probability_map, *_as_list(raters))
    scale = ml if unit is VolumeUnit.ML else 1.0
    r = check_roi(roi, p.shape, "probability map")
    vols = np.asarray([np.count_nonzero((a == label) & r if r is not None else a == label) for a in arrays]) * scale
    v = float(np.sum(p[r] if r is not None else p, dtype=np.float64)) * scale
    crps = crps_curvas(v, vols) if mode is CRPSMode.CURVAS else crps_gaussian(v, vols)
    log.debug("volume CRPS (%s, %s): predicted %g, raters %s → %g", mode.value, unit.value, v, vols.tolist(), crps)
    return Result(float(crps), None)
