"""The "Open study" dock widget: an image (file or DICOM series), rater label maps (files or a folder), probability
maps, a display window, the phantom.

Every file is read in a napari worker thread (bodies in `_study_jobs`); the widget's inputs are disabled meanwhile.
Buttons open a file dialog and then call `OpenStudyWidget.open_image`, `add_raters`, `add_rater_folder`,
`add_probabilities` or `load_phantom`, which tests (and scripts) call directly. When an image with an autosaved
review session is opened, the widget offers to restore it (`ask_restore`).

One responsibility, the dock's widgets and slots; kept in one module past 400 lines (the worker bodies are in
`_study_jobs`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from napari.layers import Image
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..display import WindowPreset, contrast_limits, default_preset
from ..io import DicomSeries
from ..io._npe2 import LayerData, as_rater
from ..progress import Progress
from ..review import SessionStore
from ..volume import Volume, VolumeKind
from . import _study_jobs as jobs
from ._jobs import DockJob
from ._layers import LayerRole, add_layer, has_layer, layers_with_role
from ._session import ask_restore, image_volume, review_for
from ._widgets import layer_combo
from ._worker import status_label

if TYPE_CHECKING:
    import napari

__all__ = ["TABLE_CHOICES", "OpenStudyWidget"]

#: The "Organ names" choices: what the dock shows, and the `napari_segunc.label_tables` key (None: the files' own).
TABLE_CHOICES = (
    ("as the files say", None),
    ("TotalSegmentator v2", "totalsegmentator"),
    ("AMOS22", "amos22"),
    ("BTCV", "btcv"),
    ("CURVAS", "curvas"),
)


_IMAGE_FILTER = "Medical images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)"
_LABEL_FILTER = "Label maps (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)"
_PROBABILITY_FILTER = "Probability maps (*.npz *.nii *.nii.gz);;All files (*)"


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row


class OpenStudyWidget(QWidget):
    """Dock widget that opens an image and its rater label maps in mm world coordinates.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer to add layers to (napari passes it when the widget is opened from the Plugins menu).

    Attributes
    ----------
    ask_restore : callable
        ``ask_restore(store) -> bool``, asked when an opened image has an autosaved review session (default: a
        Yes/No question box); tests and scripts replace it.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.image_volume: Volume | None = None  # grid every rater map is checked against
        self.image_layer: Image | None = None
        self._series_folder: Path | None = None
        self.ask_restore: Callable[[SessionStore], bool] = ask_restore

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("image file or DICOM folder")
        self.open_button = QPushButton("Open")
        self.file_button = QPushButton("Image file…")
        self.folder_button = QPushButton("DICOM folder…")
        self.series_combo = layer_combo()
        self.series_label = QLabel("Series:")
        self.raters_button = QPushButton("Add rater label maps…")
        self.rater_folder_button = QPushButton("Add rater folder…")
        self.probabilities_button = QPushButton("Add probability maps…")
        self.trust_pickle_check = QCheckBox("Trust .pkl geometry of .npz files")
        self.trust_pickle_check.setToolTip(
            "Read an nnU-Net .npz file's geometry from the .pkl beside it and check it against the image.\n"
            "Reading a .pkl unpickles it, which can run code: tick only for files you trust.\n"
            "Unticked, an .npz takes the open image's geometry (its size is still checked)."
        )
        self.nonfinite_check = QCheckBox(jobs.NONFINITE_BOX)
        self.nonfinite_check.setToolTip(
            "Images and rater maps holding NaN or infinite voxels are refused, as those voxels have no value.\n"
            "Tick to read them as 0 instead; the dock then says how many there were."
        )
        self.gaps_check = QCheckBox(jobs.GAPS_BOX)
        self.gaps_check.setToolTip(
            "A DICOM series with a missing, duplicate or unevenly spaced slice is refused: read as one volume it\n"
            "would be stretched between the slices. Tick to read it anyway; the dock then names the gap."
        )
        self.resample_check = QCheckBox(jobs.RESAMPLE_BOX)
        self.resample_check.setToolTip(
            "A rater map or a probability map on another grid than the image (spacing, field of view, origin) is\n"
            "refused. Tick to resample it onto the image's grid instead: label maps by nearest neighbour (labels are\n"
            "never blended), probability maps linearly, renormalised to sum to 1."
        )
        self.table_combo = QComboBox()
        for text, key in TABLE_CHOICES:
            self.table_combo.addItem(text, key)
        self.table_combo.setToolTip(
            "The label table the rater maps use: their organs are then named (liver, …) in every dock, not 'label 5'."
        )
        self.preset_combo = QComboBox()
        for preset in WindowPreset:
            self.preset_combo.addItem(preset.label, preset)
        self.phantom_button = QPushButton("Load phantom study")
        self.status = status_label("Open a CT/MR image, or load the phantom study.")
        self.job = DockJob(
            self,
            inputs=lambda: self.inputs,
            status=self.status,
            busy_message="Still reading the previous file; wait for it to finish.",
        )

        form = QFormLayout()
        form.addRow(self.series_label, self.series_combo)
        form.addRow("Window:", self.preset_combo)
        form.addRow("Organ names:", self.table_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(_row(self.path_edit, self.open_button))
        layout.addLayout(_row(self.file_button, self.folder_button))
        layout.addLayout(form)
        layout.addLayout(_row(self.raters_button, self.rater_folder_button))
        layout.addWidget(self.probabilities_button)
        layout.addWidget(self.trust_pickle_check)
        layout.addLayout(_row(self.nonfinite_check, self.gaps_check))
        layout.addWidget(self.resample_check)
        layout.addWidget(self.phantom_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._show_series([])

        self.open_button.clicked.connect(self._open_typed_path)
        self.path_edit.returnPressed.connect(self._open_typed_path)
        self.file_button.clicked.connect(self._choose_image_file)
        self.folder_button.clicked.connect(self._choose_dicom_folder)
        self.raters_button.clicked.connect(self._choose_raters)
        self.rater_folder_button.clicked.connect(self._choose_rater_folder)
        self.probabilities_button.clicked.connect(self._choose_probabilities)
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        self.table_combo.currentIndexChanged.connect(lambda _i: self.apply_label_table())
        self.phantom_button.clicked.connect(lambda: self.load_phantom())

    # -------------------------------------------------------------------------------- state
    @property
    def inputs(self) -> list[QWidget]:
        """Widgets disabled while a worker runs."""
        return [
            self.path_edit,
            self.open_button,
            self.file_button,
            self.folder_button,
            self.series_combo,
            self.raters_button,
            self.rater_folder_button,
            self.probabilities_button,
            self.trust_pickle_check,
            self.nonfinite_check,
            self.gaps_check,
            self.resample_check,
            self.preset_combo,
            self.table_combo,
            self.phantom_button,
        ]

    @property
    def busy(self) -> bool:
        """True while a file is being read."""
        return self.job.busy

    @property
    def preset(self) -> WindowPreset:
        """The window preset selected in the combo box."""
        return self.preset_combo.currentData()

    # -------------------------------------------------------------------------------- dialogs (buttons)
    def _choose_image_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", "", _IMAGE_FILTER)
        if path:
            self.open_image(path)

    def _choose_dicom_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder")
        if path:
            self.open_image(path)

    def _choose_raters(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add rater label maps", "", _LABEL_FILTER)
        if paths:
            self.add_raters(paths)

    def _choose_rater_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add every label map of a folder")
        if path:
            self.add_rater_folder(path)

    def _choose_probabilities(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add probability maps", "", _PROBABILITY_FILTER)
        if paths:
            self.add_probabilities(paths, trust_pickle=self.trust_pickle_check.isChecked())

    def _open_typed_path(self) -> None:
        text = self.path_edit.text().strip()
        if not text:
            self._error("Type or choose an image file or DICOM folder first.")
            return
        path = Path(text).expanduser()
        series_id = None
        if self._series_folder == path and self.series_combo.count():
            series_id = self.series_combo.currentData()
        self.open_image(path, series_id=series_id)

    # -------------------------------------------------------------------------------- public actions
    def open_image(self, path: str | os.PathLike, series_id: str | None = None) -> None:
        """Read an image file or DICOM folder in a worker and add it as an image layer.

        A folder holding several DICOM series without `series_id` fills the series box instead; choose one and
        press Open.
        """
        path = Path(path).expanduser()
        self.path_edit.setText(str(path))
        self._start(
            jobs.load_image,
            path,
            series_id,
            replace_nonfinite=self.nonfinite_check.isChecked(),
            accept_dicom_gaps=self.gaps_check.isChecked(),
            on_returned=self._image_loaded,
            what=f"Reading {path.name}",
        )

    def add_raters(self, paths: Sequence[str | os.PathLike]) -> None:
        """Read rater label maps in a worker; each one on the image's grid becomes a labels layer.

        A map whose size, spacing, origin or direction differs from the open image is not added; an error
        naming the file says why.
        """
        if not self._have_image("rater label maps"):
            return
        paths = [Path(p).expanduser() for p in paths]
        self._start_raters(jobs.load_raters, paths, f"Reading {len(paths)} rater map(s)")

    def add_rater_folder(self, folder: str | os.PathLike) -> None:
        """Add every label map in `folder` (``*.nii``, ``*.nii.gz``, ``*.nrrd``, ``*.nhdr``, ``*.mha``, ``*.mhd``,
        sorted by name) as rater layers, exactly as `add_raters` does.

        Each map is checked against the open image's grid; one that differs is reported by name and skipped, the
        others are added. A folder without label maps gives a message and adds nothing.
        """
        if not self._have_image("rater label maps"):
            return
        folder = Path(folder).expanduser()
        self._start_raters(jobs.load_rater_folder, folder, f"Reading the rater maps in {folder.name}")

    def _start_raters(self, job, source, what: str) -> None:
        self._start(
            job,
            source,
            self.image_volume,
            replace_nonfinite=self.nonfinite_check.isChecked(),
            resample=self.resample_check.isChecked(),
            on_yielded=self._rater_loaded,
            what=what,
        )

    def add_probabilities(
        self, paths: Sequence[str | os.PathLike], *, names: Sequence[str] | None = None, trust_pickle: bool = False
    ) -> None:
        """Read class-probability files (one ensemble member each) in a worker and add the ensemble's layers.

        `paths`: nnU-Net ``.npz`` files (geometry from the open image, or with `trust_pickle` from the ``.pkl``
        beside each, which unpickling can run code from) or 4D NIfTI files; `names` default to the file names;
        see `_study_jobs.probabilities_job`. Adds ``probabilities: segmentation`` (keeping the mean probabilities
        for the Metrics widget) and the entropy, expected entropy and mutual information maps (nats). A member on
        another grid, with NaN, or not summing to 1 is refused with a message naming it; nothing is added then.
        """
        if not self._have_image("probability maps"):
            return
        paths = [Path(p).expanduser() for p in paths]
        self._start(
            jobs.probabilities_job,
            paths,
            self.image_volume,
            names=names,
            trust_pickle=trust_pickle,
            resample=self.resample_check.isChecked(),
            on_returned=self._probabilities_loaded,
            on_yielded=self._progressed,
            what=f"Reading {len(paths)} probability map(s)",
        )

    def load_phantom(self, seed: int = 0) -> None:
        """Generate the synthetic abdominal CT study in a worker and add the image and one layer per rater."""
        self._start(jobs.load_phantom, seed, on_returned=self._phantom_loaded, what="Generating the phantom study")

    def use_image_layer(self, layer: Image | None = None) -> bool:
        """Check rater maps against `layer` (default: the selected or first image layer).

        The layer must have been opened by this plugin (its ``metadata["segunc_geometry"]`` describes the grid).
        Returns whether it could be used.
        """
        layer = layer if layer is not None else self._target_image_layer()
        geometry = layer.metadata.get("segunc_geometry") if layer is not None else None
        if not geometry:
            return False
        self.image_volume = Volume.from_geometry_dict(layer.data, geometry, kind=VolumeKind.INTENSITY, name=layer.name)
        self.image_layer = layer
        return True

    def apply_preset(self, preset: WindowPreset | str) -> None:
        """Set the image layer's contrast limits from a window preset (the voxel values never change)."""
        preset = WindowPreset(preset)
        layer = self._target_image_layer()
        if layer is None:
            return
        lo, hi = contrast_limits(preset, layer.data if preset.window is None else None)
        low_range, high_range = layer.contrast_limits_range
        if lo < low_range or hi > high_range:  # a window wider than the data (e.g. bone on soft tissue)
            layer.contrast_limits_range = (min(lo, low_range), max(hi, high_range))
        layer.contrast_limits = (lo, hi)
        layer.metadata["segunc_window"] = preset.value

    # -------------------------------------------------------------------------------- worker plumbing
    def _have_image(self, what: str) -> bool:
        if not has_layer(self.viewer.layers, self.image_layer):
            self.image_volume = None  # the image was closed: use whichever image layer is there now
            self.use_image_layer()
        if self.image_volume is None:
            self._error(f"Open the image first: {what} are checked against its voxel grid.")
            return False
        return True

    def _start(self, func, *args, on_returned=None, on_yielded=None, what: str = "", **kwargs) -> None:
        self.job.start(
            func,
            *args,
            starting=what + "…",
            on_returned=on_returned,
            on_progress=on_yielded,
            description=what,
            **kwargs,
        )

    def _error(self, message: str) -> None:
        self.job.error(message)

    # -------------------------------------------------------------------------------- results (GUI thread)
    def _image_loaded(self, result: jobs.ImageResult) -> None:
        if result.series:
            self._show_series(result.series, result.path)
            self.status.setText(
                f"{result.path.name} holds {len(result.series)} DICOM series; choose one and press Open."
            )
            return
        self._show_series([])
        self._add_image(result.volume, result.layer, result.data_range)
        self.image_layer.metadata["segunc_read_warnings"] = list(result.warnings)
        self.status.setText(f"Opened {result.path.name}: {self._describe(result.volume)}." + self._warned(result))
        self._offer_restore()

    def _rater_loaded(self, result: jobs.RaterResult) -> None:
        if result.error:
            self._error(result.error)
            return
        n_raters = len(layers_with_role(self.viewer.layers, LayerRole.RATER))
        layer = self._add_layer(as_rater(result.layer, n_raters))  # a rater whatever its file name, in its colour
        if result.warnings:  # kept with the layer (resampled, NaN read as 0…), as for the image
            layer.metadata["segunc_read_warnings"] = list(result.warnings)
        self.status.setText(f"Added rater map '{layer.name}'." + self._warned(result) + self.apply_label_table())

    def _phantom_loaded(self, result: jobs.StudyResult) -> None:
        self._add_image(result.volume, result.layers[0], result.data_range)
        for layer_data in result.layers[1:]:
            self._add_layer(layer_data)
        msg = f"Phantom study: {self._describe(result.volume)}, {len(result.layers) - 1} rater maps."
        self.status.setText(msg)
        show_info(msg)
        self._offer_restore()

    def _progressed(self, report: Progress) -> None:
        if report.message:
            self.job.report(report, f"{report.message} ({report.step}/{report.total})…")

    def _probabilities_loaded(self, result: jobs.ProbabilityResult) -> None:
        for layer_data in result.layers:
            if result.warnings:  # kept with the layers (resampled…), as for a rater map
                layer_data[1]["metadata"]["segunc_read_warnings"] = list(result.warnings)
            self._add_layer(layer_data)
        msg = (
            f"Added the probability maps of {len(result.members)} member(s), {result.n_classes} classes: "
            "segmentation, entropy, expected entropy, mutual information."
        )
        if result.warnings:
            msg += " Note: " + " ".join(result.warnings)
        self.status.setText(msg)
        show_info(msg)

    def _offer_restore(self) -> None:
        """Offer back the autosaved review session of the image just opened (nothing happens when there is none)."""
        layer = self.image_layer
        if layer is None or not SessionStore.for_image(image_volume(layer)).exists():
            return
        state = review_for(self.viewer, layer, ask_restore=self.ask_restore)
        if state.annotation.data.any() or state.prompts is not None:
            self.status.setText(self.status.text() + f" Restored the review session into '{state.layer.name}'.")

    def _add_image(self, volume: Volume, layer_data: LayerData, data_range: tuple[float, float]) -> None:
        self.image_volume = volume
        self.image_layer = layer = self._add_layer(layer_data)
        # napari narrows the slider to the window it was given; let it span the data as well.
        lo, hi = layer.contrast_limits
        layer.contrast_limits_range = (min(lo, data_range[0]), max(hi, data_range[1]))
        layer.contrast_limits = (lo, hi)
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(self.preset_combo.findData(default_preset(volume)))
        self.preset_combo.blockSignals(False)
        self.viewer.reset_view()

    def _add_layer(self, layer_data: LayerData):
        return add_layer(self.viewer, layer_data)

    def apply_label_table(self) -> str:
        """Name the organs of the image's label maps with the chosen table (`napari_segunc.label_tables`): each
        rater/labels layer on the image's grid, and the image, get ``metadata["segunc_labels"]`` for the values they
        hold. Returns a sentence for the status line (empty when no table is chosen)."""
        import numpy as np

        from ..label_tables import named_table
        from ..organs import LABEL_NAMES_KEY

        key = self.table_combo.currentData()
        if not key or self.image_volume is None:
            return ""
        table = named_table(key)
        by_value = {v: n for n, v in table.items()}
        shape = tuple(self.image_volume.shape)
        roles = (LayerRole.RATER, LayerRole.LABELS, LayerRole.SEGMENTATION)
        present, unknown, n_layers = set(), set(), 0
        for role in roles:
            for layer in layers_with_role(self.viewer.layers, role):
                if tuple(layer.data.shape) != shape:
                    continue
                values = {int(v) for v in np.unique(np.asarray(layer.data))} - {0}
                layer.metadata[LABEL_NAMES_KEY] = {by_value[v]: v for v in sorted(values) if v in by_value}
                present |= values
                unknown |= values - set(by_value)
                n_layers += 1
        if self.image_layer is not None and has_layer(self.viewer.layers, self.image_layer):
            self.image_layer.metadata[LABEL_NAMES_KEY] = {by_value[v]: v for v in sorted(present) if v in by_value}
        named = len(present - unknown)
        text = f" Organ names from {self.table_combo.currentText()}: {named} organ(s) in {n_layers} map(s)."
        if unknown:
            text += f" ⚠ values {', '.join(map(str, sorted(unknown)[:6]))} are not in that table."
        self.status.setText(self.status.text().split(" Organ names from")[0] + text)
        return text

    # -------------------------------------------------------------------------------- helpers
    def _preset_changed(self, _index: int) -> None:
        self.apply_preset(self.preset)

    def _target_image_layer(self) -> Image | None:
        if has_layer(self.viewer.layers, self.image_layer):
            return self.image_layer
        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        return next((layer for layer in self.viewer.layers if isinstance(layer, Image)), None)

    def _show_series(self, series: list[DicomSeries], folder: Path | None = None) -> None:
        self.series_combo.clear()
        for s in series:
            self.series_combo.addItem(str(s), s.series_id)
        self._series_folder = folder if series else None
        self.series_combo.setVisible(bool(series))
        self.series_label.setVisible(bool(series))

    @staticmethod
    def _warned(result: jobs.ImageResult | jobs.RaterResult) -> str:
        """The reader's warnings, as a line of the status and a napari warning (empty when there were none)."""
        if not result.warnings:
            return ""
        show_warning(f"{result.path.name}: " + " ".join(result.warnings))
        return "".join(f"\n⚠ {w}" for w in result.warnings)

    @staticmethod
    def _describe(volume: Volume) -> str:
        z, y, x = volume.shape
        sz, sy, sx = volume.spacing
        return f"{x}×{y}×{z} voxels of {sx:.2f}×{sy:.2f}×{sz:.2f} mm, {volume.modality.value}"
