"""Read NIfTI, NRRD, MHA/MHD files and DICOM series into canonical `Volume` objects (SimpleITK does the reading)."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ..volume import FileFormat, Modality, SourceGeometry, Volume, VolumeKind

__all__ = [
    "DicomSeries",
    "SUPPORTED_SUFFIXES",
    "detect_format",
    "list_dicom_series",
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


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def detect_format(path: str | os.PathLike) -> FileFormat | None:
    """Format of `path` from its name (a folder counts as DICOM); ``None`` when the package cannot read it."""
    p = Path(path)
    if p.is_dir():
        return FileFormat.DICOM
    return SUPPORTED_SUFFIXES.get(_suffix(p))


@dataclasses.dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found in a folder."""

    series_id: str
    n_files: int
    description: str
    modality: str

    def __str__(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.series_id} ({self.modality or '?'}{desc}, {self.n_files} files)"


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """The DICOM series stored directly in `folder` (not its sub-folders), with their size and description."""
    import SimpleITK as sitk

    folder = str(folder)
    series = []
    # GDCM prints "No Series were found" (ITK warning, on stderr) for a folder without DICOM: callers say it instead
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder) or ()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    for sid in ids:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, sid)
        description = modality = ""
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(files[0])
            reader.ReadImageInformation()
            if reader.HasMetaDataKey("0008|103e"):
                description = reader.GetMetaData("0008|103e").strip()
            if reader.HasMetaDataKey("0008|0060"):
                modality = reader.GetMetaData("0008|0060").strip()
        except RuntimeError:  # unreadable header: still list the series
            pass
        series.append(DicomSeries(sid, len(files), description, modality))
    return series


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
        raise InvalidInput(f"{p} has an unsupported extension '{_suffix(p) or '(none)'}'; use {_SUPPORTED_TEXT}.")
    if fmt is FileFormat.DICOM:
        image, dicom_modality, sid = _read_dicom(p, series_id)
    else:
        image = _read_file(p)
        dicom_modality, sid = "", None
    _check_3d(image, p)

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
        name = p.name[: -len(_suffix(p))] if fmt is not FileFormat.DICOM else p.name
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
    import SimpleITK as sitk

    if p.stat().st_size == 0:
        raise InvalidInput(f"{p} is empty (0 bytes); the copy or export that made it probably failed.")
    if SUPPORTED_SUFFIXES[_suffix(p)] is FileFormat.NIFTI:
        _check_nifti_complete(p)  # ITK reads a truncated NIfTI silently, padding it with garbage
    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise InvalidInput(_explain_read_failure(p, exc)) from None


def _check_nifti_complete(p: Path) -> None:
    """Raise `InvalidInput` when a NIfTI file holds fewer voxel bytes than its header announces."""
    import nibabel as nib

    with open(p, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if _suffix(p) == ".nii.gz" and not gzipped:
        raise InvalidInput(f"{p} is named .nii.gz but is not gzip-compressed; rename it to .nii or re-export it.")
    try:
        proxy = nib.load(str(p)).dataobj  # its offset accounts for header extensions
        expected = int(proxy.offset) + int(np.prod(proxy.shape)) * int(proxy.dtype.itemsize)
    except Exception:  # noqa: BLE001 - any header failure means "not a NIfTI"; ITK then explains
        return
    if gzipped:
        got = 0
        try:
            with gzip.open(p, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    got += len(chunk)
        except (EOFError, OSError, gzip.BadGzipFile):
            raise InvalidInput(
                f"{p} is a truncated or corrupt gzip file; copy it again from its source "
                "(the download or transfer was probably cut short)."
            ) from None
    else:
        got = p.stat().st_size
    if got < expected:
        raise InvalidInput(
            f"{p} is truncated: it holds {got} bytes of image data and header where its header announces "
            f"{expected}; copy it again from its source."
        )


def _explain_read_failure(p: Path, exc: Exception) -> str:
    kind = {
        ".nii": "NIfTI",
        ".nii.gz": "NIfTI",
        ".nrrd": "NRRD",
        ".nhdr": "NRRD",
        ".mha": "MetaImage",
        ".mhd": "MetaImage",
    }[_suffix(p)]
    with open(p, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        try:
            with gzip.open(p, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        except (EOFError, OSError, gzip.BadGzipFile):
            return (
                f"{p} is a truncated or corrupt gzip file; copy it again from its source "
                "(the download or transfer was probably cut short)."
            )
        return f"{p} decompresses but is not a readable {kind} image; it may be truncated or another format."
    if _suffix(p) == ".nii.gz":
        return f"{p} is named .nii.gz but is not gzip-compressed; rename it to .nii or re-export it."
    if _suffix(p) == ".mhd":
        return f"{p} could not be read; check that the data file it names (ElementDataFile) exists next to it."
    detail = str(exc).strip().splitlines()
    hint = next((line for line in detail if "rror" in line or "Could not" in line), detail[-1] if detail else "")
    return f"{p} is not a readable {kind} image (it may be truncated or another format). ITK says: {hint.strip()}"


def _read_dicom(folder: Path, series_id: str | None):
    import SimpleITK as sitk

    series = list_dicom_series(folder)
    if not series:
        raise InvalidInput(
            f"{folder} contains no DICOM series (series in sub-folders are not searched); choose the folder that "
            "holds the slice files."
        )
    if series_id is None:
        if len(series) > 1:
            listing = "; ".join(str(s) for s in series)
            raise InvalidInput(f"{folder} holds {len(series)} DICOM series; choose one with its series id: {listing}.")
        chosen = series[0]
    else:
        matches = [s for s in series if s.series_id == series_id]
        if not matches:
            raise InvalidInput(
                f"{folder} has no DICOM series '{series_id}'; it holds: " + "; ".join(str(s) for s in series) + "."
            )
        chosen = matches[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), chosen.series_id))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InvalidInput(
            f"The DICOM series {chosen.series_id} in {folder} could not be read (a slice may be corrupt or "
            f"missing): {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"
        ) from None
    return image, chosen.modality, chosen.series_id


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
