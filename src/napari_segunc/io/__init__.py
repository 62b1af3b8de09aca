"""Readers and writers. Everything here works without Qt; `_npe2` adapts them to napari's plugin manifest."""

from __future__ import annotations

from .readers import SUPPORTED_SUFFIXES, DicomSeries, detect_format, list_dicom_series, read_volume
from .writers import output_format, versioned_path, write_volume

__all__ = [
    "SUPPORTED_SUFFIXES",
    "DicomSeries",
    "detect_format",
    "list_dicom_series",
    "output_format",
    "read_volume",
    "versioned_path",
    "write_volume",
]
