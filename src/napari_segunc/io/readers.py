"""Read NIfTI, NRRD, MHA/MHD files and DICOM series into canonical `Volume` objects (SimpleITK does the reading).

Every file is checked before SimpleITK reads it (truncation, corrupt gzip, NaN voxels, sheared affines, label maps
that are images); DICOM folders go through `napari_segunc.io.dicom`. `read_policy` holds what the user accepted.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import gzip
import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..volume import FileFormat, Modality, SourceGeometry, Volume, VolumeKind
from .dicom import DicomSeries, list_dicom_series, read_dicom

__all__ = [
    "LABEL_MAP_SUFFIXES",
    "DicomSeries",
    "SUPPORTED_SUFFIXES",
    "detect_format",
    "file_suffix",
    "list_dicom_series",
    "read_mapping_file",
    "read_policy",
    "read_volume",
]

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = {
    ".nii": FileFormat.NIFTI,
    ".nii.gz": FileFormat.NIFTI,
    ".nrrd": FileFormat.NRRD,
    ".nhdr": FileFormat.NRRD,
    ".mha": FileFormat.MHA,
    ".mhd": FileFormat.MHD,
}
_SUPPORTED_TEXT = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM folder"
_GZIP_ERRORS = (EOFError, OSError, gzip.BadGzipFile, zlib.error)
#: a label map with more distinct values than this is an image read as labels (TotalSegmentator v2 has 117 classes)
MAX_LABELS = 1000


@dataclasses.dataclass(frozen=True)
class ReadPolicy:
    """What the readers accept beyond exact files, each only when the user asked for it (CLI options)."""

    replace_nonfinite: bool = False  # NaN/±Inf image voxels become 0, with a warning (otherwise refused)
    accept_dicom_gaps: bool = False  # DICOM series with missing, duplicate or uneven slices (otherwise refused)
    #: how a refusal tells the user to ask for each (the CLI's options; a dock names its check boxes)
    nonfinite_advice: str = "pass --replace-nonfinite"
    gaps_advice: str = "pass --accept-dicom-gaps"


_POLICY: contextvars.ContextVar[ReadPolicy] = contextvars.ContextVar("segunc_read_policy", default=ReadPolicy())  # noqa: B039 - frozen


@contextlib.contextmanager
def read_policy(
    *, replace_nonfinite: bool = False, accept_dicom_gaps: bool = False, **advice: str
) -> Iterator[ReadPolicy]:
    """Within the block, `read_volume` applies this policy (``--replace-nonfinite``, ``--accept-dicom-gaps``).

    `advice`: ``nonfinite_advice`` / ``gaps_advice``, the words a refusal uses to say how to ask for each (default
    the CLI options).
    """
    policy = ReadPolicy(replace_nonfinite, accept_dicom_gaps, **advice)
    token = _POLICY.set(policy)
    try:
        yield policy
    finally:
        _POLICY.reset(token)


def read_mapping_file(path: str | os.PathLike, what: str) -> Any:
    """The content of a YAML (``.yaml``, ``.yml``) or JSON file; `what` names it in the one-sentence error."""
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
        return yaml.safe_load(text) if p.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"{p}: cannot read the {what} ({reason}).") from None


#: File suffixes of the volume formats a label map can come in (what a folder of raters is searched for).
LABEL_MAP_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def file_suffix(path: Path) -> str:
    """The file's format suffix, lower case: ``.nii.gz`` for compressed NIfTI, else the last suffix."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def detect_format(path: str | os.PathLike) -> FileFormat | None:
    """Format of `path` from its name (a folder counts as DICOM); ``None`` when the package cannot read it."""
    p = Path(path)
    if p.is_dir():
        return FileFormat.DICOM
    return SUPPORTED_SUFFIXES.get(file_suffix(p))


def read_volume(
    path: str | os.PathLike,
    *,
    series_id: str | None = None,
    kind: VolumeKind | str | None = None,
    modality: Modality | str | None = None,
    name: str | None = None,
) -> Volume:
    """Read a 3D image file or DICOM folder into the canonical LPS grid.

    Parameters
    ----------
    path : path-like
        ``.nii``/``.nii.gz``/``.nrrd``/``.nhdr``/``.mha``/``.mhd`` file, or a folder holding a DICOM series.
    series_id : str, optional
        SeriesInstanceUID to read when a DICOM folder holds several series.
    kind : VolumeKind, optional
        Force intensity / labels / float map; guessed from the values otherwise (integer, non-negative and at
        most 256 values → labels). Label maps keep their integer dtype.
    modality : Modality, optional
        Force the modality; taken from the DICOM header, else CT when the image holds air (≤ −500 HU).
    name : str, optional
        Layer name; defaults to the file name without its suffix.

    Returns
    -------
    Volume
        ``data`` of shape (Z, Y, X) in LPS; ``source`` records the file's geometry for writing results back.

    Raises
    ------
    InvalidInput
        Missing path, unsupported suffix, corrupt or truncated file, 2D or 4D image, several DICOM series without
        `series_id` (the message lists them).
    """

    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidInput(f"{p} does not exist. Check the path (and that the drive is mounted).")
    fmt = detect_format(p)
    if fmt is None:
        raise InvalidInput(f"{p} has an unsupported extension '{file_suffix(p) or '(none)'}'; use {_SUPPORTED_TEXT}.")
    policy = _POLICY.get()
    float_map = kind is not None and VolumeKind(kind) is VolumeKind.FLOAT_MAP
    nonfinite = 0
    if fmt is FileFormat.DICOM:
        image, dicom_modality, sid = read_dicom(
            p, series_id, accept_gaps=policy.accept_dicom_gaps, gaps_advice=policy.gaps_advice
        )
    else:
        image, nonfinite = _read_file(p)
        dicom_modality, sid = "", None
    _check_3d(image, p)
    if not float_map:
        image = _check_finite(image, p, nonfinite, replace=policy.replace_nonfinite)

    source = SourceGeometry(
        path=str(p),
        format=fmt,
        size=tuple(int(v) for v in image.GetSize()),
        spacing=tuple(float(v) for v in image.GetSpacing()),
        origin=tuple(float(v) for v in image.GetOrigin()),
        direction=tuple(float(v) for v in image.GetDirection()),
        series_id=sid,
    )
    if name is None:
        name = p.name[: -len(file_suffix(p))] if fmt is not FileFormat.DICOM else p.name
    if kind is not None and VolumeKind(kind) is VolumeKind.LABELS:
        _check_label_like(image, p)
    vol = Volume.from_sitk(image, source=source, kind=VolumeKind(kind) if kind else None, name=name)
    if modality is not None:
        vol.modality = Modality(modality)
    elif dicom_modality in {"CT", "MR"}:
        vol.modality = Modality(dicom_modality)
    elif vol.kind is VolumeKind.INTENSITY and vol.data.size and float(np.min(vol.data)) <= -500:
        vol.modality = Modality.CT
    log.info("read %s: %s voxels, spacing %s mm, from %s", p, vol.shape, vol.spacing, source.orientation)
    return vol


def _read_file(p: Path):
    """The SimpleITK image of a file, and (NIfTI) its count of NaN/±Inf voxels, which ITK reads as 0."""
    import SimpleITK as sitk

    if p.stat().st_size == 0:
        raise InvalidInput(f"{p} is empty (0 bytes); the copy or export that made it probably failed.")
    nifti = SUPPORTED_SUFFIXES[file_suffix(p)] is FileFormat.NIFTI
    header = nonfinite = None
    if nifti:  # ITK reads a truncated NIfTI silently, padding it with garbage, and zeroes NaN
        header, nonfinite = check_nifti_complete(p)
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise InvalidInput(_explain_read_failure(p, exc)) from None
    if header is not None:
        _check_affine_kept(p, header, image)
    return image, nonfinite or 0


_TRUNCATED_GZIP = (
    "{p} is a truncated or corrupt gzip file; copy it again from its source (the download or transfer was probably "
    "cut short)."
)


def nifti_layout(path: Path):
    """(nibabel image, data offset, voxel dtype, voxel count, total bytes) a NIfTI file's header announces; raises
    what nibabel raises when the header cannot be read. The offset accounts for header extensions."""
    import nibabel as nib

    img = nib.load(str(path))
    proxy = img.dataobj
    offset, dtype, count = int(proxy.offset), np.dtype(proxy.dtype), int(np.prod(proxy.shape))
    return img, offset, dtype, count, offset + count * int(dtype.itemsize)


def check_nifti_complete(p: Path):
    """Raise `InvalidInput` unless the NIfTI file holds every voxel byte its header announces, intact.

    Returns (nibabel header image, number of NaN/±Inf voxels): the voxels are scanned while checking, so a float
    image's non-finite values are counted before SimpleITK replaces them by 0.
    """
    with open(p, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if file_suffix(p) == ".nii.gz" and not gzipped:
        raise InvalidInput(f"{p} is named .nii.gz but is not gzip-compressed; rename it to .nii or re-export it.")
    try:
        img, offset, dtype, count, expected = nifti_layout(p)
    except Exception:  # noqa: BLE001 - a header nibabel cannot parse: cut inside it, or not a NIfTI
        if gzipped:
            _read_all_gzip(p)
            raise InvalidInput(
                f"{p} decompresses but is not a readable NIfTI image; it may be truncated or another format."
            ) from None
        raise InvalidInput(
            f"{p} is not a readable NIfTI image: its header is cut short or of another format; copy it again from "
            "its source or re-export it."
        ) from None
    is_float = dtype.kind == "f"
    nonfinite = 0
    if gzipped:
        got, rest = 0, b""
        try:
            with gzip.open(p, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    start = got
                    got += len(chunk)
                    if is_float and got > offset:
                        buf = rest + chunk[max(0, offset - start) :]
                        n = len(buf) // dtype.itemsize * dtype.itemsize
                        values = np.frombuffer(buf[:n], dtype=dtype)
                        nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                        rest = buf[n:]
        except _GZIP_ERRORS:
            raise InvalidInput(_TRUNCATED_GZIP.format(p=p)) from None
    else:
        got = p.stat().st_size
        if is_float and got >= expected:
            values = np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=(count,))
            for i in range(0, values.size, 1 << 22):
                part = values[i : i + (1 << 22)]
                nonfinite += int(part.size - np.count_nonzero(np.isfinite(part)))
            del values
    if got < expected:
        raise InvalidInput(
            f"{p} is truncated: it holds {got} bytes of image data and header where its header announces "
            f"{expected}; copy it again from its source."
        )
    return img, nonfinite


def _read_all_gzip(p: Path) -> None:
    try:
        with gzip.open(p, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except _GZIP_ERRORS:
        raise InvalidInput(_TRUNCATED_GZIP.format(p=p)) from None


def _check_affine_kept(p: Path, header, image) -> None:
    """Warn when ITK's grid differs from the NIfTI affine (a sheared affine is made orthogonal), naming by how much."""
    if image.GetDimension() != 3:
        return  # refused by _check_3d
    size = np.asarray(image.GetSize(), float)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    itk = np.eye(4)
    itk[:3, :3] = direction * np.asarray(image.GetSpacing(), float)
    itk[:3, 3] = image.GetOrigin()
    itk[:2] *= -1  # LPS → RAS, as nibabel reports it
    corners = np.array([[i, j, k, 1.0] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    try:
        affine = np.asarray(header.affine, float)
    except Exception:  # noqa: BLE001
        return
    shift = float(np.max(np.linalg.norm((corners @ affine.T - corners @ itk.T)[:, :3], axis=1)))
    if shift > 0.01:  # mm
        log.warning(
            "%s has a sheared (non-orthogonal) affine: it is read on the nearest orthogonal grid, which moves its "
            "voxels by up to %.2f mm, and results are written on that grid; resample it onto an orthogonal grid "
            "first if that matters.",
            p,
            shift,
        )


def _check_finite(image, p: Path, nonfinite: int, *, replace: bool):
    """Refuse NaN/±Inf voxels (counted before ITK zeroed them for NIfTI), or replace them by 0 with a warning."""
    import SimpleITK as sitk

    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        view = sitk.GetArrayViewFromImage(image)
        bad = ~np.isfinite(view)
        n = int(np.count_nonzero(bad))
        if n and replace:
            arr = sitk.GetArrayFromImage(image)
            arr[~np.isfinite(arr)] = 0
            fixed = sitk.GetImageFromArray(arr)
            fixed.CopyInformation(image)
            image = fixed
        nonfinite = max(nonfinite, n)
    if not nonfinite:
        return image
    if not replace:
        raise InvalidInput(
            f"{p} holds {nonfinite} NaN or infinite voxel(s); fix the file, or {_POLICY.get().nonfinite_advice} to "
            "read them as 0."
        )
    log.warning("%s: %d NaN or infinite voxel(s) read as 0, as asked.", p, nonfinite)
    return image


def _check_label_like(image, p: Path) -> None:
    """Refuse an image given where a label map is expected (negative or fractional values, too many labels)."""
    import SimpleITK as sitk

    data = sitk.GetArrayViewFromImage(image)
    if not data.size:
        return
    lo, hi = float(np.min(data)), float(np.max(data))
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise InvalidInput(f"{p} holds NaN or infinite values, so it is not a label map; give the organ label map.")
    if data.dtype.kind == "f" and np.any(data != np.round(data)):
        raise InvalidInput(
            f"{p} holds fractional values ({lo:g} .. {hi:g}), so it is not a label map (a probability or an image?); "
            "give the organ label map."
        )
    if lo < 0:
        raise InvalidInput(
            f"{p} holds negative values ({lo:g} .. {hi:g}), so it looks like an image, not a label map; give the "
            "organ label map."
        )
    n = len(np.unique(data)) if hi >= MAX_LABELS else 0
    if n > MAX_LABELS:
        raise InvalidInput(
            f"{p} holds {n} distinct values ({lo:g} .. {hi:g}), so it looks like an image, not a label map; give the "
            "organ label map."
        )


def _explain_read_failure(p: Path, exc: Exception) -> str:
    kind = {
        ".nii": "NIfTI",
        ".nii.gz": "NIfTI",
        ".nrrd": "NRRD",
        ".nhdr": "NRRD",
        ".mha": "MetaImage",
        ".mhd": "MetaImage",
    }[file_suffix(p)]
    if "orthonormal" in str(exc):
        return (
            f"{p} has a sheared (non-orthogonal) affine that ITK cannot represent; resample it onto an orthogonal "
            "grid first (e.g. with nibabel or 3D Slicer)."
        )
    with open(p, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        try:
            with gzip.open(p, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        except _GZIP_ERRORS:
            return _TRUNCATED_GZIP.format(p=p)
        return f"{p} decompresses but is not a readable {kind} image; it may be truncated or another format."
    if file_suffix(p) == ".nii.gz":
        return f"{p} is named .nii.gz but is not gzip-compressed; rename it to .nii or re-export it."
    if file_suffix(p) == ".mhd":
        return f"{p} could not be read; check that the data file it names (ElementDataFile) exists next to it."
    detail = str(exc).strip().splitlines()
    hint = next((line for line in detail if "rror" in line or "Could not" in line), detail[-1] if detail else "")
    return f"{p} is not a readable {kind} image (it may be truncated or another format). ITK says: {hint.strip()}"


def _check_3d(image, p: Path) -> None:
    dim = image.GetDimension()
    comps = image.GetNumberOfComponentsPerPixel()
    if dim == 2:
        raise InvalidInput(f"{p} is a 2D image {tuple(image.GetSize())}; a 3D volume is needed.")
    if dim == 4 or comps > 1:
        n = image.GetSize()[3] if dim == 4 else comps
        raise InvalidInput(
            f"{p} is a 4D image ({n} volumes of {tuple(image.GetSize()[:3])}); a 3D volume was needed here. "
            "Open one channel, or use it where probability maps are expected."
        )
    if dim != 3:
        raise InvalidInput(f"{p} has {dim} dimensions; a 3D volume is needed.")
