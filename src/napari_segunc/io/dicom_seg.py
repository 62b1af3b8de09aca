"""DICOM SEG export with highdicom: the labels (or the class probabilities) of an image that came from DICOM, as a
Segmentation object that references its source series, for a PACS.

- The segments are the organs present, numbered 1… in increasing label value, each with its name as label, the
  SNOMED CT category "Anatomical Structure" and the organ's SNOMED CT type (`SNOMED_TYPES`, from pydicom's code
  dictionary; "Organ" for names it does not know), and the algorithm that made it (name, version, family
  "Artificial Intelligence", the models used as parameters). Reviewed labels are SEMIAUTOMATIC, a model's raw
  output AUTOMATIC.
- The frames are the source slices: the labels are put back into the source series' own grid (the inverse of the
  canonical reorientation) and each slice is matched to its DICOM instance by position, so every frame references
  the instance it segments (checked: the position, the rows and columns, the orientation).
- BINARY for labels; FRACTIONAL (DICOM's own encoding of probabilities, 0–255 for 0–1) for probability maps.

The source DICOM files are only read (without their pixel data). The file is written atomically, never over an
existing one unless asked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ..organs import canonical_organ_name
from ..volume import Volume, VolumeKind

__all__ = ["SNOMED_TYPES", "read_dicom_seg_labels", "source_datasets", "write_dicom_seg"]

log = logging.getLogger(__name__)

#: Canonical organ name → the attribute of ``pydicom.sr.codedict.codes.SCT`` giving its SNOMED CT code.
SNOMED_TYPES = {
    "liver": "Liver",
    "kidney_right": "Kidney",
    "kidney_left": "Kidney",
    "kidney": "Kidney",
    "spleen": "Spleen",
    "pancreas": "Pancreas",
    "aorta": "Aorta",
    "inferior_vena_cava": "InferiorVenaCava",
    "adrenal_gland_right": "AdrenalGland",
    "adrenal_gland_left": "AdrenalGland",
    "gallbladder": "Gallbladder",
    "stomach": "Stomach",
    "esophagus": "Esophagus",
    "duodenum": "Duodenum",
}


def source_datasets(image: Volume) -> list:
    """The DICOM instances of `image`'s source series, in the order of its source grid's slices.

    Each slice k of the source grid is matched to the instance whose ImagePositionPatient is the slice's position
    (within a thousandth of the slice spacing); rows, columns and orientation must agree.
    """
    import pydicom
    import SimpleITK as sitk

    src = image.source
    if src is None or src.format.value != "dicom" or not src.path:
        raise InvalidInput(
            f"'{image.name}' was not read from a DICOM series; DICOM SEG needs the source series (open the DICOM "
            "folder, not a NIfTI copy)."
        )
    folder = Path(src.path)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), src.series_id or "")
    datasets = []
    filled = 0
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad files
            raise InvalidInput(f"{f} is not a readable DICOM file ({exc}); DICOM SEG needs every slice.") from None
        # an anonymiser may blank the dataset's SOP class and instance UIDs while the file meta keeps them (they
        # are the same UIDs by definition): take them from there, in memory only
        for key, meta in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(ds.get(key, "") or "") and str(getattr(ds.file_meta, meta, "") or ""):
                setattr(ds, key, getattr(ds.file_meta, meta))
                filled += 1
        if not str(ds.get("SOPInstanceUID", "") or ""):
            raise InvalidInput(f"{f} has no SOP Instance UID: a DICOM SEG cannot reference it.")
        datasets.append(ds)
    if filled:
        log.warning(
            "the DICOM series in %s has blank SOP class/instance UIDs in %d place(s); the file meta's were used",
            folder,
            filled,
        )
    grid = image.with_data(np.zeros(image.shape, np.uint8), kind=VolumeKind.LABELS).to_source_sitk()
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    step = float(src.spacing[2])
    ordered = []
    for k in range(grid.GetSize()[2]):
        at = np.array(grid.TransformIndexToPhysicalPoint((0, 0, k)))
        d = np.linalg.norm(positions - at, axis=1)
        i = int(np.argmin(d))
        if d[i] > 1e-3 * max(step, 1.0) + 1e-3:
            raise InvalidInput(
                f"No slice of the DICOM series in {folder} lies at position {at.round(3).tolist()} mm (slice {k} of "
                f"the image); the series changed since it was read."
            )
        ds = datasets[i]
        if (int(ds.Rows), int(ds.Columns)) != (grid.GetSize()[1], grid.GetSize()[0]):
            raise InvalidInput(f"{ds.filename}: {ds.Rows}×{ds.Columns} pixels, not the image's slice size.")
        ordered.append(ds)
    return ordered


def _source_order(image: Volume, data: np.ndarray) -> np.ndarray:
    """A canonical (z, y, x) array of `image`'s grid in the source series' (slice, row, column) order."""
    import SimpleITK as sitk

    vol = image.with_data(data, kind=VolumeKind.LABELS if data.dtype.kind in "biu" else VolumeKind.FLOAT_MAP)
    return sitk.GetArrayFromImage(vol.to_source_sitk())


def _segment(number: int, name: str, algorithm, automatic: bool):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    code = getattr(codes.SCT, SNOMED_TYPES.get(canonical_organ_name(name), "Organ"))
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name,
        segmented_property_category=codes.cid7150.AnatomicalStructure,
        segmented_property_type=code,
        algorithm_type=(
            hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
            if automatic
            else hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
        ),
        algorithm_identification=algorithm,
    )


def write_dicom_seg(
    image: Volume,
    out: str | os.PathLike,
    *,
    organs: Mapping[str, int],
    labels: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    algorithm: str = "napari-segunc",
    models: Sequence[str] = (),
    automatic: bool = False,
    description: str = "napari-segunc segmentation",
    overwrite: bool = False,
) -> Path:
    """Write `labels` (canonical (z, y, x), label values of `organs`) or `probabilities` (canonical (C, z, y, x),
    channel c = the c-th organ by label value after background) of a DICOM image as a DICOM SEG file.

    Raises
    ------
    InvalidInput
        The image did not come from DICOM, a slice cannot be matched, nothing to export, or the output exists.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .. import __version__
    from .writers import atomic_write

    if (labels is None) == (probabilities is None):
        raise InvalidInput("Give either a label map or class probabilities to export as DICOM SEG.")
    datasets = source_datasets(image)
    ordered = sorted(((int(v), n) for n, v in organs.items() if int(v) > 0), key=lambda t: t[0])
    params = {"models": ", ".join(models)} if models else None
    ident = hd.AlgorithmIdentificationSequence(
        name=algorithm, family=codes.cid7162.ArtificialIntelligence, version=__version__, parameters=params
    )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != image.shape:
            raise InvalidInput(f"The label map is {labels.shape} voxels and the image {image.shape}; they must match.")
        present = [(v, n) for v, n in ordered if (labels == v).any()]
        if not present:
            raise InvalidInput("The label map holds none of the organs to export: the DICOM SEG would be empty.")
        numbered = np.zeros(labels.shape, np.uint16 if len(present) > 255 else np.uint8)
        for number, (value, _) in enumerate(present, start=1):
            numbered[labels == value] = number
        pixels = _source_order(image, numbered)
        kind = hd.seg.SegmentationTypeValues.BINARY
    else:
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if probabilities.shape[1:] != image.shape or probabilities.shape[0] != len(ordered) + 1:
            raise InvalidInput(
                f"The probabilities are {probabilities.shape} and the image {image.shape} with {len(ordered)} "
                "organ(s): (organs + background, z, y, x) is needed."
            )
        present = ordered
        pixels = np.stack([_source_order(image, np.clip(p, 0, 1)) for p in probabilities[1:]], axis=-1)
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
    segments = [_segment(i, name, ident, automatic) for i, (_, name) in enumerate(present, start=1)]
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="napari-segunc",
        manufacturer_model_name="napari-segunc",
        software_versions=__version__,
        device_serial_number="none",
        series_description=description[:64],
        content_description=description[:64],
        content_label="SEGUNC",
    )
    return atomic_write(Path(out).expanduser(), lambda tmp: seg.save_as(tmp), overwrite=overwrite)


def read_dicom_seg_labels(path: str | os.PathLike, image: Volume) -> tuple[np.ndarray, dict[str, int]]:
    """A DICOM SEG of `image`'s series read back with highdicom onto `image`'s canonical grid: (labels, organs).

    Segment k becomes label k; binary segments are combined (they never overlap in what `write_dicom_seg` writes).
    """
    import highdicom as hd
    import SimpleITK as sitk

    seg = hd.seg.segread(str(path))
    datasets = source_datasets(image)
    uids = [ds.SOPInstanceUID for ds in datasets]
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    grid = image.with_data(np.zeros(image.shape, np.uint8), kind=VolumeKind.LABELS).to_source_sitk()
    back = sitk.GetImageFromArray(np.ascontiguousarray(pixels.astype(np.uint16)))
    back.CopyInformation(grid)
    canonical = Volume.from_sitk(back, kind=VolumeKind.LABELS).data
    organs = {d.segment_label: int(d.segment_number) for d in seg.SegmentSequence}
    return canonical, organs
