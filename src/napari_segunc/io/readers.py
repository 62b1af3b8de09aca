"""Read NIfTI, NRRD, MHA/MHD files and DICOM series into canonical `Volume` objects (SimpleITK does the reading)."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import gzip
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ..volume import FileFormat, Modality, SourceGeometry, Volume, VolumeKind

__all__ = [
    "DicomSeries",
    "SUPPORTED_SUFFIXES",
    "detect_format",
    "list_dicom_series",
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
    policy = _POLICY.get()
    float_map = kind is not None and VolumeKind(kind) is VolumeKind.FLOAT_MAP
    nonfinite = 0
    if fmt is FileFormat.DICOM:
        image, dicom_modality, sid = _read_dicom(p, series_id, accept_gaps=policy.accept_dicom_gaps)
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
        name = p.name[: -len(_suffix(p))] if fmt is not FileFormat.DICOM else p.name
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
    nifti = SUPPORTED_SUFFIXES[_suffix(p)] is FileFormat.NIFTI
    header = nonfinite = None
    if nifti:  # ITK reads a truncated NIfTI silently, padding it with garbage, and zeroes NaN
        header, nonfinite = _check_nifti_complete(p)
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


def _check_nifti_complete(p: Path):
    """Raise `InvalidInput` unless the NIfTI file holds every voxel byte its header announces, intact.

    Returns (nibabel header image, number of NaN/±Inf voxels): the voxels are scanned while checking, so a float
    image's non-finite values are counted before SimpleITK replaces them by 0.
    """
    import nibabel as nib

    with open(p, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if _suffix(p) == ".nii.gz" and not gzipped:
        raise InvalidInput(f"{p} is named .nii.gz but is not gzip-compressed; rename it to .nii or re-export it.")
    try:
        img = nib.load(str(p))
        proxy = img.dataobj  # its offset accounts for header extensions
        offset, dtype = int(proxy.offset), np.dtype(proxy.dtype)
        expected = offset + int(np.prod(proxy.shape)) * int(dtype.itemsize)
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
            values = np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=(int(np.prod(proxy.shape)),))
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
    }[_suffix(p)]
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
    if _suffix(p) == ".nii.gz":
        return f"{p} is named .nii.gz but is not gzip-compressed; rename it to .nii or re-export it."
    if _suffix(p) == ".mhd":
        return f"{p} could not be read; check that the data file it names (ElementDataFile) exists next to it."
    detail = str(exc).strip().splitlines()
    hint = next((line for line in detail if "rror" in line or "Could not" in line), detail[-1] if detail else "")
    return f"{p} is not a readable {kind} image (it may be truncated or another format). ITK says: {hint.strip()}"


def _read_dicom(folder: Path, series_id: str | None, *, accept_gaps: bool = False):
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
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), chosen.series_id)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's "Non uniform sampling" warning: said below instead
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InvalidInput(
            f"The DICOM series {chosen.series_id} in {folder} could not be read (a slice may be corrupt or "
            f"missing): {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"
        ) from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if len(series) == 1:
        used = {Path(f).name for f in files}
        ignored = sorted(f.name for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                         and f.name not in used and f.suffix.lower() not in _NOT_SLICES)  # fmt: skip
        if ignored:
            log.warning(
                "%d file(s) in %s are not part of the series read (duplicate or unreadable slices?): %s",
                len(ignored), folder, ", ".join(ignored[:5]) + (", …" if len(ignored) > 5 else ""),
            )  # fmt: skip
    problem = _slice_spacing_problem(reader, files)
    if problem:
        if not accept_gaps:
            raise InvalidInput(
                f"The DICOM series in {folder} {problem}; the volume would be stretched. Restore the slice from the "
                f"source, or {_POLICY.get().gaps_advice} to read it anyway."
            )
        log.warning("DICOM series in %s %s; read anyway, as asked.", folder, problem)
    return image, chosen.modality, chosen.series_id


_NOT_SLICES = {".txt", ".json", ".xml", ".md", ".csv", ".pdf", ".html", ".nii", ".gz", ".zip"}


def _slice_spacing_problem(reader, files) -> str | None:
    """What is wrong with the slice positions (a gap, a duplicate, uneven spacing), or None when they are regular."""
    if len(files) < 3:
        return None
    try:
        orient = [float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")]
        normal = np.cross(orient[:3], orient[3:6])
        pos = np.array([[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(len(files))])
    except (RuntimeError, ValueError, IndexError):
        return None  # no position tags: nothing to check against
    z = pos @ normal
    order = np.argsort(z)
    z, names = z[order], [Path(files[i]).name for i in order]
    steps = np.diff(z)
    step = float(np.median(steps))
    dup = np.flatnonzero(np.abs(steps) < 1e-3 * max(abs(step), 1e-6) + 1e-4)
    if dup.size:
        i = int(dup[0])
        return f"holds two slices at the same position {z[i]:.2f} mm ({names[i]} and {names[i + 1]})"
    gap = np.flatnonzero(steps > 1.5 * step)
    if gap.size:
        i = int(gap[0])
        missing = round(steps[i] / step) - 1
        return (
            f"has a gap of {steps[i]:.2f} mm between {names[i]} ({z[i]:.2f} mm) and {names[i + 1]} ({z[i + 1]:.2f} "
            f"mm) where the other slices are {step:.2f} mm apart: about {missing} slice(s) missing at position "
            f"{i + 1} of {len(z)}"
        )
    if float(np.max(steps) - np.min(steps)) > max(0.01 * step, 1e-3):
        return f"has unevenly spaced slices ({np.min(steps):.3f} to {np.max(steps):.3f} mm apart)"
    return None


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
