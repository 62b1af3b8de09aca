"""The package's small exception hierarchy.

Every error a user can cause is one of these, with a message a clinician can act on: it names the file and says
what to do. The CLI prints the message alone (no traceback) and exits with code 2.
"""

from __future__ import annotations

__all__ = ["SegUncError", "InvalidInput", "GeometryMismatch", "EngineUnavailable", "EngineFailed", "Cancelled"]


class SegUncError(Exception):
    """Base class of every error napari-segunc raises on purpose."""


class InvalidInput(SegUncError, ValueError):
    """A file, folder or argument cannot be used as given (missing, corrupt, wrong dimension, wrong format...)."""


class GeometryMismatch(InvalidInput):
    """Two images that must share a voxel grid do not (size, spacing, origin or direction differ)."""


class EngineUnavailable(SegUncError, RuntimeError):
    """An optional engine (nnU-Net, SAM2, CUDA...) is not installed or cannot run here."""


class EngineFailed(SegUncError, RuntimeError):
    """An engine (nnU-Net, SAM2) failed while running on input that was accepted; the message names the member and
    the engine's own error."""


class Cancelled(SegUncError):
    """A long job was stopped by the user between two steps."""
