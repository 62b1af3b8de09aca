"""Organ box prompts as napari Shapes layers (one ``boxes: <organ>`` layer per organ) and back to a `PromptSet`.

Rectangles live in the layer's data coordinates, which are the image's voxel indices ``(z, y, x)`` (the layer has the
image's scale and translate, so it is drawn in mm like every other layer). A rectangle on slice z with corners
``(y_min, x_min)``–``(y_max, x_max)`` is the inclusive box ``[x_min, y_min, x_max, y_max]``: corners are rounded to
the nearest voxel and clipped to the image. An organ's slice range is kept in its layer's metadata when it was set,
and otherwise spans its boxes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Shapes

from ..errors import InvalidInput
from ..organs import label_color
from ..review import Command
from ..roles import ROLE
from ._layers import LayerRole, role_of

if TYPE_CHECKING:
    import napari

    from ._session import ReviewState

__all__ = ["PREFIX", "BoxEdits", "OrganBoxes"]

PREFIX = "boxes: "


def _rectangle(box) -> np.ndarray:
    z, y0, x0, y1, x1 = box.z, box.y_min, box.x_min, box.y_max, box.x_max
    return np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], dtype=float)


def box_z_range(layer: Shapes) -> tuple[int, int] | None:
    zs = [int(math.floor(float(np.mean(r[:, 0])) + 0.5)) for r in layer.data]
    return (min(zs), max(zs)) if zs else None


class OrganBoxes:
    """The organ box layers of a viewer; `on_edit` is called when the user finishes editing rectangles."""

    def __init__(self, viewer: napari.Viewer, on_edit: Callable[[], None]) -> None:
        self.viewer = viewer
        self.on_edit = on_edit
        self.applying = False  # programmatic changes are not user edits

    def layers(self) -> list[Shapes]:
        """The organs' box layers (role BOXES, whatever the user renamed them to)."""
        return [
            la
            for la in self.viewer.layers
            if isinstance(la, Shapes) and role_of(la) is LayerRole.BOXES and la.metadata.get("segunc_organ")
        ]

    def layer(self, name: str) -> Shapes | None:
        return next((la for la in self.layers() if la.metadata.get("segunc_organ") == name), None)

    def _set(self, layer: Shapes, rects: list[np.ndarray]) -> None:
        self.applying = True
        try:
            layer.data = [np.array(r, dtype=float) for r in rects]
        finally:
            self.applying = False

    def add(self, name: str, label: int, boxes=(), z_range=None, *, grid_kwargs: dict) -> Shapes:
        """Add or reset an organ's layer with `boxes` (`napari_segunc.prompts.Box`)."""
        layer = self.layer(name)
        rects = [_rectangle(b) for b in boxes]
        if layer is None:
            colour = label_color(label)  # the organ colour of the canvas and the report
            layer = self.viewer.add_shapes(
                rects or None,
                shape_type="rectangle",
                name=PREFIX + name,
                edge_color=colour,
                face_color="transparent",
                edge_width=1.5,
                ndim=3,
                scale=grid_kwargs["scale"],
                translate=grid_kwargs["translate"],
            )
            layer.events.data.connect(self._edited)
        else:
            self._set(layer, rects)
        layer.metadata.update(
            {
                ROLE: LayerRole.BOXES.value,
                "segunc_organ": name,
                "segunc_label": int(label),
                "segunc_z_range": tuple(z_range) if z_range else None,
            }
        )
        return layer

    def _edited(self, event: Any = None) -> None:
        action = str(getattr(event, "action", "changed"))
        if not self.applying and not action.endswith("ing"):  # "adding"/"changing"/"removing": not done yet
            self.on_edit()

    def prompts(self, shape: tuple[int, int, int]):
        """The boxes as a `PromptSet` on a ``(Z, Y, X)`` grid; organs without a box are left out."""
        from ..prompts import Box, OrganPrompt, PromptSet

        organs = []
        top = np.array(shape) - 1
        for layer in self.layers():
            boxes = []
            for rect in layer.data:
                z = int(math.floor(float(np.mean(rect[:, 0])) + 0.5))
                lo = np.clip(np.floor(rect.min(axis=0) + 0.5).astype(int), 0, top)
                hi = np.clip(np.floor(rect.max(axis=0) + 0.5).astype(int), 0, top)
                boxes.append(Box(z, int(lo[2]), int(lo[1]), int(hi[2]), int(hi[1])))
            if not boxes:
                continue
            z_range = layer.metadata.get("segunc_z_range") or box_z_range(layer)
            z_lo, z_hi = min(z_range[0], *(b.z for b in boxes)), max(z_range[1], *(b.z for b in boxes))
            organs.append(
                OrganPrompt(layer.metadata["segunc_label"], layer.metadata["segunc_organ"], z_lo, z_hi, tuple(boxes))
            )
        if not organs:
            raise InvalidInput("Draw at least one box (or use Boxes from mask) before running MedSAM2.")
        return PromptSet(tuple(shape), tuple(organs), source="napari")

    def fill(self, prompts, *, grid_kwargs: dict) -> None:
        for organ in prompts.organs:
            self.add(organ.name, organ.label, organ.boxes, (organ.z_min, organ.z_max), grid_kwargs=grid_kwargs)

    def state(self) -> dict:
        """A copy of every organ's name, label, slice range and rectangles (for undo)."""
        return {
            la.name: (
                la.metadata.get("segunc_organ"),
                la.metadata.get("segunc_label"),
                la.metadata.get("segunc_z_range"),
                [np.array(r) for r in la.data],
            )
            for la in self.layers()
        }

    def restore(self, state: dict, *, grid_kwargs: dict) -> None:
        for layer in self.layers():
            if layer.name not in state:
                self.viewer.layers.remove(layer)
        for organ, label, z_range, rects in state.values():
            self._set(self.add(organ, label, (), z_range, grid_kwargs=grid_kwargs), rects)

    @staticmethod
    def same(a: dict, b: dict) -> bool:
        if a.keys() != b.keys():
            return False
        for key in a:
            (o1, l1, z1, r1), (o2, l2, z2, r2) = a[key], b[key]
            if (o1, l1, z1) != (o2, l2, z2) or len(r1) != len(r2):
                return False
            if any(not np.array_equal(x, y) for x, y in zip(r1, r2, strict=True)):
                return False
        return True


class BoxEdits:
    """Changes to the organ boxes as steps of the image's review history (undo/redo), keeping the review state's
    prompts (what is autosaved) current. `changed` is called after every change (the dock refreshes its table)."""

    def __init__(
        self,
        boxes: OrganBoxes,
        review: Callable[[], ReviewState],
        prompts: Callable[[], Any],
        grid_kwargs: Callable[[], dict],
        changed: Callable[[], None],
    ) -> None:
        self.boxes, self.review, self.prompts = boxes, review, prompts
        self.grid_kwargs, self.changed = grid_kwargs, changed
        self.snapshot: dict = {}

    def record(self, description: str, change: Callable[[], Any]) -> None:
        """Apply `change` (a function) as one undoable step."""
        before = self.boxes.state()
        change()
        self.snapshot = after = self.boxes.state()
        self._push(description, before, after)

    def edited(self) -> None:
        """The user finished editing rectangles on a layer: one step, if anything changed."""
        before, after = self.snapshot, self.boxes.state()
        if not self.boxes.same(before, after):
            self.snapshot = after
            self._push("edit boxes", before, after)

    def current_prompts(self):
        """The boxes as a `PromptSet`, or None when there are none (or no image)."""
        try:
            return self.prompts()
        except InvalidInput:
            return None

    def _push(self, description: str, before: dict, after: dict) -> None:
        self.changed()
        try:
            state = self.review()
        except InvalidInput:
            return
        state.prompts = self.current_prompts()
        state.history.push(Command(description, lambda: self._restore(before), lambda: self._restore(after)))

    def _restore(self, state: dict) -> None:
        self.boxes.restore(state, grid_kwargs=self.grid_kwargs())
        self.snapshot = self.boxes.state()
        self.changed()
        try:
            self.review().prompts = self.current_prompts()
        except InvalidInput:
            pass
