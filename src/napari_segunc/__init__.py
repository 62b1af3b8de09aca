"""napari-segunc: review medical image segmentation with its uncertainty.

The top-level package stays light: it imports neither Qt, napari nor torch. Import the pieces you need::

    from napari_segunc import read_volume, write_volume, make_phantom
"""

from __future__ import annotations

from .errors import Cancelled, EngineFailed, EngineUnavailable, GeometryMismatch, InvalidInput, SegUncError
from .io import read_volume, write_volume
from .phantom import make_phantom
from .volume import Modality, Volume, VolumeKind

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Cancelled",
    "EngineFailed",
    "EngineUnavailable",
    "GeometryMismatch",
    "InvalidInput",
    "Modality",
    "SegUncError",
    "Volume",
    "VolumeKind",
    "make_phantom",
    "read_volume",
    "write_volume",
]
