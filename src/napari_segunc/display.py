"""Display windows (window width / level presets) for CT and MR volumes.

A preset only decides napari's ``contrast_limits``: the voxel values (Hounsfield units for CT) are never changed.
CT presets are fixed windows in HU; the MR/default preset takes the 0.5th and 99.5th percentiles of the data.
This module is Qt-free and napari-free.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from .errors import InvalidInput
from .volume import Modality, Volume

__all__ = ["WindowPreset", "contrast_limits", "default_preset"]

# Percentiles are computed on a strided sample of at most this many voxels (a 512×512×300 CT has 78 M).
_MAX_PERCENTILE_SAMPLE = 4_000_000
_PERCENTILES = (0.5, 99.5)


class WindowPreset(str, enum.Enum):
    """Named display windows.

    CT presets are ``(width, level)`` pairs in Hounsfield units: the displayed range is
    ``level - width / 2`` to ``level + width / 2``. `PERCENTILE` (for MR and anything without calibrated
    units) spans the 0.5th to 99.5th percentile of the finite voxel values.
    """

    ABDOMEN = "abdomen"
    LIVER = "liver"
    LUNG = "lung"
    BONE = "bone"
    BRAIN = "brain"
    MEDIASTINUM = "mediastinum"
    PERCENTILE = "percentile"

    @property
    def window(self) -> tuple[float, float] | None:
        """``(width, level)`` in HU, or ``None`` for the data-driven `PERCENTILE` preset."""
        return _WINDOWS.get(self)

    @property
    def label(self) -> str:
        """Human-readable name for menus, e.g. ``"Abdomen (W400 / L40)"``."""
        if self.window is None:
            return "Percentile 0.5–99.5 % (MR)"
        width, level = self.window
        return f"{self.value.capitalize()} (W{width:g} / L{level:g})"


_WINDOWS: dict[WindowPreset, tuple[float, float]] = {
    WindowPreset.ABDOMEN: (400.0, 40.0),
    WindowPreset.LIVER: (150.0, 30.0),
    WindowPreset.LUNG: (1500.0, -600.0),
    WindowPreset.BONE: (1800.0, 400.0),
    WindowPreset.BRAIN: (80.0, 40.0),
    WindowPreset.MEDIASTINUM: (350.0, 50.0),
}


def contrast_limits(preset: WindowPreset | str, data: np.ndarray | None = None) -> tuple[float, float]:
    """Display range ``(lo, hi)`` of a preset, for napari's ``contrast_limits``.

    Parameters
    ----------
    preset : WindowPreset or str
        A preset or its value (``"abdomen"``...).
    data : ndarray, optional
        Voxel values, any shape. Required for `WindowPreset.PERCENTILE`, ignored by the CT presets. NaN and
        ±inf voxels are ignored. Arrays larger than 4 million voxels are sampled with a regular stride.

    Returns
    -------
    lo, hi : float
        ``lo < hi`` always. CT: ``level ∓ width / 2`` in HU. Percentile: the 0.5th and 99.5th percentiles of the
        finite values; constant data gives ``(v - 0.5, v + 0.5)``; data with no finite value gives ``(0, 1)``.

    Raises
    ------
    InvalidInput
        Unknown preset name, or `PERCENTILE` without data.
    """
    try:
        preset = WindowPreset(preset)
    except ValueError:
        names = ", ".join(p.value for p in WindowPreset)
        raise InvalidInput(f"Unknown display window '{preset}'; choose one of {names}.") from None
    if preset.window is not None:
        width, level = preset.window
        return (level - width / 2.0, level + width / 2.0)
    if data is None:
        raise InvalidInput("The percentile display window needs the image data to compute its range.")
    return _percentile_limits(np.asarray(data))


def _percentile_limits(data: np.ndarray) -> tuple[float, float]:
    flat = data.reshape(-1)
    if flat.size > _MAX_PERCENTILE_SAMPLE:
        flat = flat[:: int(math.ceil(flat.size / _MAX_PERCENTILE_SAMPLE))]
    if flat.dtype == bool:
        flat = flat.astype(np.uint8)
    if flat.dtype.kind in "fc":
        flat = flat.real if flat.dtype.kind == "c" else flat
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(flat, _PERCENTILES))
    if not hi > lo:
        # Constant (or nearly) data: widen around the value so napari gets a valid range.
        lo, hi = float(flat.min()), float(flat.max())
        if not hi > lo:
            return (lo - 0.5, lo + 0.5)
    return (lo, hi)


def default_preset(volume: Volume) -> WindowPreset:
    """Preset a volume opens with: `WindowPreset.ABDOMEN` for CT, `WindowPreset.PERCENTILE` otherwise."""
    return WindowPreset.ABDOMEN if volume.modality is Modality.CT else WindowPreset.PERCENTILE
