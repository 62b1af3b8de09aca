"""The layer contract of the docks: a layer's role, unique id and geometry live in its metadata (`roles`).

Docks opened from the Plugins menu receive napari's `PublicOnlyProxy` viewer: every ``viewer.layers[...]`` is a new
proxy object, so ``a is b`` and ``id(a)`` say nothing. Every dock therefore finds layers here, by role and by the id
stored in ``metadata[ID]`` (given on first use, and renewed when napari duplicates a layer with its metadata), and
turns a layer into a `Volume` with `volume_of`. Combo boxes and lists of layers carry the ids as item data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer, Shapes

from ..errors import InvalidInput
from ..roles import GEOMETRY, ID, IMAGE_ID, ROLE, UNIT, WINDOW, LayerRole
from ..volume import Volume, VolumeKind

__all__ = [
    "LABEL_ROLES",
    "LayerRole",
    "add_layer",
    "by_id",
    "follow_layers",
    "has_layer",
    "layer_id",
    "layers_with_role",
    "role_of",
    "same_layer",
    "set_role",
    "show_legend",
    "volume_of",
]


def layer_id(layer: Layer) -> str:
    """The layer's unique id (given now if it has none)."""
    value = layer.metadata.get(ID)
    if not value:
        value = layer.metadata[ID] = uuid.uuid4().hex[:12]
    return str(value)


def same_layer(a: Layer | None, b: Layer | None) -> bool:
    """Whether two layer objects (layers or proxies) are the same layer."""
    return a is not None and b is not None and layer_id(a) == layer_id(b)


def by_id(layers: Iterable[Layer], ident: str | None) -> Layer | None:
    """The layer with id `ident`, or None."""
    if not ident:
        return None
    return next((layer for layer in layers if layer.metadata.get(ID) == ident), None)


def has_layer(layers: Iterable[Layer], layer: Layer | None) -> bool:
    """Whether `layer` is (still) in `layers`."""
    return layer is not None and by_id(layers, layer_id(layer)) is not None


def role_of(layer: Layer) -> LayerRole | None:
    """The layer's role: ``metadata[ROLE]``, else what a layer without one is by its type (labels; an image with a
    display window or integer voxels; another float image is a map; shapes are boxes); None for other layers."""
    role = layer.metadata.get(ROLE)
    if role:
        try:
            return LayerRole(role)
        except ValueError:
            return None
    if isinstance(layer, Labels):
        return LayerRole.LABELS
    if isinstance(layer, Image):
        if layer.metadata.get(WINDOW) is not None or np.dtype(layer.dtype).kind != "f":
            return LayerRole.IMAGE
        return LayerRole.MAP if layer.ndim == 3 else LayerRole.PROBABILITIES
    if isinstance(layer, Shapes):
        return LayerRole.BOXES
    return None


#: Every role of a labels layer.
LABEL_ROLES = (
    LayerRole.LABELS,
    LayerRole.RATER,
    LayerRole.SEGMENTATION,
    LayerRole.RATER_ANALYSIS,
    LayerRole.REVIEW_MASK,
    LayerRole.ANNOTATION,
)


def set_role(layer: Layer, role: LayerRole) -> None:
    layer.metadata[ROLE] = LayerRole(role).value


def layers_with_role(layers: Iterable[Layer], *roles: LayerRole, ndim: int | None = 3) -> list[Layer]:
    """The layers having one of `roles` (every role when none is given), in list order; `ndim` (default 3) filters
    by dimensionality (None: any)."""
    wanted = {LayerRole(r) for r in roles}
    out = []
    for layer in layers:
        role = role_of(layer)
        if role is None or (wanted and role not in wanted) or (ndim is not None and layer.ndim != ndim):
            continue
        out.append(layer)
    return out


def volume_of(layer: Layer, *, require_geometry: bool = False, data: Any = None) -> Volume:
    """The layer as a `Volume`: its napari-segunc geometry (``metadata[GEOMETRY]``), else its scale and translate
    (mm) with an identity direction; `data` replaces the layer's array (e.g. one channel of probabilities).

    Raises
    ------
    InvalidInput
        With `require_geometry`, for a layer napari-segunc did not open (no source geometry to write back to).
    """
    arr = np.asarray(layer.data if data is None else data)
    role = role_of(layer)
    if isinstance(layer, Labels):
        kind = VolumeKind.LABELS
    elif role is LayerRole.IMAGE:
        kind = VolumeKind.INTENSITY
    else:
        kind = VolumeKind.FLOAT_MAP
    geometry = layer.metadata.get(GEOMETRY)
    if geometry:
        return Volume.from_geometry_dict(arr, geometry, kind=kind, name=layer.name)
    if require_geometry:
        raise InvalidInput(
            f"'{layer.name}' was not opened with napari-segunc: open the image with Open study, File ▸ Open "
            "(SegUnc reader) or the phantom, so that results keep its geometry."
        )
    return Volume(arr, spacing=tuple(layer.scale[-3:]), origin=tuple(layer.translate[-3:]), kind=kind, name=layer.name)


def add_layer(
    viewer: Any, layer_data: tuple, *, role: LayerRole | None = None, image: Layer | None = None, legend: bool = True
) -> Layer:
    """Add a ``(data, kwargs, layer_type)`` tuple to `viewer` with a fresh id (and `role`, and the id of the
    `image` it belongs to, when given); returns the layer. A ``metadata[CONTOUR]`` becomes its contour width (an
    outline is drawn opaque: napari's ``add_labels`` takes no ``contour``). With `legend`, a map's colour bar and the
    canvas legend follow on the next turn of the event loop (`show_colorbar`; a caller adding several layers calls
    it once after the last)."""
    from ..roles import CONTOUR

    data, kwargs, layer_type = layer_data
    kwargs = dict(kwargs)
    metadata = dict(kwargs.get("metadata") or {})
    metadata[ID] = uuid.uuid4().hex[:12]
    if role is not None:
        metadata[ROLE] = LayerRole(role).value
    if image is not None:
        metadata[IMAGE_ID] = layer_id(image)
    kwargs["metadata"] = metadata
    layer = getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    if metadata.get(CONTOUR):
        layer.contour = int(metadata[CONTOUR])
        layer.opacity = 1.0
    if role_of(layer) in _LEGEND_ROLES:  # the legend names what is shown: it follows each such layer's visibility
        layer.events.visible.connect(lambda _event: show_legend(viewer))
    if legend and role_of(layer) in _LEGEND_ROLES:
        # on a later turn of the event loop: drawing a colour bar the first time costs ~0.5 s in software OpenGL, on
        # top of the new layer's own visual (the docks add layers one per turn so that the window never stalls)
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, lambda: show_colorbar(viewer, [layer]))
    return layer


#: roles of the layers the canvas legend describes
_LEGEND_ROLES = (LayerRole.MAP, LayerRole.RATER, LayerRole.SEGMENTATION)


def show_colorbar(viewer: Any, layers: Sequence[Layer]) -> None:
    """The colour bar of the last visible map among `layers` (layers just added; the others' bars are hidden), then
    the canvas legend. Nothing changes when none of them is a visible map of `viewer` and no rater is among them."""
    maps = [x for x in layers if role_of(x) is LayerRole.MAP and x.visible and has_layer(viewer.layers, x)]
    if maps:
        for other in layers_with_role(viewer.layers, LayerRole.MAP, ndim=None):
            if other is not maps[-1] and other.colorbar.visible:
                other.colorbar.visible = False
        maps[-1].colorbar.visible = True
        # selected: the layer controls show the map on screen, not the last (hidden) layer added
        viewer.layers.selection.active = maps[-1]
    if maps or any(role_of(x) in _LEGEND_ROLES for x in layers):
        show_legend(viewer)


def rater_color_name(layer: Layer) -> str:
    """The name of a rater layer's outline colour ("" when it has no rater colour)."""
    from ..organs import RATER_COLOR_NAMES, RATER_COLORS

    try:
        colour = layer.colormap.map(1)
        hexa = "#" + "".join(f"{round(float(c) * 255):02x}" for c in np.ravel(colour)[:3])
    except Exception:  # noqa: BLE001 - a user's colormap
        return ""
    return RATER_COLOR_NAMES[RATER_COLORS.index(hexa)] if hexa in RATER_COLORS else ""


def show_legend(viewer: Any) -> None:
    """The canvas legend (napari's text overlay, top left): which outline is which rater, and what the visible map
    is, in which unit (its colour bar shows the values)."""
    lines = []
    raters = [x for x in layers_with_role(viewer.layers, LayerRole.RATER) if x.visible]
    if raters:
        lines.append("outlines: " + ", ".join(f"{x.name} {rater_color_name(x)}".strip() for x in raters))
    segmentations = [x.name for x in layers_with_role(viewer.layers, LayerRole.SEGMENTATION) if x.visible]
    if segmentations:
        lines.append("organ colours: " + ", ".join(segmentations))
    for layer in layers_with_role(viewer.layers, LayerRole.MAP):
        if layer.visible and layer.colorbar.visible:
            unit = layer.metadata.get(UNIT, "")
            lines.append(f"colour bar: {layer.name}" + (f" ({unit}; black = 0)" if unit else ""))
    text = viewer.canvas.overlays["text"]
    text.update({"text": "\n".join(lines), "visible": bool(lines), "position": "top_left", "font_size": 11})


def _renew_duplicate_id(layers: Sequence[Layer], layer: Layer) -> None:
    """napari's "Duplicate layer" copies the metadata, id included: the newcomer gets its own id."""
    ident = layer.metadata.get(ID)
    if ident and sum(1 for other in layers if other.metadata.get(ID) == ident) > 1:
        layer.metadata[ID] = uuid.uuid4().hex[:12]


def follow_layers(viewer: Any, callback: Callable[[Any], None]) -> Callable[[], None]:
    """Call `callback(event)` when a layer is added to or removed from `viewer` (ids kept unique first); returns the
    function that stops following."""

    def inserted(event: Any) -> None:
        value = getattr(event, "value", None)
        if value is not None:
            _renew_duplicate_id(viewer.layers, value)
        callback(event)

    viewer.layers.events.inserted.connect(inserted)
    viewer.layers.events.removed.connect(callback)

    def stop() -> None:
        viewer.layers.events.inserted.disconnect(inserted)
        viewer.layers.events.removed.disconnect(callback)

    return stop
