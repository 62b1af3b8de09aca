"""The MedSAM2 dock's review actions between runs: click corrections and their keys, an organ started from a mask's
slice, the guidance to the most uncertain place left, and the comparison with an open ensemble segmentation.

One responsibility: what the annotator does to correct a MedSAM2 result. `ReviewActions` is a mixin of
`napari_segunc._qt.medsam2.MedSAM2Widget` (it uses the dock's viewer, organ boxes, undo history, controls and last
result); the dock's construction, runs and accept stay there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from ..errors import InvalidInput
from ..roles import ROLE
from ._click_tools import most_uncertain_place
from ._layers import LayerRole, add_layer, layers_with_role
from ._view import camera_of

__all__ = ["ReviewActions"]


class ReviewActions:
    """Clicks, keys, start-from-mask, guidance and the ensemble comparison of the MedSAM2 dock (a mixin)."""

    viewer: Any
    boxes: Any
    edits: Any
    result: Any
    next_place: tuple[int, int, int] | None
    _rerun_pending: bool

    # ------------------------------------------------------------------------------------------ clicks and keys
    def _show_polarity(self) -> None:
        positive = self.boxes.positive
        self.polarity_button.setText("Next click: + organ" if positive else "Next click: − not organ")

    def toggle_polarity(self) -> None:
        """T: the next clicks say the opposite (on the organ / off it)."""
        self.boxes.set_polarity(not self.boxes.positive)
        self._show_polarity()
        self.status.setText(f"Next clicks are {'positive (+)' if self.boxes.positive else 'negative (−)'}.")

    def start_clicking(self) -> None:
        """P: click on the selected organ's slices (napari's add-points mode on its clicks layer)."""
        try:
            organ = self._selected_organ()
        except InvalidInput as exc:
            self._error(str(exc))
            return
        name = organ.metadata["segunc_organ"]
        clicks = self.boxes.ensure_clicks(name)  # made on the organ's first click
        self.keys.bind_layer(clicks)
        self.viewer.layers.selection.active = clicks
        clicks.mode = "add"
        sign = "on the organ (+)" if self.boxes.positive else "off the organ (−)"
        self.status.setText(f"Click {sign} to correct the {name}; T toggles, each click reruns it.")

    def next_organ(self) -> None:
        """M: the next organ of the table, with the same tool (box or click) as now."""
        layers = self.organ_layers()
        if not layers:
            return
        try:
            current = layers.index(self._selected_organ())
        except (InvalidInput, ValueError):
            current = -1
        nxt = (current + 1) % len(layers)
        self.organ_table.selectRow(nxt)
        active = self.viewer.layers.selection.active
        clicking = active is not None and active.metadata.get(ROLE) == LayerRole.CLICKS.value
        (self.start_clicking if clicking else self._draw)()

    def start_from_mask_slice(self, layer_name: str | None = None, z: int | None = None) -> None:
        """The selected organ on slice `z` (default: the current one) of a labels layer (the ensemble's
        segmentation, a rater, the working annotation) becomes its next correction: SAM2 takes it as a mask prompt
        and propagates it up and down. One undo step; reruns the organ when *Rerun on each click* is on."""
        from ..organs import layer_labels

        name = layer_name or self.mask_combo.currentText()
        try:
            organ = self._selected_organ()
            if name not in self.viewer.layers:
                raise InvalidInput("Choose a labels layer (a segmentation, a rater, the annotation) to start from.")
        except InvalidInput as exc:
            self._error(str(exc))
            return
        layer = self.viewer.layers[name]
        organ_name, label = organ.metadata["segunc_organ"], int(organ.metadata["segunc_label"])
        value = layer_labels(layer.metadata).get(organ_name, label)
        z = self._current_z() if z is None else int(z)
        mask = np.asarray(layer.data[z]) == value
        if not mask.any():
            self._error(f"'{name}' has no {organ_name} (label {value}) on slice {z}; go to a slice that shows it.")
            return
        extent = None
        if not organ.metadata.get("segunc_z_range") and not len(organ.data):  # no range yet: the mask's own
            zs = np.flatnonzero((np.asarray(layer.data) == value).any(axis=(1, 2)))
            extent = (int(zs[0]), int(zs[-1]))

        def change() -> None:
            self.boxes.add_slice_mask(organ_name, z, mask, source=f"{name}, slice {z}")
            if extent is not None:
                organ.metadata["segunc_z_range"] = extent

        self.edits.record(f"start {organ_name} from {name}, slice {z}", change)
        self.status.setText(f"The {organ_name} starts from slice {z} of '{name}'; correct it with clicks (P).")
        if self.rerun_check.isChecked() and not self.busy:
            QTimer.singleShot(0, lambda: self.run())

    def _on_edit(self) -> None:
        """A box or click edit ended: one undo step; a click reruns its organ (when asked)."""
        self.edits.edited()
        if self.edits.last_clicked and self.rerun_check.isChecked():
            if self.busy:
                self._rerun_pending = True  # the clicks wait for the run in progress, then rerun together
            else:
                QTimer.singleShot(0, lambda: self.run())

    def go_most_uncertain(self) -> None:
        """G: move the view to the most uncertain place left of the organ last corrected."""
        if self.next_place is None:
            self.status.setText("Run MedSAM2 first: the most uncertain place is found after each run.")
            return
        z, y, x = self.next_place
        grid = self._grid_kwargs()
        step = list(self.viewer.dims.current_step)
        step[0] = z
        self.viewer.dims.current_step = tuple(step)
        scale, translate = grid["scale"], grid["translate"]
        camera_of(self.viewer).center = (translate[1] + y * scale[1], translate[2] + x * scale[2])
        self.status.setText(f"Slice {z}: the most uncertain place left. Click there (P) or accept (Enter).")

    def _guide(self, propagated: list[str]) -> str:
        """Find the most uncertain place left of the organ just run (or the selected one) for G."""
        final = self.result.final
        names = [o.name for o in final.prompts.organs]
        name = next((n for n in reversed(self.edits.last_clicked) if n in names), None)
        name = name or next((n for n in propagated if n in names), None) or (names[0] if names else None)
        if name is None:
            return ""
        organ = final.prompts.organ(name)
        place = most_uncertain_place(final.fused.entropy, final.fused.segmentation, organ)
        self.next_place = place[:3] if place else None
        return f" Most uncertain part of the {name} left: slice {place[0]} (G goes there)." if place else ""

    def _compare_with_ensemble(self, grid) -> None:
        """Where an ensemble segmentation is open, a layer of where it and MedSAM2 disagree on the run's organs:
        1 = only the ensemble says organ, 2 = only MedSAM2 does."""
        from ..uncertainty.layers import segmentation_layer

        ensemble = next(
            (
                la
                for la in layers_with_role(self.viewer.layers, LayerRole.SEGMENTATION)
                if not la.name.startswith("medsam2") and tuple(la.data.shape) == tuple(grid.shape)
            ),
            None,
        )
        if ensemble is None:
            return
        seg = self.result.final.fused.segmentation
        theirs = np.asarray(ensemble.data)
        diff = np.zeros(seg.shape, np.uint8)
        for organ in self.result.final.prompts.organs:
            a, b = theirs == organ.label, seg == organ.label
            diff[a & ~b] = 1
            diff[b & ~a] = 2
        name = "ensemble vs medsam2"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = diff
            return
        data, kwargs, kind = segmentation_layer(
            diff, grid, name=name, labels={"only the ensemble": 1, "only MedSAM2": 2}
        )
        kwargs["metadata"] = {**kwargs.get("metadata", {}), ROLE: LayerRole.RATER_ANALYSIS.value}
        add_layer(self.viewer, (data, kwargs, kind), image=self.image_layer())
