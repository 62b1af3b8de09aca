"""Organ prompts as napari layers — boxes on Shapes (``boxes: <organ>``), clicks on Points (``clicks: <organ>``) —
and back to a `PromptSet`.

Rectangles live in the layer's data coordinates, which are the image's voxel indices ``(z, y, x)`` (the layer has the
image's scale and translate, so it is drawn in mm like every other layer). A rectangle on slice z with corners
``(y_min, x_min)``–``(y_max, x_max)`` is the inclusive box ``[x_min, y_min, x_max, y_max]``: corners are rounded to
the nearest voxel and clipped to the image. An organ's slice range is kept in its layer's metadata when it was set,
and otherwise spans its boxes.

Clicks are points of the organ's Points layer, in the order they were placed, each with the features ``positive``
(green: the organ is here; red: it is not) and ``round`` (the run it belongs to: the clicks placed between two runs
form one correction, `napari_segunc.prompts.corrections.Correction`). A point at ``(z, y, x)`` is the click on voxel
``(round(z), round(y), round(x))``. An organ's slice masks (corrections from an existing label map) are kept in its
Points layer's metadata with their round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Points, Shapes

from ..errors import InvalidInput
from ..organs import label_color
from ..review import Command
from ..roles import ROLE
from ._layers import LayerRole, role_of

if TYPE_CHECKING:
    import napari

    from ._session import ReviewState

__all__ = ["CLICK_PREFIX", "NEGATIVE", "POSITIVE", "PREFIX", "BoxEdits", "OrganBoxes"]

PREFIX = "boxes: "
CLICK_PREFIX = "clicks: "
#: Face colours of positive and negative clicks (their border is the organ's colour).
POSITIVE, NEGATIVE = "#39e75f", "#ff3b3b"
#: Metadata of a clicks layer: the next click's round, and the slice masks [(round, z, runs, shape_yx, source)].
NEXT_ROUND, MASKS = "segunc_next_round", "segunc_masks"


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
        self.positive = True  # the polarity of the next click (T toggles it)

    def layers(self) -> list[Shapes]:
        """The organs' box layers (role BOXES, whatever the user renamed them to)."""
        return [
            la
            for la in self.viewer.layers
            if isinstance(la, Shapes) and role_of(la) is LayerRole.BOXES and la.metadata.get("segunc_organ")
        ]

    def layer(self, name: str) -> Shapes | None:
        return next((la for la in self.layers() if la.metadata.get("segunc_organ") == name), None)

    def clicks_layer(self, name: str) -> Points | None:
        """The organ's Points layer of clicks (role CLICKS), or None."""
        return next(
            (
                la
                for la in self.viewer.layers
                if isinstance(la, Points)
                and role_of(la) is LayerRole.CLICKS
                and la.metadata.get("segunc_organ") == name
            ),
            None,
        )

    def ensure_clicks(self, name: str) -> Points:
        """The organ's clicks layer, made (over its boxes layer's grid) the first time the organ gets a click."""
        layer = self.clicks_layer(name)
        if layer is None:
            boxes = self.layer(name)
            grid = {"scale": tuple(boxes.scale), "translate": tuple(boxes.translate)}
            layer = self._add_clicks(name, boxes.metadata["segunc_label"], grid)
        return layer

    def _add_clicks(self, name: str, label: int, grid_kwargs: dict) -> Points:
        layer = self.viewer.add_points(
            np.empty((0, 3)),
            ndim=3,
            name=CLICK_PREFIX + name,
            size=5,
            border_color=label_color(label),
            border_width=0.25,
            face_color=POSITIVE,
            features={"positive": np.zeros(0, bool), "round": np.zeros(0, int)},
            out_of_slice_display=False,
            scale=grid_kwargs["scale"],
            translate=grid_kwargs["translate"],
        )
        layer.metadata.update({ROLE: LayerRole.CLICKS.value, "segunc_organ": name, NEXT_ROUND: 0, MASKS: []})
        self._defaults(layer)
        layer.events.data.connect(self._clicked)
        return layer

    def _defaults(self, layer: Points) -> None:
        """What the next click placed on `layer` gets: the current polarity and the layer's next round."""
        layer.feature_defaults["positive"] = self.positive
        layer.feature_defaults["round"] = int(layer.metadata.get(NEXT_ROUND, 0))
        layer.selected_data = set()  # napari paints the selected points in the current colour
        layer.current_face_color = POSITIVE if self.positive else NEGATIVE

    def set_polarity(self, positive: bool) -> None:
        """The polarity of the next click on every organ."""
        self.positive = bool(positive)
        for organ in self.layers():
            clicks = self.clicks_layer(organ.metadata["segunc_organ"])
            if clicks is not None:
                self._defaults(clicks)

    def _colour(self, layer: Points) -> None:
        positive = np.asarray(layer.features["positive"], bool) if len(layer.data) else np.zeros(0, bool)
        if len(positive):
            self.applying, was = True, self.applying
            try:
                layer.face_color = [POSITIVE if p else NEGATIVE for p in positive]
            finally:
                self.applying = was

    def _clicked(self, event: Any = None) -> None:
        layer = getattr(event, "source", None)
        if isinstance(layer, Points) and not self.applying:
            self._colour(layer)
        self._edited(event)

    def add_slice_mask(self, name: str, z: int, mask: np.ndarray, source: str) -> None:
        """Add a slice mask correction to organ `name` in its next round (`napari_segunc.prompts.corrections`)."""
        from ..prompts.corrections import encode_runs

        layer = self.ensure_clicks(name)
        entry = (int(layer.metadata.get(NEXT_ROUND, 0)), int(z), encode_runs(mask), list(mask.shape), str(source))
        layer.metadata[MASKS] = [*layer.metadata.get(MASKS, []), entry]

    def commit_round(self) -> None:
        """A run starts: the clicks and masks placed since the last run are one correction; later ones a new one."""
        for organ in self.layers():
            layer = self.clicks_layer(organ.metadata["segunc_organ"])
            if layer is None:
                continue
            current = int(layer.metadata.get(NEXT_ROUND, 0))
            rounds = set(np.asarray(layer.features["round"], int).tolist()) if len(layer.data) else set()
            rounds |= {m[0] for m in layer.metadata.get(MASKS, [])}
            if current in rounds:
                layer.metadata[NEXT_ROUND] = current + 1
                self._defaults(layer)

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
            corrections = self._corrections(layer.metadata["segunc_organ"], top)
            if not boxes and not corrections:
                continue
            zs = [b.z for b in boxes] + [z for c in corrections for z in c.slices]
            z_range = layer.metadata.get("segunc_z_range") or box_z_range(layer) or (min(zs), max(zs))
            z_lo, z_hi = min(z_range[0], *zs), max(z_range[1], *zs)
            organs.append(
                OrganPrompt(
                    layer.metadata["segunc_label"],
                    layer.metadata["segunc_organ"],
                    z_lo,
                    z_hi,
                    tuple(boxes),
                    corrections=tuple(corrections),
                )
            )
        if not organs:
            raise InvalidInput("Draw at least one box or click (or use Boxes from mask) before running MedSAM2.")
        return PromptSet(tuple(shape), tuple(organs), source="napari")

    def _corrections(self, name: str, top: np.ndarray) -> list:
        """The organ's clicks and slice masks as corrections, one per round, in order."""
        from ..prompts.corrections import Click, Correction, SliceMask, decode_runs

        layer = self.clicks_layer(name)
        if layer is None:
            return []
        by_round: dict[int, list] = {}
        if len(layer.data):
            rounds = np.asarray(layer.features["round"], int)
            positive = np.asarray(layer.features["positive"], bool)
            for point, r, p in zip(np.asarray(layer.data), rounds, positive, strict=True):
                z, y, x = (int(v) for v in np.clip(np.floor(point + 0.5).astype(int), 0, top))
                by_round.setdefault(int(r), []).append(Click(z, y, x, positive=bool(p)))
        masks = {int(m[0]): m for m in layer.metadata.get(MASKS, [])}
        out = []
        for r in sorted(set(by_round) | set(masks)):
            if r in masks:
                _, z, runs, shape, source = masks[r]
                out.append(Correction(mask=SliceMask(z, decode_runs(runs, shape), source=source)))
            if r in by_round:
                out.append(Correction(clicks=tuple(by_round[r])))
        return out

    def fill(self, prompts, *, grid_kwargs: dict) -> None:
        for organ in prompts.organs:
            self.add(organ.name, organ.label, organ.boxes, (organ.z_min, organ.z_max), grid_kwargs=grid_kwargs)
            clicks = self.ensure_clicks(organ.name) if organ.corrections else self.clicks_layer(organ.name)
            if clicks is None:
                continue
            points, positive, rounds, masks = [], [], [], []
            for r, c in enumerate(organ.corrections):
                if c.mask is not None:
                    m = c.mask
                    from ..prompts.corrections import encode_runs

                    masks.append((r, m.z, encode_runs(m.mask), list(m.mask.shape), m.source))
                for k in c.clicks:
                    points.append([k.z, k.y, k.x])
                    positive.append(k.positive)
                    rounds.append(r)
            self._set_clicks(clicks, points, positive, rounds, len(organ.corrections), masks)

    def _set_clicks(self, layer: Points, points, positive, rounds, next_round: int, masks) -> None:
        self.applying, was = True, self.applying
        try:
            layer.selected_data = set()
            layer.data = np.asarray(points, dtype=float).reshape(-1, 3)
            layer.features = {"positive": np.asarray(positive, bool), "round": np.asarray(rounds, int)}
            layer.metadata[NEXT_ROUND] = int(next_round)
            layer.metadata[MASKS] = list(masks)
            self._colour(layer)
            self._defaults(layer)
        finally:
            self.applying = was

    def state(self) -> dict:
        """A copy of every organ's name, label, slice range and rectangles (for undo)."""
        out = {}
        for la in self.layers():
            clicks = self.clicks_layer(la.metadata.get("segunc_organ"))
            n = len(clicks.data) if clicks is not None else 0
            out[la.name] = (
                la.metadata.get("segunc_organ"),
                la.metadata.get("segunc_label"),
                la.metadata.get("segunc_z_range"),
                [np.array(r) for r in la.data],
                (
                    np.array(clicks.data if n else np.empty((0, 3))),
                    np.asarray(clicks.features["positive"], bool).copy() if n else np.zeros(0, bool),
                    np.asarray(clicks.features["round"], int).copy() if n else np.zeros(0, int),
                    int(clicks.metadata.get(NEXT_ROUND, 0)) if clicks is not None else 0,
                    list(clicks.metadata.get(MASKS, [])) if clicks is not None else [],
                ),
            )
        return out

    def restore(self, state: dict, *, grid_kwargs: dict) -> None:
        for layer in self.layers():
            if layer.name not in state:
                clicks = self.clicks_layer(layer.metadata.get("segunc_organ"))
                self.viewer.layers.remove(layer)
                if clicks is not None:
                    self.viewer.layers.remove(clicks)
        for organ, label, z_range, rects, (points, positive, rounds, next_round, masks) in state.values():
            self._set(self.add(organ, label, (), z_range, grid_kwargs=grid_kwargs), rects)
            clicks = self.clicks_layer(organ)
            if clicks is None and (len(points) or masks):
                clicks = self.ensure_clicks(organ)
            if clicks is not None:
                self._set_clicks(clicks, points, positive, rounds, next_round, masks)

    @staticmethod
    def same(a: dict, b: dict) -> bool:
        if a.keys() != b.keys():
            return False
        for key in a:
            (o1, l1, z1, r1, c1), (o2, l2, z2, r2, c2) = a[key], b[key]
            if (o1, l1, z1) != (o2, l2, z2) or len(r1) != len(r2):
                return False
            if any(not np.array_equal(x, y) for x, y in zip(r1, r2, strict=True)):
                return False
            if c1[3:] != c2[3:] or any(not np.array_equal(x, y) for x, y in zip(c1[:3], c2[:3], strict=True)):
                return False
        return True

    @staticmethod
    def clicks_added(a: dict, b: dict) -> list[str]:
        """The organs that have more clicks in state `b` than in state `a`."""
        return [b[k][0] for k in b if k in a and len(b[k][4][0]) > len(a[k][4][0])]


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
        self.last_clicked: list[str] = []  # organs the last user edit clicked on

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
            clicked = self.boxes.clicks_added(before, after)
            self._push(f"click on {', '.join(clicked)}" if clicked else "edit boxes", before, after)
            self.last_clicked = clicked

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
