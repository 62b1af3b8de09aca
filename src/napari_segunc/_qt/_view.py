"""Viewer moves for the review widgets: the side-by-side compare view (napari grid mode), jumping to a region, and
the keys a widget binds on the viewer while it lives (`BoundKeys`).

What napari 0.9's grid mode does (``viewer.canvas.grid``; ``viewer.grid`` is a deprecated alias since 0.9, as
``viewer.camera`` is for ``viewer.scene.camera``):

- one canvas and one camera model for every cell: panning, zooming and the slice slider act on all cells at once
  (linked cameras are the default, nothing to set up);
- layers are placed by their index in the layer list: with ``stride = s`` the layers at indices ``s·k … s·k + s − 1``
  share cell k, stacked in list order (the lower index is drawn below); a cell whose layers are all hidden is
  dropped, so hidden layers never leave empty cells; ``shape = (-1, -1)`` picks rows × columns for the occupied cells;
- a layer is drawn in one cell only. To show each rater *over the CT* every cell needs its own image layer, so
  `CompareView` adds copies of the image layer that share its voxel array (no copy of the voxels), orders the list
  ``[image, A, image copy, B, image copy, C, …]`` with everything else hidden after the pairs, and sets stride 2.
  Leaving removes the copies and restores the layer order, visibility, grid settings and camera.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Layer

from ..errors import InvalidInput
from ..roles import GEOMETRY, ID, ROLE
from ._layers import LayerRole, add_layer, has_layer, layer_id, same_layer

if TYPE_CHECKING:
    import napari

    from ..uncertainty.regions import Region

__all__ = ["BoundKeys", "CompareView", "camera_of", "cell_size", "focus_region", "grid_of"]

log = logging.getLogger(__name__)

#: Metadata key marking the image copies of the compare view (other widgets must not list them as images).


def grid_of(viewer: napari.Viewer) -> Any:
    """The grid model (``viewer.canvas.grid`` since napari 0.9, ``viewer.grid`` before)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def camera_of(viewer: napari.Viewer) -> Any:
    """The camera model (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def cell_size(viewer: napari.Viewer, *, whole: bool = False) -> tuple[float, float]:
    """Size in screen pixels ``(height, width)`` of one view: one grid cell in grid mode, else (or `whole`) the
    canvas."""
    canvas = getattr(viewer, "canvas", None)
    size = getattr(canvas, "size", None) or getattr(viewer, "_canvas_size", (600, 800))
    h, w = (float(v) for v in size)
    grid = grid_of(viewer)
    if grid.enabled and not whole:
        rows, cols = grid.actual_shape(viewer.layers)
        h, w = h / rows, w / cols
    return max(h, 1.0), max(w, 1.0)


def focus_region(
    viewer: napari.Viewer, layer: Layer, region: Region, *, fill: float = 0.5, min_extent_mm: float = 20.0
) -> tuple[float, ...]:
    """Show `region` (voxel indices of `layer`'s data): its slice of most uncertainty, centred, zoomed to its box.

    The non-displayed axes go to the region's peak slice (axial view: z = ``peak_slice``; other axes: the centroid),
    the camera centre to the centroid, and the zoom makes the bounding box (at least `min_extent_mm` wide) fill
    `fill` of the view. Voxel → world uses the layer's own transform (``scale`` = spacing, ``translate`` = origin,
    in mm). Returns the world point ``(z, y, x)`` the view was moved to.
    """
    offset = viewer.dims.ndim - layer.ndim
    voxel = np.asarray(region.centroid_voxel, dtype=float)
    voxel[0] = region.peak_slice
    world = np.asarray(layer.data_to_world(voxel), dtype=float)
    point = np.asarray(viewer.dims.point, dtype=float)
    point[offset:] = world
    axes = [ax for ax in viewer.dims.not_displayed if ax >= offset]
    if axes:
        viewer.dims.set_point(axes, [point[ax] for ax in axes])
    displayed = list(viewer.dims.displayed)
    camera = camera_of(viewer)
    camera.center = tuple(float(point[d]) for d in displayed)
    lo, hi = np.asarray(region.bbox[:3]), np.asarray(region.bbox[3:])
    extent = np.maximum((hi - lo + 1) * np.abs(np.asarray(layer.scale, dtype=float)[-3:]), min_extent_mm)
    ext_v, ext_h = (extent[d - offset] if d >= offset else min_extent_mm for d in displayed[-2:])
    h, w = cell_size(viewer)
    camera.zoom = float(fill * min(h / ext_v, w / ext_h))
    return tuple(float(v) for v in world)


@dataclasses.dataclass
class _Saved:
    order: list[str]  # layer ids, bottom to top
    visible: dict[str, bool]  # by layer id
    grid: dict[str, Any]
    center: tuple[float, ...]
    zoom: float


def _move_to_bottom(viewer: napari.Viewer, ids: Sequence[str]) -> None:
    """Move the layers with these ids (those still there) to the bottom of the list, in this order."""
    index = {layer_id(layer): i for i, layer in enumerate(viewer.layers)}
    present = [index[i] for i in ids if i in index]
    if present:
        viewer.layers.move_multiple(present, 0)


class CompareView:
    """Put layers side by side, each over its own copy of the image, in napari's grid mode (one linked camera).

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self.copies: list[Image] = []
        self.layers: list[Layer] = []
        self._saved: _Saved | None = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def enter(self, image: Image, layers: Sequence[Layer]) -> int:
        """Show each of `layers` in its own grid cell over the image; every other layer is hidden. Returns the
        number of cells. Calling it again first leaves the current comparison."""
        layers = [layer for layer in layers if not same_layer(layer, image)]
        if not layers:
            raise InvalidInput("Choose at least one layer to compare (raters, ensemble groups, consensus…).")
        if self.active:
            self.leave()
        viewer, grid, camera = self.viewer, grid_of(self.viewer), camera_of(self.viewer)
        self._saved = _Saved(
            order=[layer_id(layer) for layer in viewer.layers],
            visible={layer_id(layer): layer.visible for layer in viewer.layers},
            grid={"stride": grid.stride, "shape": tuple(grid.shape), "enabled": grid.enabled},
            center=tuple(camera.center),
            zoom=float(camera.zoom),
        )
        data, state, layer_type = image.as_layer_data_tuple()
        metadata = {k: v for k, v in state.get("metadata", {}).items() if k not in (GEOMETRY, ID, ROLE)}
        self.copies = []
        for i in range(1, len(layers)):  # the image itself is the first cell's background
            kwargs = {**state, "name": f"{image.name} (compare {i + 1})", "metadata": metadata}
            copy = add_layer(viewer, (data, kwargs, layer_type), role=LayerRole.COMPARE_COPY, image=image)
            self.copies.append(copy)
        self.layers = list(layers)
        pairs = [layer_id(x) for pair in zip([image, *self.copies], layers, strict=True) for x in pair]
        for layer in viewer.layers:
            layer.visible = layer_id(layer) in pairs
        _move_to_bottom(viewer, pairs)
        grid.stride, grid.shape, grid.enabled = 2, self._shape(image, len(layers)), True
        viewer.reset_view()
        log.info("compare view: %s", ", ".join(layer.name for layer in layers))
        return len(layers)

    def _shape(self, image: Layer, n: int) -> tuple[int, int]:
        """Rows × columns that show the image largest on this canvas (napari's own choice is square)."""
        h, w = cell_size(self.viewer, whole=True)
        offset = self.viewer.dims.ndim - image.ndim
        size = np.ptp(np.asarray(image.extent.world, dtype=float), axis=0)
        ext_v, ext_h = (max(size[d - offset], 1e-6) if d >= offset else 1.0 for d in self.viewer.dims.displayed[-2:])
        shapes = [(-(-n // cols), cols) for cols in range(1, n + 1)]
        return max(shapes, key=lambda rc: (min(h / rc[0] / ext_v, w / rc[1] / ext_h), -rc[0] * rc[1]))

    def leave(self) -> None:
        """Back to the single view: copies removed, layer order, visibility, grid settings and camera restored."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        viewer, grid = self.viewer, grid_of(self.viewer)
        grid.enabled = saved.grid["enabled"]
        grid.stride, grid.shape = saved.grid["stride"], saved.grid["shape"]
        for copy in self.copies:
            if has_layer(viewer.layers, copy):
                viewer.layers.remove(copy.name)
        self.copies, self.layers = [], []
        _move_to_bottom(viewer, saved.order)
        for layer in viewer.layers:
            layer.visible = saved.visible.get(layer_id(layer), layer.visible)
        camera = camera_of(viewer)
        camera.center, camera.zoom = saved.center, saved.zoom


class BoundKeys:
    """Keys bound on a viewer while a widget lives (`bind`), and what they did before restored (`unbind`) — unless
    something else rebound them meanwhile, which is then left alone."""

    def __init__(self, viewer: napari.Viewer, keys: dict[str, Callable]) -> None:
        self.viewer, self.keys = viewer, keys
        self.bound = False
        self._replaced: dict[str, Callable | None] = {}

    def bind(self) -> None:
        if not self.bound:
            self._replaced = {k: self.viewer.bind_key(k, f, overwrite=True) for k, f in self.keys.items()}
            self.bound = True

    def unbind(self) -> None:
        if not self.bound:
            return
        for key, func in self.keys.items():
            current = self.viewer.bind_key(key, None)
            restore = current if current is not None and current != func else self._replaced.get(key)
            if restore is not None:
                self.viewer.bind_key(key, restore, overwrite=True)
        self.bound = False
