"""The review session of an image in a viewer: its working annotation layer, undo history and autosave.

The state lives in the "working annotation" labels layer's metadata (``metadata[roles.REVIEW]``, role
ANNOTATION), so every dock widget of a viewer finds the same one without any module-level registry: the MedSAM2
widget accepts results into it, the Export widget writes it, Undo/Redo anywhere act on its `History`. The layer's
data *is* the annotation array (napari does not copy numpy arrays); after each change the layer is refreshed and
the session autosaved.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QMessageBox

from ..errors import InvalidInput
from ..organs import label_colormap
from ..review import History, SessionStore, WorkingAnnotation
from ..roles import GEOMETRY, REVIEW
from ..volume import Volume
from ._layers import LayerRole, add_layer, layer_id, volume_of

if TYPE_CHECKING:
    import napari

__all__ = ["ReviewState", "annotation_layer", "annotation_name", "find_review", "image_volume", "review_for"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ReviewState:
    """Everything of one image's review session."""

    image_id: str  # `_layers.layer_id` of the image (layers are found by id: docks may see proxies of them)
    layer: Labels
    annotation: WorkingAnnotation
    store: SessionStore | None
    prompts: Any = None  # the MedSAM2 widget's current PromptSet (saved with the annotation)

    @property
    def history(self) -> History:
        return self.annotation.history

    def autosave(self) -> None:
        """Save in the background; a failed save is shown as a napari warning (once, until a save succeeds)."""
        if self.store is not None:
            store = self.store
            notifier = _notifier()
            store.save(self.annotation, self.prompts).add_done_callback(
                lambda future: notifier.done.emit(store, future.exception() is None)
            )


class _AutosaveNotifier(QObject):
    """Carries the result of an autosave from its thread to the GUI thread (a queued signal)."""

    done = Signal(object, bool)

    def __init__(self) -> None:
        super().__init__()
        self.warned: set[int] = set()  # stores whose failure was shown
        self.done.connect(self._show)

    def _show(self, store: SessionStore, ok: bool) -> None:
        if ok:
            self.warned.discard(id(store))
        elif id(store) not in self.warned and store.failure:
            self.warned.add(id(store))
            show_warning(store.failure)


_NOTIFIER: list[_AutosaveNotifier] = []


def _notifier() -> _AutosaveNotifier:
    """The notifier, made on first use in the GUI thread (where autosaves start, from the history's listeners)."""
    if not _NOTIFIER:
        _NOTIFIER.append(_AutosaveNotifier())
    return _NOTIFIER[0]


def image_volume(layer: Image) -> Volume:
    """The canonical volume behind an image layer opened by napari-segunc (a clear error for other layers)."""
    if layer is None or not layer.metadata.get(GEOMETRY):
        raise InvalidInput("Choose an image opened with napari-segunc (Open study, File ▸ Open, or the phantom).")
    return volume_of(layer, require_geometry=True)


def annotation_name(image_layer: Image) -> str:
    return f"working annotation ({image_layer.name})"


def find_review(viewer: napari.Viewer, image_layer: Image) -> ReviewState | None:
    """The review state of `image_layer` in `viewer`, if one was started."""
    layer = annotation_layer(viewer, image_layer)
    return layer.metadata[REVIEW] if layer is not None else None


def annotation_layer(viewer: napari.Viewer, image_layer: Image) -> Labels | None:
    """The working annotation layer of `image_layer` in `viewer` (the labels layer holding its review state; found
    from the moment it is inserted, so docks refreshing on napari's ``inserted`` event see it)."""
    ident = layer_id(image_layer)
    for layer in viewer.layers:
        state = layer.metadata.get(REVIEW) if isinstance(layer, Labels) else None
        if state is not None and state.image_id == ident:
            return layer
    return None


def ask_restore(store: SessionStore) -> bool:
    """Ask (Yes/No dialog) whether to restore the autosaved session in `store`; the docks' default `ask_restore`."""
    answer = QMessageBox.question(
        None,
        "Restore the review session?",
        f"A review session of this image was autosaved ({store.describe()}) in {store.folder}.\n"
        "Restore its annotation and box prompts? (If not, it is kept beside under a dated name.)",
    )
    return answer == QMessageBox.StandardButton.Yes


def review_for(
    viewer: napari.Viewer,
    image_layer: Image,
    *,
    autosave: bool = True,
    ask_restore: Callable[[SessionStore], bool] = ask_restore,
) -> ReviewState:
    """The image's review state, created (with its labels layer) on first use; a saved session is offered back."""
    state = find_review(viewer, image_layer)
    if state is not None:
        return state
    grid = image_volume(image_layer)
    store = SessionStore.for_image(grid) if autosave else None
    annotation = WorkingAnnotation(grid)
    prompts = None
    if store is not None and store.exists():
        try:
            if ask_restore(store):
                labels, prompts = store.load(grid)
                annotation = WorkingAnnotation(grid, labels)
            else:  # declined: keep it under a dated name rather than overwrite it with the new session
                store.archive()
        except Exception as exc:  # a broken autosave never blocks the review
            log.warning("could not restore the session in %s: %s", store.folder, exc)
    kwargs = grid.napari_kwargs()
    kwargs["name"] = annotation_name(image_layer)
    kwargs["colormap"] = label_colormap()
    # the state is in the metadata before the layer is inserted: docks that refresh on insertion find it
    state = ReviewState(layer_id(image_layer), None, annotation, store, prompts)  # type: ignore[arg-type]
    kwargs["metadata"] = {**kwargs.get("metadata", {}), REVIEW: state}
    layer = add_layer(viewer, (annotation.data, kwargs, "labels"), role=LayerRole.ANNOTATION, image=image_layer)
    state.layer = layer
    annotation.on_change = layer.refresh
    annotation.history.listeners.append(state.autosave)
    return state
