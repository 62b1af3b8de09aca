"""DICOM series: listing a folder's series and reading one into a SimpleITK image with its slice spacing checked.

`napari_segunc.io.read_volume` calls `read_dicom` for a folder. SimpleITK (GDCM) does the reading; this module adds
what it only logs: a missing, duplicate or unevenly spaced slice is refused (the volume would be stretched) unless
the user accepts it, and files of the folder the series leaves out are named.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInput

__all__ = ["DicomSeries", "list_dicom_series", "read_dicom", "slice_spacing_problem"]

log = logging.getLogger(__name__)


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


def read_dicom(folder: Path, series_id: str | None, *, accept_gaps: bool = False, gaps_advice: str = ""):
    """Read one DICOM series of `folder` with SimpleITK's series reader: (image, modality, series id).

    Refused: a folder without series, several series without `series_id`, an unknown `series_id`, an unreadable
    slice, and (unless `accept_gaps`, then with a warning) missing, duplicate or unevenly spaced slices, naming the
    gap; `gaps_advice` says how to accept them. Files of the folder the series leaves out are named in a warning.
    """
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
        ignored = sorted(
            f.name
            for f in folder.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.name not in used and f.suffix.lower() not in _NOT_SLICES
        )
        if ignored:
            log.warning(
                "%d file(s) in %s are not part of the series read (duplicate or unreadable slices?): %s",
                len(ignored),
                folder,
                ", ".join(ignored[:5]) + (", …" if len(ignored) > 5 else ""),
            )
    problem = slice_spacing_problem(reader, files)
    if problem:
        if not accept_gaps:
            raise InvalidInput(
                f"The DICOM series in {folder} {problem}; the volume would be stretched. Restore the slice from the "
                f"source, or {gaps_advice or 'accept the gaps'} to read it anyway."
            )
        log.warning("DICOM series in %s %s; read anyway, as asked.", folder, problem)
    return image, chosen.modality, chosen.series_id


_NOT_SLICES = {".txt", ".json", ".xml", ".md", ".csv", ".pdf", ".html", ".nii", ".gz", ".zip"}


def slice_spacing_problem(reader, files) -> str | None:
    """What is wrong with the slice positions (a gap, a duplicate, uneven spacing), or None when they are regular.

    `reader` is a SimpleITK series reader that has read `files` with their metadata (positions 0020|0032 along the
    normal of the orientation 0020|0037)."""
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
