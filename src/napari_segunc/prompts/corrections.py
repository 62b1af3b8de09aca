"""Corrections of an organ's MedSAM2 result: positive/negative clicks and slice masks, in the order they were made.

An organ's prompt (`napari_segunc.prompts.OrganPrompt`) is its boxes *and* the sequence of corrections made since.
Each `Correction` is one interaction, replayed exactly as an annotator made it in SAM2's video predictor:

- clicks (`Click`: a voxel ``(z, y, x)`` of the canonical grid, positive = "this is the organ", negative = "this is
  not"), added with ``add_new_points_or_box(points=…, labels=…, clear_old_points=False)`` on their slices (on a slice
  that was already segmented, SAM2 refines that slice's mask with them), or
- one slice mask (`SliceMask`, e.g. a slice of the ensemble segmentation), added with ``add_new_mask``,

then the organ is propagated again from the correction's slice (`Correction.z`: the slice of its last click, or the
mask's), up to the organ's last slice and down to its first, in the same inference state. A replay of the same
sequence gives the same logits (`napari_segunc.inference.medsam2.propagate_organ`).

In ``boxes.json`` (version 2) an organ's corrections are a list under ``"corrections"``::

    {"clicks": [{"z": 20, "y": 51, "x": 40, "positive": true}]}
    {"mask": {"z": 18, "shape_yx": [112, 144], "runs": [5012, 14, 127, 18, ...], "source": "ensemble"}}

``runs`` is the slice mask's run-length code: row-major (y, then x), alternately background and mask voxel counts,
starting with background (0 when the first voxel is in the mask), summing to Y·X.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInput

__all__ = ["Click", "Correction", "SliceMask", "decode_runs", "encode_runs", "voxel_index"]


def voxel_index(value: Any, what: str) -> int:
    """`value` as a Python int (numpy integers accepted); `InvalidInput` for floats, bools, strings, None."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a whole number, got {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidInput(f"{what} must be a whole number, got {value!r}.") from None


@dataclasses.dataclass(frozen=True)
class Click:
    """One click on axial slice `z` at voxel ``(y, x)``: positive (the organ is here) or negative (it is not)."""

    z: int
    y: int
    x: int
    positive: bool = True

    def __post_init__(self) -> None:
        for field in ("z", "y", "x"):
            object.__setattr__(self, field, voxel_index(getattr(self, field), f"A click's {field} (a voxel index)"))
        if not isinstance(self.positive, (bool, np.bool_)):
            raise InvalidInput(f"A click is positive (true) or negative (false), got {self.positive!r}.")
        object.__setattr__(self, "positive", bool(self.positive))
        if min(self.z, self.y, self.x) < 0:
            raise InvalidInput(f"A click's voxel indices are ≥ 0, got z {self.z}, y {self.y}, x {self.x}.")

    def to_dict(self) -> dict[str, Any]:
        return {"z": self.z, "y": self.y, "x": self.x, "positive": self.positive}


def encode_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a 2D boolean mask, row-major, alternately background and mask, starting with background."""
    flat = np.asarray(mask, dtype=bool).ravel()
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def decode_runs(runs: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """The boolean ``shape`` mask of `encode_runs`' code; `InvalidInput` when the runs do not fill it exactly."""
    counts = np.asarray(list(runs), dtype=np.int64)
    n = int(np.prod(shape))
    if counts.ndim != 1 or (counts < 0).any() or int(counts.sum()) != n:
        raise InvalidInput(
            f"a slice mask's runs must be counts ≥ 0 adding up to its {shape[0]}×{shape[1]} voxels, "
            f"they add up to {int(counts.sum()) if counts.ndim == 1 else '?'}."
        )
    values = np.arange(counts.size) % 2 == 1
    return np.repeat(values, counts).reshape(tuple(shape))


@dataclasses.dataclass(frozen=True, eq=False)
class SliceMask:
    """The organ on axial slice `z` as a boolean ``(Y, X)`` mask (e.g. a slice of the ensemble segmentation)."""

    z: int
    mask: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "z", voxel_index(self.z, "A slice mask's z (a voxel index)"))
        mask = np.asarray(self.mask)
        if mask.ndim != 2 or mask.dtype != bool:
            raise InvalidInput(f"A slice mask is a 2D boolean (Y, X) array, got {mask.dtype} of shape {mask.shape}.")
        if not mask.any():
            raise InvalidInput(f"The slice mask on slice {self.z} is empty; an organ mask needs at least one voxel.")
        mask = mask.copy()
        mask.flags.writeable = False
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "source", str(self.source))

    def to_dict(self) -> dict[str, Any]:
        return {"z": self.z, "shape_yx": list(self.mask.shape), "runs": encode_runs(self.mask), "source": self.source}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SliceMask):
            return NotImplemented
        return self.z == other.z and self.mask.shape == other.mask.shape and bool((self.mask == other.mask).all())

    def __hash__(self) -> int:
        return hash((self.z, self.mask.shape, hashlib.sha256(np.packbits(self.mask)).hexdigest()))


@dataclasses.dataclass(frozen=True)
class Correction:
    """One interaction on an organ: clicks (on one or several slices) or one slice mask, then a re-propagation.

    Attributes
    ----------
    clicks : tuple of Click
        In the order they were made; empty for a mask correction.
    mask : SliceMask, optional
        The organ on one slice; None for a click correction.
    """

    clicks: tuple[Click, ...] = ()
    mask: SliceMask | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "clicks", tuple(self.clicks))
        if bool(self.clicks) == (self.mask is not None):
            raise InvalidInput("A correction is either clicks or one slice mask (not both, not neither).")
        for c in self.clicks:
            if not isinstance(c, Click):
                raise InvalidInput(f"A correction's clicks are Click objects, not {c!r}.")
        if self.mask is not None and not isinstance(self.mask, SliceMask):
            raise InvalidInput(f"A correction's mask is a SliceMask, not {self.mask!r}.")

    @property
    def z(self) -> int:
        """The slice propagation restarts from: the last click's, or the mask's."""
        return self.mask.z if self.mask is not None else self.clicks[-1].z

    @property
    def slices(self) -> list[int]:
        """Every slice this correction touches."""
        return [self.mask.z] if self.mask is not None else sorted({c.z for c in self.clicks})

    def outside(self, shape: Sequence[int]) -> str | None:
        """What of this correction lies outside a ``(Z, Y, X)`` grid, as a phrase, or None."""
        nz, ny, nx = (int(n) for n in shape)
        for c in self.clicks:
            if c.z >= nz or c.y >= ny or c.x >= nx:
                return f"its click at (z {c.z}, y {c.y}, x {c.x}) lies outside the {nz}×{ny}×{nx} grid"
        if self.mask is not None and (self.mask.z >= nz or self.mask.mask.shape != (ny, nx)):
            return f"its mask on slice {self.mask.z} ({self.mask.mask.shape[0]}×{self.mask.mask.shape[1]}) does not fit"
        return None

    def key(self) -> list:
        """A JSON-ready value that differs whenever the correction does (for fingerprints)."""
        if self.mask is not None:
            return ["mask", self.mask.z, list(self.mask.mask.shape), encode_runs(self.mask.mask)]
        return ["clicks", [[c.z, c.y, c.x, int(c.positive)] for c in self.clicks]]

    def to_dict(self) -> dict[str, Any]:
        if self.mask is not None:
            return {"mask": self.mask.to_dict()}
        return {"clicks": [c.to_dict() for c in self.clicks]}

    @classmethod
    def from_dict(cls, d: Any, who: str) -> Correction:
        """Rebuild from `to_dict`'s form; `InvalidInput` starting with `who` when it is not one."""
        if not isinstance(d, Mapping) or set(d) not in ({"clicks"}, {"mask"}):
            raise InvalidInput(f'{who}: a correction is {{"clicks": [...]}} or {{"mask": {{...}}}}, got {d!r}.')
        if "clicks" in d:
            if not isinstance(d["clicks"], list) or not d["clicks"]:
                raise InvalidInput(f"{who}: a correction's 'clicks' is a non-empty list.")
            clicks = []
            for c in d["clicks"]:
                if not isinstance(c, Mapping) or not {"z", "y", "x"} <= set(c) <= {"z", "y", "x", "positive"}:
                    raise InvalidInput(f'{who}: a click is {{"z", "y", "x", "positive"}}, got {c!r}.')
                clicks.append(Click(c["z"], c["y"], c["x"], c.get("positive", True)))
            return cls(clicks=tuple(clicks))
        m = d["mask"]
        if not isinstance(m, Mapping) or not {"z", "shape_yx", "runs"} <= set(m) <= {"z", "shape_yx", "runs", "source"}:
            raise InvalidInput(f'{who}: a slice mask is {{"z", "shape_yx", "runs", "source"}}, got {m!r}.')
        shape = m["shape_yx"]
        if not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
            raise InvalidInput(f"{who}: a slice mask's shape_yx is two positive voxel counts, got {shape!r}.")
        if not isinstance(m["runs"], list) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in m["runs"]
        ):
            raise InvalidInput(f"{who}: a slice mask's runs are whole numbers.")
        try:
            mask = decode_runs(m["runs"], shape)
        except InvalidInput as exc:
            raise InvalidInput(f"{who}: {exc}") from None
        return cls(mask=SliceMask(m["z"], mask, m.get("source", "")))
