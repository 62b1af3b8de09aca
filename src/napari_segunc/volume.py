"""The `Volume` type: a 3D array in the package's canonical grid, with the geometry needed to write results back.

Geometry rule (docs/ARCHITECTURE.md): inside the package an image is a ``(z, y, x)`` array reoriented to LPS with
SimpleITK's ``DICOMOrient(image, "LPS")``: x grows towards the patient's Left, y towards Posterior, z towards
Superior. Shown with row 0 at the top, an axial slice therefore has the patient's right on the screen's left and
anterior at the top (radiological convention). ``spacing`` and ``origin`` are in mm and in array order ``(z, y, x)``,
ready for napari's ``scale`` and ``translate``. The source file's own geometry (`SourceGeometry`) travels with the
volume so that writers restore the original orientation, spacing, origin and direction exactly.

One responsibility, the `Volume` type and its geometry; kept in one module past 400 lines.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import GeometryMismatch, InvalidInput

__all__ = [
    "CANONICAL_ORIENTATION",
    "FileFormat",
    "Modality",
    "SourceGeometry",
    "Volume",
    "VolumeKind",
    "array_to_canonical",
    "array_to_source",
    "canonical_axes",
    "check_same_grid",
    "orientation_code",
]

CANONICAL_ORIENTATION = "LPS"


class Modality(str, enum.Enum):
    """Imaging modality; decides the default display window."""

    CT = "CT"
    MR = "MR"
    OTHER = "OT"


class VolumeKind(str, enum.Enum):
    """What the voxel values mean."""

    INTENSITY = "intensity"  # CT Hounsfield units, MR signal...
    LABELS = "labels"  # integer label map, 0 = background
    FLOAT_MAP = "float_map"  # probabilities, uncertainty, scores


class FileFormat(str, enum.Enum):
    """On-disk formats the package reads and writes."""

    NIFTI = "nifti"
    NRRD = "nrrd"
    MHA = "mha"
    MHD = "mhd"
    DICOM = "dicom"

    @property
    def suffix(self) -> str:
        """File name suffix used when writing this format (DICOM sources are written as NIfTI)."""
        return {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "mhd": ".mhd", "dicom": ".nii.gz"}[self.value]


def orientation_code(direction: tuple[float, ...] | np.ndarray) -> str:
    """Three-letter DICOM-convention orientation code (e.g. ``"RAS"``, ``"LPS"``) of an ITK direction matrix.

    The letters say where each index axis (i, j, k) points to, as SimpleITK's ``DICOMOrient`` spells it.
    """
    import SimpleITK as sitk

    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        [float(v) for v in np.asarray(direction, dtype=float).ravel()]
    )


@dataclasses.dataclass(frozen=True)
class SourceGeometry:
    """Geometry of the file a volume came from, in ITK conventions (index order i, j, k = x, y, z; LPS mm).

    Attributes
    ----------
    path : str or None
        File or DICOM folder read.
    format : FileFormat or None
        Its format; writers use it for "same format as the source".
    size, spacing, origin : tuple of 3
        As ``SimpleITK.Image.GetSize/GetSpacing/GetOrigin`` report them for the file.
    direction : tuple of 9
        Row-major direction cosine matrix, as ``GetDirection`` reports it.
    series_id : str or None
        DICOM SeriesInstanceUID when read from a DICOM folder.
    """

    path: str | None
    format: FileFormat | None
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    series_id: str | None = None

    @property
    def orientation(self) -> str:
        """DICOM-convention orientation code of the file's index axes (``"RAS"`` for a typical NIfTI)."""
        return orientation_code(self.direction)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (napari layer metadata, session files)."""
        d = dataclasses.asdict(self)
        d["format"] = self.format.value if self.format else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SourceGeometry:
        return cls(
            path=d.get("path"),
            format=FileFormat(d["format"]) if d.get("format") else None,
            size=tuple(int(v) for v in d["size"]),
            spacing=tuple(float(v) for v in d["spacing"]),
            origin=tuple(float(v) for v in d["origin"]),
            direction=tuple(float(v) for v in d["direction"]),
            series_id=d.get("series_id"),
        )


@dataclasses.dataclass(eq=False)
class Volume:
    """A 3D image in the canonical LPS grid.

    Attributes
    ----------
    data : ndarray, shape (Z, Y, X)
        Voxel values, axis 0 = inferior→superior, 1 = anterior→posterior, 2 = right→left.
    spacing : tuple of 3 floats
        Voxel size in mm, ``(z, y, x)``; napari ``scale``.
    origin : tuple of 3 floats
        Physical LPS position in mm of voxel ``[0, 0, 0]``, in array order ``(z, y, x)``; napari ``translate``.
    direction : tuple of 9 floats
        ITK direction matrix of the canonical grid (row-major, index order x, y, z). The identity for any
        axis-aligned scan; close to it for an oblique one.
    kind : VolumeKind
    modality : Modality
    name : str
    source : SourceGeometry or None
        Geometry of the file this came from; ``None`` for volumes made in memory (phantom, tests).
    """

    data: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    kind: VolumeKind = VolumeKind.INTENSITY
    modality: Modality = Modality.OTHER
    name: str = "image"
    source: SourceGeometry | None = None

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        if self.data.ndim != 3:
            raise InvalidInput(
                f"'{self.name}' has {self.data.ndim} dimension(s) (shape {self.data.shape}); a 3D volume is needed."
            )
        self.spacing = tuple(float(v) for v in self.spacing)
        self.origin = tuple(float(v) for v in self.origin)
        self.direction = tuple(float(v) for v in np.asarray(self.direction, dtype=float).ravel())
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise InvalidInput(f"'{self.name}': spacing and origin need 3 values and direction 9.")
        if not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise InvalidInput(f"'{self.name}': voxel spacing must be positive mm values, got {self.spacing}.")
        self.kind = VolumeKind(self.kind)
        self.modality = Modality(self.modality)

    # ------------------------------------------------------------------ basic properties
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 ml = 1000 mm³)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def orientation(self) -> str:
        """Orientation code of the canonical grid (always ``"LPS"``)."""
        return orientation_code(self.direction)

    def napari_kwargs(self) -> dict[str, Any]:
        """``scale``/``translate``/``name``/``metadata`` for ``viewer.add_image``/``add_labels`` (mm world units)."""
        return {
            "scale": self.spacing,
            "translate": self.origin,
            "name": self.name,
            "metadata": {"segunc_geometry": self.geometry_dict()},
        }

    def geometry_dict(self) -> dict[str, Any]:
        """Everything but the voxels, JSON-friendly: enough to rebuild the grid and write results back."""
        return {
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
            "shape": list(self.shape),
            "modality": self.modality.value,
            "source": self.source.to_dict() if self.source else None,
        }

    @classmethod
    def from_geometry_dict(
        cls, data: np.ndarray, geometry: Mapping[str, Any], *, kind: VolumeKind, name: str
    ) -> Volume:
        """Rebuild a volume on a grid described by `geometry_dict` (e.g. a napari layer's metadata)."""
        src = geometry.get("source")
        return cls(
            data=data,
            spacing=tuple(geometry["spacing"]),
            origin=tuple(geometry["origin"]),
            direction=tuple(geometry["direction"]),
            kind=kind,
            modality=Modality(geometry.get("modality", "OT")),
            name=name,
            source=SourceGeometry.from_dict(src) if src else None,
        )

    def with_data(self, data: np.ndarray, *, kind: VolumeKind | None = None, name: str | None = None) -> Volume:
        """A new volume on the same grid and source (a segmentation or map computed from this image)."""
        data = np.asarray(data)
        if data.shape != self.data.shape:
            raise GeometryMismatch(
                f"Result array has shape {data.shape} but '{self.name}' has shape {self.data.shape}."
            )
        return dataclasses.replace(
            self, data=data, kind=kind if kind is not None else self.kind, name=name or self.name
        )

    # ------------------------------------------------------------------ SimpleITK conversion
    @classmethod
    def from_sitk(
        cls,
        image: Any,
        *,
        source: SourceGeometry | None = None,
        kind: VolumeKind | None = None,
        modality: Modality = Modality.OTHER,
        name: str = "image",
    ) -> Volume:
        """Reorient a 3D SimpleITK image to LPS and wrap it. `kind` defaults to a guess from the voxel values."""
        import SimpleITK as sitk

        canon = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
        data = sitk.GetArrayFromImage(canon)  # (z, y, x)
        if kind is None:
            kind = guess_kind(data)
        return cls(
            data=data,
            spacing=tuple(reversed(canon.GetSpacing())),
            origin=tuple(reversed(canon.GetOrigin())),
            direction=canon.GetDirection(),
            kind=kind,
            modality=modality,
            name=name,
            source=source,
        )

    def to_sitk(self) -> Any:
        """The canonical (LPS) grid as a SimpleITK image."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.data), isVector=False)
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(tuple(reversed(self.origin)))
        image.SetDirection(self.direction)
        return image

    def to_source_sitk(self) -> Any:
        """The volume reoriented back to its source file's grid, with the source's exact spacing/origin/direction.

        Volumes with no source are returned in the canonical grid.
        """
        import SimpleITK as sitk

        image = self.to_sitk()
        if self.source is None:
            return image
        src = self.source
        back = sitk.DICOMOrient(image, src.orientation)
        if tuple(back.GetSize()) != tuple(src.size):
            raise GeometryMismatch(
                f"'{self.name}' has size {back.GetSize()} in the source orientation but the source "
                f"{src.path} has {src.size}; it does not belong to that image."
            )
        _check_close("spacing", back.GetSpacing(), src.spacing, 1e-4, self.name, src.path)
        _check_close("origin", back.GetOrigin(), src.origin, 1e-3 * max(src.spacing), self.name, src.path)
        _check_close("direction", back.GetDirection(), src.direction, 1e-4, self.name, src.path)
        # Copy the source's values bit for bit so that a round trip never drifts.
        back.SetSpacing(src.spacing)
        back.SetOrigin(src.origin)
        back.SetDirection(src.direction)
        return back


def canonical_axes(direction: tuple[float, ...] | np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """How SimpleITK's ``DICOMOrient(..., "LPS")`` rearranges a source array, as numpy operations.

    For an array ``a`` in SimpleITK order (z, y, x) of an image with ITK `direction`, the canonical array is
    ``np.flip(a.transpose(perm), [i for i, f in enumerate(flips) if f])``. Found by orienting a tiny probe image
    with SimpleITK itself, so it always agrees with `Volume.from_sitk`.
    """
    import SimpleITK as sitk

    probe = np.arange(2 * 3 * 4, dtype=np.int32).reshape(4, 3, 2)  # distinct extent on every axis
    image = sitk.GetImageFromArray(probe)
    image.SetDirection(tuple(float(v) for v in np.asarray(direction, float).ravel()))
    out = sitk.GetArrayFromImage(sitk.DICOMOrient(image, CANONICAL_ORIENTATION))
    idx = np.stack(np.unravel_index(out, probe.shape))  # source (z, y, x) index of every canonical voxel
    perm, flips = [], []
    for axis in range(3):
        step = np.diff(np.moveaxis(idx, axis + 1, 1), axis=1)  # change of source indices along canonical `axis`
        src_axis = int(np.flatnonzero(np.abs(step).reshape(3, -1).max(axis=1))[0])
        perm.append(src_axis)
        flips.append(bool(step.reshape(3, -1)[src_axis, 0] < 0))
    return tuple(perm), tuple(flips)


def array_to_canonical(array: np.ndarray, direction: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Reorient the last three axes (SimpleITK order z, y, x) of `array` to the canonical LPS grid (a view)."""
    perm, flips = canonical_axes(direction)
    lead = array.ndim - 3
    out = array.transpose(*range(lead), *(lead + p for p in perm))
    return np.flip(out, [lead + i for i, f in enumerate(flips) if f]) if any(flips) else out


def array_to_source(array: np.ndarray, direction: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Inverse of `array_to_canonical`: canonical (…, z, y, x) back to the source file's array order (a view)."""
    perm, flips = canonical_axes(direction)
    lead = array.ndim - 3
    out = np.flip(array, [lead + i for i, f in enumerate(flips) if f]) if any(flips) else array
    return out.transpose(*range(lead), *(lead + int(i) for i in np.argsort(perm)))


def guess_kind(data: np.ndarray) -> VolumeKind:
    """Guess what voxel values mean: integer arrays in [0, 1000) with at most 256 values are label maps.

    Everything else (CT in HU with negative air, MR signal, floats) is treated as intensity; pass ``kind=``
    to the readers to override.
    """
    if data.dtype.kind in "iub" and data.size and data.min() >= 0 and data.max() < 1000:
        if len(np.unique(data)) <= 256:
            return VolumeKind.LABELS
    return VolumeKind.INTENSITY


def _check_close(what: str, got, want, tol: float, name: str, path: str | None) -> None:
    if not np.allclose(np.asarray(got, float), np.asarray(want, float), rtol=0, atol=tol):
        raise GeometryMismatch(
            f"'{name}' cannot be written back onto {path}: its {what} {tuple(np.round(got, 6))} differs from the "
            f"source's {tuple(np.round(want, 6))}."
        )


def check_same_grid(
    reference: Volume,
    other: Volume,
    *,
    spacing_tol: float = 1e-3,
    origin_tol_mm: float = 1e-2,
    direction_tol: float = 1e-3,
) -> None:
    """Raise `GeometryMismatch` unless `other` lies on the same voxel grid as `reference` (canonical grids).

    Parameters
    ----------
    reference, other : Volume
    spacing_tol : float
        Relative tolerance on each spacing.
    origin_tol_mm : float
        Absolute tolerance on the origin, in mm.
    direction_tol : float
        Absolute tolerance on each direction cosine.
    """
    problems = []
    if reference.shape != other.shape:
        problems.append(f"size {other.shape[::-1]} vs {reference.shape[::-1]} (x, y, z voxels)")
    if not np.allclose(other.spacing, reference.spacing, rtol=spacing_tol, atol=0):
        problems.append(f"spacing {other.spacing[::-1]} vs {reference.spacing[::-1]} mm (x, y, z)")
    if not np.allclose(other.origin, reference.origin, rtol=0, atol=origin_tol_mm):
        problems.append(
            f"origin {tuple(np.round(other.origin[::-1], 3))} vs {tuple(np.round(reference.origin[::-1], 3))} mm"
        )
    if not np.allclose(other.direction, reference.direction, rtol=0, atol=direction_tol):
        problems.append("direction cosines differ")
    if problems:
        other_name = other.source.path if other.source and other.source.path else other.name
        ref_name = reference.source.path if reference.source and reference.source.path else reference.name
        raise GeometryMismatch(
            f"{other_name} does not match the grid of {ref_name}: "
            + "; ".join(problems)
            + f". Resample it onto the image first: segunc resample {other_name} --like {ref_name} --out FILE."
        )
