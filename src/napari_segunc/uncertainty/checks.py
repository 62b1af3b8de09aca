"""Input checks shared by the uncertainty maps' consumers: the review queue (`regions`), the scores, the rater
analysis and `napari_segunc.metrics.uncertainty_metrics` (shapes, dtypes, label names, spacing).

Each returns the validated array or value, or raises `InvalidInput` / `GeometryMismatch` with one sentence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import GeometryMismatch, InvalidInput

__all__ = [
    "check_map",
    "check_mask",
    "check_same_shape",
    "check_segmentation",
    "check_spacing",
    "names_by_value",
    "py_scalar",
]


def check_map(uncertainty: Any) -> np.ndarray:
    """A 3D floating-point uncertainty map (NaN allowed, ±inf refused)."""
    u = np.asarray(uncertainty)
    if u.ndim != 3:
        raise InvalidInput(f"The uncertainty map has shape {u.shape}; a 3D (z, y, x) volume is needed.")
    if u.dtype.kind != "f":
        raise InvalidInput(f"The uncertainty map holds {u.dtype} values; a floating-point map is needed.")
    if np.isinf(u).any():
        raise InvalidInput("The uncertainty map contains infinite values; only finite values or NaN are allowed.")
    return u


def check_same_shape(u: np.ndarray, other: Any, what: str) -> np.ndarray | None:
    """`other` as an array of `u`'s shape (None stays None); `what` names it in the message."""
    if other is None:
        return None
    a = np.asarray(other)
    if a.shape != u.shape:
        raise GeometryMismatch(
            f"The {what} has shape {a.shape} (z, y, x) but the uncertainty map has {u.shape}; "
            "both must come from the same image grid."
        )
    return a


def check_mask(u: np.ndarray, mask: Any) -> np.ndarray | None:
    """A boolean mask of `u`'s shape (non-zero = inside), or None."""
    m = check_same_shape(u, mask, "mask")
    return m if m is None or m.dtype == bool else m != 0


def check_segmentation(u: np.ndarray, segmentation: Any) -> np.ndarray | None:
    """An integer label map (values ≥ 0) of `u`'s shape, or None."""
    s = check_same_shape(u, segmentation, "segmentation")
    if s is not None:
        if s.dtype.kind not in "iub":
            raise InvalidInput(f"The segmentation holds {s.dtype} values; an integer label map is needed.")
        if s.dtype.kind == "i" and s.size and s.min() < 0:
            raise InvalidInput("The segmentation contains negative labels; labels must be 0 (background) or more.")
    return s


def names_by_value(labels: Mapping[str, int] | None) -> dict[int, str]:
    """A name → value table turned value → name, background 0 first (values whole, ≥ 0 and distinct)."""
    names: dict[int, str] = {}
    for name, value in (labels or {}).items():
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise InvalidInput(f"Label '{name}' has value {value!r}; label values must be integers ≥ 0.")
        if int(value) in names:
            raise InvalidInput(f"Labels '{names[int(value)]}' and '{name}' share the value {value}.")
        names[int(value)] = str(name)
    return {0: "background", **names}


def check_spacing(spacing: Sequence[float], what: str = "spacing") -> tuple[float, float, float]:
    """Three finite (z, y, x) mm values, positive for a spacing (`what` = "origin" allows any sign)."""
    s = tuple(float(v) for v in np.ravel(spacing))
    if len(s) != 3 or not all(math.isfinite(v) for v in s) or (what == "spacing" and min(s) <= 0):
        kind = "positive mm values" if what == "spacing" else "finite mm values"
        raise InvalidInput(f"The voxel {what} must be 3 {kind} (z, y, x), got {tuple(np.ravel(spacing))}.")
    return s


def py_scalar(value: Any) -> Any:
    """numpy scalar → Python scalar (for tidy rows and JSON)."""
    return value.item() if isinstance(value, np.generic) else value
