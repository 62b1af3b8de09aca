"""The MedSAM2 dock's "Boxes from atlas" action: choose atlases (images + masks + labels), register them onto the
image in a worker (`napari_segunc.prompts.atlas.atlas_prompts_job`), show the score maps and fill the organ boxes."""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QWidget

from ..errors import InvalidInput
from ..progress import Progress
from ._session import image_volume

__all__ = ["atlas_job", "choose_atlases", "score_layers", "start_atlas"]

_IMAGES = "Medical images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd)"


def choose_atlases(parent: QWidget) -> tuple[list[tuple[str, str]], dict[str, int]] | None:
    """Three dialogs: the atlas images, their masks (paired in name order) and the labels JSON; None if cancelled."""
    images, _ = QFileDialog.getOpenFileNames(parent, "Atlas images (reference CTs)", "", _IMAGES)
    if not images:
        return None
    masks, _ = QFileDialog.getOpenFileNames(parent, "Their organ masks (same order by name)", "", _IMAGES)
    if not masks:
        return None
    if len(masks) != len(images):
        raise InvalidInput(f"Choose one mask per atlas image: {len(images)} image(s), {len(masks)} mask(s).")
    labels_file, _ = QFileDialog.getOpenFileName(parent, "Organ labels of the masks (labels.json)", "", "JSON (*.json)")
    if not labels_file:
        return None
    try:
        labels = {str(k): int(v) for k, v in json.loads(Path(labels_file).read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidInput(f'{labels_file} is not a labels file ({{"liver": 1, …}}): {exc}') from None
    return list(zip(sorted(images), sorted(masks), strict=True)), labels


def atlas_job(
    target,
    atlases: Sequence[tuple[Any, Any]],
    labels: Mapping[str, int],
    *,
    strategy: str = "B",
    thresholds: Mapping[str, float] | None = None,
) -> Generator[Progress, None, Any]:
    """Worker body: the registrations run serially in the worker thread (no extra processes from the GUI)."""
    from ..prompts.atlas import atlas_prompts_job

    strategy = "A" if strategy == "A" else "B"  # C/D start from B's boxes
    return (yield from atlas_prompts_job(target, atlases, labels, strategy=strategy, thresholds=thresholds, workers=0))


def score_layers(result, target) -> list[tuple]:
    """The per-organ score maps as napari image layer tuples (0–1, viridis, additive, hidden but the first)."""
    from ..prompts.atlas import score_volumes

    layers = []
    for i, (name, volume) in enumerate(score_volumes(result, target).items()):
        kwargs = volume.napari_kwargs()
        kwargs.update(
            name=f"atlas score {name}",
            colormap="viridis",
            contrast_limits=(0.0, 1.0),
            blending="additive",
            opacity=0.6,
            visible=i == 0,
        )
        kwargs["metadata"] = {**kwargs["metadata"], "segunc_atlas_score": name}
        layers.append((volume.data, kwargs, "image"))
    return layers


def start_atlas(widget, atlases, labels, thresholds) -> None:
    """What the MedSAM2 dock's button does (`MedSAM2Widget.boxes_from_atlas`)."""
    if widget.job.refuse_if_busy():
        return
    try:
        if atlases is None:
            chosen = choose_atlases(widget)
            if chosen is None:
                return
            atlases, labels = chosen
        target = image_volume(widget.image_layer())
    except InvalidInput as exc:
        widget._error(str(exc))
        return
    widget.job.start(
        atlas_job,
        target,
        list(atlases),
        dict(labels or {}),
        strategy=widget.strategy_combo.currentText(),
        thresholds=thresholds,
        starting=f"Registering {len(atlases)} atlas(es) onto the image…",
        on_progress=widget._progressed,
        on_returned=lambda result: show_atlas_result(widget, result, target),
    )


def show_atlas_result(widget, result, target) -> None:
    """Score maps as layers (replaced on a rerun), the boxes into the organ layers as one undo step."""
    viewer = widget.viewer
    for data, kwargs, _ in score_layers(result, target):
        if kwargs["name"] in viewer.layers:
            viewer.layers[kwargs["name"]].data = data
        else:
            viewer.add_image(data, **kwargs)

    def fill() -> None:
        widget.boxes.fill(result.prompts, grid_kwargs=widget._grid_kwargs())

    widget.edits.record("boxes from atlas", fill)
    failed = "; ".join(f"{name}: {why}" for name, why in result.failed)
    widget.status.setText(
        f"Boxes for {len(result.prompts.organs)} organ(s) from {len(result.used)} atlas(es)"
        + (f"; skipped {failed}" if failed else "")
        + ". Adjust them, then Run."
    )
