"""The MedSAM2 dock's keyboard and guidance: B box, P click, T polarity, M next organ, G the most uncertain place
left, Enter accept, Ctrl+Z / Ctrl+Shift+Z undo / redo.

Keys are bound on the viewer while the dock lives (`BoundKeys`, released when it closes) and on the organs' own
box and click layers, whose napari keys (P polygon, T path, B to back…) would otherwise win while they are active.
On the image layer the viewer's bindings apply; on a labels layer (the annotation) napari's paint keys stay.

Guidance (`most_uncertain_place`): after each run, the slice of the organ where MedSAM2's entropy sums highest,
inside the organ's box across its slice range (its predicted voxels and boxes, grown by a margin), and the centre of
that uncertainty on the slice. G moves the view there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ._layers import same_layer
from ._view import BoundKeys

if TYPE_CHECKING:
    import napari

__all__ = ["KEYS_HELP", "ClickKeys", "most_uncertain_place"]

#: What the dock shows under its buttons.
KEYS_HELP = "Keys: B box · P click · T +/− · M next organ · G most uncertain · Enter accept · Ctrl+Z / Ctrl+Shift+Z"

#: Voxels added around the organ's extent (y, x) when looking for its most uncertain slice.
MARGIN = 8


def most_uncertain_place(entropy: np.ndarray, segmentation: np.ndarray, organ) -> tuple[int, int, int, float] | None:
    """``(z, y, x, entropy sum)`` of the organ's most uncertain slice and the entropy-weighted centre on it.

    Parameters
    ----------
    entropy : ndarray (Z, Y, X)
        MedSAM2's entropy (nats).
    segmentation : ndarray of int (Z, Y, X)
        The fused segmentation (the organ is ``segmentation == organ.label``).
    organ : OrganPrompt
        Its slice range and boxes bound the search (with `MARGIN` voxels in y and x).
    """
    z0, z1 = organ.z_min, organ.z_max
    mask = segmentation[z0 : z1 + 1] == organ.label
    ys, xs = [], []
    if mask.any():
        _, my, mx = np.nonzero(mask)
        ys += [int(my.min()), int(my.max())]
        xs += [int(mx.min()), int(mx.max())]
    for b in organ.boxes:
        ys += [b.y_min, b.y_max]
        xs += [b.x_min, b.x_max]
    for c in organ.corrections:
        ys += [k.y for k in c.clicks]
        xs += [k.x for k in c.clicks]
    if not ys:
        return None
    ny, nx = entropy.shape[1:]
    y0, y1 = max(0, min(ys) - MARGIN), min(ny, max(ys) + MARGIN + 1)
    x0, x1 = max(0, min(xs) - MARGIN), min(nx, max(xs) + MARGIN + 1)
    window = np.asarray(entropy[z0 : z1 + 1, y0:y1, x0:x1], dtype=np.float64)
    sums = window.sum(axis=(1, 2))
    if not np.isfinite(sums).all() or sums.max() <= 0:
        return None
    k = int(np.argmax(sums))
    weights = window[k]
    gy, gx = np.indices(weights.shape)
    cy = int(round(float((gy * weights).sum() / weights.sum()))) + y0
    cx = int(round(float((gx * weights).sum() / weights.sum()))) + x0
    return z0 + k, cy, cx, float(sums[k])


class ClickKeys:
    """The dock's keys: bound on the viewer and on the organ layers while the dock lives."""

    def __init__(self, viewer: napari.Viewer, actions: dict[str, Callable[[], None]]) -> None:
        self.actions = actions
        self.viewer_keys = BoundKeys(viewer, {k: self._handler(f) for k, f in actions.items()})
        self._layers: list = []

    @staticmethod
    def _handler(func: Callable[[], None]) -> Callable:
        def handle(_target=None):
            func()

        return handle

    @property
    def bound(self) -> bool:
        return self.viewer_keys.bound

    def bind(self) -> None:
        self.viewer_keys.bind()

    def bind_layer(self, layer) -> None:
        """Bind the keys on an organ's box or click layer too (its own napari keys would win while it is active)."""
        if any(same_layer(la, layer) for la in self._layers):
            return
        for key, func in self.viewer_keys.keys.items():
            layer.bind_key(key, func, overwrite=True)
        self._layers.append(layer)

    def unbind(self) -> None:
        self.viewer_keys.unbind()
        for layer in self._layers:
            for key in self.viewer_keys.keys:
                layer.bind_key(key, None)
        self._layers = []
