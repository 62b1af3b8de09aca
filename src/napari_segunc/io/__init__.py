"""Readers and writers. Everything here works without Qt; `_npe2` adapts them to napari's plugin manifest."""

from __future__ import annotations

from .probabilities import ProbabilityMap, read_probabilities, write_probabilities
from .readers import SUPPORTED_SUFFIXES, DicomSeries, detect_format, list_dicom_series, read_volume
from .writers import atomic_write, output_format, versioned_path, write_csv, write_volume

__all__ = [
    "SUPPORTED_SUFFIXES",
    "DicomSeries",
    "ProbabilityMap",
    "atomic_write",
    "detect_format",
    "list_dicom_series",
    "output_format",
    "read_probabilities",
    "read_volume",
    "versioned_path",
    "write_csv",
    "write_probabilities",
    "write_volume",
]
