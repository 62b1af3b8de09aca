"""Organ statistics with their uncertainty: what a radiologist reports, and how sure the volume is.

Per organ of a label map (`organ_statistics`):

- **volume** (ml: voxels × voxel volume) and the image's **mean and standard deviation** inside it (HU for CT), as
  TotalSegmentator's ``--statistics`` gives;
- **the volume's uncertainty**, which no peer gives: the ensemble members' volumes (each member's own label map, the
  argmax of its probabilities: min, max, std over the members), the **soft volume** Σp × voxel volume of the mean
  probabilities, and with raters each rater's volume and their spread;
- **RECIST diameters** (seed 002) of each connected component (26-connected, largest first): on every axial slice the
  longest in-plane diameter (the largest distance between two voxel centres of the component on that slice, in mm),
  the slice where it is longest, and there the longest diameter perpendicular to it (the longest chord along the
  perpendicular direction: voxel centres binned by their position along the long axis, one voxel wide, the widest
  bin's extent across). Diameters are measured between voxel centres, so a voxel-sized structure measures 0 mm.

Everything is in the canonical (z, y, x) grid; z is the axial slice index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InvalidInput

__all__ = ["Diameters", "OrganStats", "organ_statistics", "recist_diameters"]


@dataclass
class Diameters:
    """RECIST diameters of one connected component: long axis (mm) on slice `z`, and its perpendicular short axis."""

    voxels: int
    z: int
    long_mm: float
    short_mm: float


@dataclass
class OrganStats:
    """One organ's statistics (NaN where an input was not given)."""

    organ: str
    label: int
    volume_ml: float
    mean: float
    std: float
    soft_volume_ml: float = float("nan")
    member_volumes_ml: list[float] = field(default_factory=list)
    rater_volumes_ml: list[float] = field(default_factory=list)
    components: list[Diameters] = field(default_factory=list)

    @staticmethod
    def _spread(values: Sequence[float]) -> tuple[float, float, float]:
        if not values:
            return (float("nan"),) * 3
        v = np.asarray(values, dtype=np.float64)
        return float(v.min()), float(v.max()), float(v.std(ddof=1)) if v.size > 1 else 0.0

    def row(self) -> dict:
        """A flat table row (CSV/JSON): the largest component's diameters, spreads as min/max/std."""
        m_min, m_max, m_std = self._spread(self.member_volumes_ml)
        r_min, r_max, r_std = self._spread(self.rater_volumes_ml)
        big = self.components[0] if self.components else None
        return {
            "organ": self.organ,
            "label": self.label,
            "volume_ml": self.volume_ml,
            "mean": self.mean,
            "std": self.std,
            "soft_volume_ml": self.soft_volume_ml,
            "members": len(self.member_volumes_ml),
            "member_volume_min_ml": m_min,
            "member_volume_max_ml": m_max,
            "member_volume_std_ml": m_std,
            "raters": len(self.rater_volumes_ml),
            "rater_volume_min_ml": r_min,
            "rater_volume_max_ml": r_max,
            "rater_volume_std_ml": r_std,
            "components": len(self.components),
            "long_axis_mm": big.long_mm if big else float("nan"),
            "short_axis_mm": big.short_mm if big else float("nan"),
            "long_axis_slice": big.z if big else -1,
        }


def _slice_diameters(ys: np.ndarray, xs: np.ndarray, spacing_yx: tuple[float, float]) -> tuple[float, float]:
    """(long, short) RECIST diameters in mm of one slice's voxel centres."""
    pts = np.stack([ys * spacing_yx[0], xs * spacing_yx[1]], axis=1).astype(np.float64)
    if len(pts) < 2:
        return 0.0, 0.0
    if len(pts) > 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            hull = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear: every point is on the hull's line
            hull = pts
    else:
        hull = pts
    d = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    long = float(d[i, j])
    if long == 0:
        return 0.0, 0.0
    axis = (hull[j] - hull[i]) / long
    perp = np.array([-axis[1], axis[0]])
    along, across = pts @ axis, pts @ perp
    step = float(min(spacing_yx))
    bins = np.floor((along - along.min()) / step + 1e-9).astype(int)
    short = 0.0
    for b in np.unique(bins):
        sel = across[bins == b]
        short = max(short, float(sel.max() - sel.min()))
    return long, short


def recist_diameters(mask: np.ndarray, spacing: Sequence[float]) -> list[Diameters]:
    """RECIST diameters of every 26-connected component of a boolean ``(Z, Y, X)`` mask, largest component first."""
    components, n = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return []
    out = []
    objects = ndimage.find_objects(components)
    for k, box in enumerate(objects, start=1):
        comp = components[box] == k
        best = (-1.0, 0.0, 0)
        for dz in range(comp.shape[0]):
            ys, xs = np.nonzero(comp[dz])
            if ys.size == 0:
                continue
            long, short = _slice_diameters(ys + box[1].start, xs + box[2].start, (spacing[1], spacing[2]))
            if long > best[0]:
                best = (long, short, dz + box[0].start)
        out.append(Diameters(int(comp.sum()), int(best[2]), float(best[0]), float(best[1])))
    return sorted(out, key=lambda d: -d.voxels)


def organ_statistics(
    labels: np.ndarray,
    spacing: Sequence[float],
    organs: Mapping[str, int],
    *,
    image: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    members: Sequence[np.ndarray] = (),
    member_voxels: Sequence[Sequence[int]] = (),
    raters: Sequence[np.ndarray] = (),
) -> list[OrganStats]:
    """Statistics of every organ of `organs` present in `labels` (module docstring).

    Parameters
    ----------
    labels : ndarray of int (Z, Y, X)
    spacing : (dz, dy, dx) in mm
    organs : organ name → label value
    image : ndarray (Z, Y, X), optional
        Intensities for the mean/std (HU for CT).
    probabilities : ndarray (C, Z, Y, X), optional
        Mean class probabilities, channel c = the c-th organ of `organs` by label value after background.
    members : sequence of ndarray (C, Z, Y, X)
        Each ensemble member's class probabilities (same channels): its label map is their argmax.
    member_voxels : sequence of sequences of int
        Instead of (or besides) `members`: each member's label map already counted per channel
        (`napari_segunc.uncertainty.EnsembleMaps.member_voxels`, what an ensemble run keeps of its members).
    raters : sequence of ndarray of int (Z, Y, X)
        Raters' label maps (label values of `organs`).
    """
    labels = np.asarray(labels)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    shape = labels.shape
    for what, arrays in (("image", [image] if image is not None else []), ("rater", raters)):
        for a in arrays:
            if np.shape(a) != shape:
                raise InvalidInput(f"The {what} is {np.shape(a)} voxels and the label map {shape}; they must match.")
    ordered = sorted(((int(v), n) for n, v in organs.items() if int(v) > 0), key=lambda t: t[0])
    channel = {v: c for c, (v, _) in enumerate(ordered, start=1)}
    for p in ([probabilities] if probabilities is not None else []) + list(members):
        if np.shape(p)[1:] != shape or np.shape(p)[0] != len(ordered) + 1:
            raise InvalidInput(
                f"Probabilities of shape {np.shape(p)} do not fit {len(ordered)} organ(s) on the {shape} grid "
                "(background first, then the organs by label value)."
            )
    counts = [np.bincount(np.argmax(m, axis=0).ravel(), minlength=len(ordered) + 1) for m in members]
    for c in member_voxels:
        if len(c) != len(ordered) + 1:
            raise InvalidInput(
                f"A member's voxel counts have {len(c)} classes; {len(ordered)} organ(s) and the background need "
                f"{len(ordered) + 1}."
            )
        counts.append(np.asarray(c, dtype=np.int64))
    out = []
    for value, name in ordered:
        mask = labels == value
        n = int(mask.sum())
        if n == 0:
            continue
        inside = np.asarray(image, dtype=np.float64)[mask] if image is not None else np.array([])
        stats = OrganStats(
            organ=name,
            label=value,
            volume_ml=n * voxel_ml,
            mean=float(inside.mean()) if inside.size else float("nan"),
            std=float(inside.std()) if inside.size else float("nan"),
            soft_volume_ml=(
                float(np.asarray(probabilities[channel[value]], np.float64).sum()) * voxel_ml
                if probabilities is not None
                else float("nan")
            ),
            member_volumes_ml=[float(c[channel[value]]) * voxel_ml for c in counts],
            rater_volumes_ml=[float((np.asarray(r) == value).sum()) * voxel_ml for r in raters],
            components=recist_diameters(mask, spacing),
        )
        out.append(stats)
    return out
