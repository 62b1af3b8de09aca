"""Readers and writers. Everything here works without Qt; `_npe2` adapts them to napari's plugin manifest."""

from __future__ import annotations

from .outputs import check_outputs, relocate, staged_folder, volume_bytes
from .probabilities import ProbabilityMap, read_probabilities, write_probabilities
from .readers import SUPPORTED_SUFFIXES, DicomSeries, detect_format, list_dicom_series, read_policy, read_volume
from .writers import atomic_write, output_format, versioned_path, write_csv, write_volume

__all__ = [
    "SUPPORTED_SUFFIXES",
    "DicomSeries",
    "ProbabilityMap",
    "atomic_write",
    "check_outputs",
    "detect_format",
    "list_dicom_series",
    "output_format",
    "read_policy",
    "read_probabilities",
    "read_volume",
    "relocate",
    "staged_folder",
    "versioned_path",
    "volume_bytes",
    "write_csv",
    "write_probabilities",
    "write_volume",
]
