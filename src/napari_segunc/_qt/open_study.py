"""The "Open study" dock widget: an image (file or DICOM series), rater label maps, a display window, the phantom.

Every file is read in a napari worker thread; the widget's inputs are disabled meanwhile. Buttons open a file
dialog and then call `OpenStudyWidget.open_image`, `OpenStudyWidget.add_raters` or
`OpenStudyWidget.load_phantom`, which tests (and scripts) call directly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
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
from ..errors import SegUncError
from ..io import DicomSeries, list_dicom_series, read_volume
from ..io._npe2 import LayerData, phantom_layers, volume_layer_data
from ..volume import Volume, VolumeKind, check_same_grid
from ._worker import start_worker

if TYPE_CHECKING:
    import napari

__all__ = ["OpenStudyWidget"]

log = logging.getLogger(__name__)

_IMAGE_FILTER = "Medical images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)"
_LABEL_FILTER = "Label maps (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)"


# ------------------------------------------------------------------------------------ work done in the worker
@dataclasses.dataclass
class _ImageResult:
    path: Path
    volume: Volume | None = None
    layer: LayerData | None = None
    data_range: tuple[float, float] | None = None
    series: list[DicomSeries] = dataclasses.field(default_factory=list)  # when a choice is needed


@dataclasses.dataclass
class _RaterResult:
    path: Path
    layer: LayerData | None = None
    error: str | None = None


@dataclasses.dataclass
class _StudyResult:
    volume: Volume
    layers: list[LayerData]
    data_range: tuple[float, float]


def _data_range(data: np.ndarray) -> tuple[float, float]:
    """Min and max of the finite values (the layer's contrast slider spans at least this)."""
    if data.dtype.kind == "f":
        data = data[np.isfinite(data)]
    if data.size == 0:
        return (0.0, 1.0)
    return (float(data.min()), float(data.max()))


def _load_image(path: Path, series_id: str | None) -> _ImageResult:
    if path.is_dir() and series_id is None:
        series = list_dicom_series(path)
        if len(series) > 1:
            return _ImageResult(path, series=series)
    volume = read_volume(path, series_id=series_id, kind=VolumeKind.INTENSITY)
    return _ImageResult(path, volume=volume, layer=volume_layer_data(volume), data_range=_data_range(volume.data))


def _load_raters(paths: Sequence[Path], reference: Volume) -> Iterator[_RaterResult]:
    for path in paths:
        try:
            volume = read_volume(path, kind=VolumeKind.LABELS)
            check_same_grid(reference, volume)
        except SegUncError as exc:
            yield _RaterResult(path, error=f"{path.name} was not added: {exc}")
        else:
            yield _RaterResult(path, layer=volume_layer_data(volume))


def _load_phantom(seed: int) -> _StudyResult:
    volume, layers = phantom_layers(seed=seed)
    return _StudyResult(volume, layers, _data_range(volume.data))


# ------------------------------------------------------------------------------------ the widget
class OpenStudyWidget(QWidget):
    """Dock widget that opens an image and its rater label maps in mm world coordinates.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer to add layers to (napari passes it when the widget is opened from the Plugins menu).
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.image_volume: Volume | None = None  # grid every rater map is checked against
        self.image_layer: Image | None = None
        self._worker: Any = None
        self._series_folder: Path | None = None

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("image file or DICOM folder")
        self.open_button = QPushButton("Open")
        self.file_button = QPushButton("Image file…")
        self.folder_button = QPushButton("DICOM folder…")
        self.series_combo = QComboBox()
        self.series_label = QLabel("Series:")
        self.raters_button = QPushButton("Add rater label maps…")
        self.preset_combo = QComboBox()
        for preset in WindowPreset:
            self.preset_combo.addItem(preset.label, preset)
        self.phantom_button = QPushButton("Load phantom study")
        self.status = QLabel("Open a CT/MR image, or load the phantom study.")
        self.status.setWordWrap(True)

        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit)
        path_row.addWidget(self.open_button)
        choose_row = QHBoxLayout()
        choose_row.addWidget(self.file_button)
        choose_row.addWidget(self.folder_button)
        form = QFormLayout()
        form.addRow(self.series_label, self.series_combo)
        form.addRow("Window:", self.preset_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(path_row)
        layout.addLayout(choose_row)
        layout.addLayout(form)
        layout.addWidget(self.raters_button)
        layout.addWidget(self.phantom_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._show_series([])

        self.open_button.clicked.connect(self._open_typed_path)
        self.path_edit.returnPressed.connect(self._open_typed_path)
        self.file_button.clicked.connect(self._choose_image_file)
        self.folder_button.clicked.connect(self._choose_dicom_folder)
        self.raters_button.clicked.connect(self._choose_raters)
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
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
            self.preset_combo,
            self.phantom_button,
        ]

    @property
    def busy(self) -> bool:
        """True while a file is being read."""
        return self._worker is not None

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
        self._start(_load_image, path, series_id, on_returned=self._image_loaded, what=f"Reading {path.name}")

    def add_raters(self, paths: Sequence[str | os.PathLike]) -> None:
        """Read rater label maps in a worker; each one on the image's grid becomes a labels layer.

        A map whose size, spacing, origin or direction differs from the open image is not added; an error
        naming the file says why.
        """
        if self.image_layer is None or self.image_layer not in self.viewer.layers:
            self.image_volume = None  # the image was closed: use whichever image layer is there now
            self.use_image_layer()
        if self.image_volume is None:
            self._error("Open the image first: rater label maps are checked against its voxel grid.")
            return
        paths = [Path(p).expanduser() for p in paths]
        self._start(
            _load_raters,
            paths,
            self.image_volume,
            on_yielded=self._rater_loaded,
            what=f"Reading {len(paths)} rater map(s)",
        )

    def load_phantom(self, seed: int = 0) -> None:
        """Generate the synthetic abdominal CT study in a worker and add the image and one layer per rater."""
        self._start(_load_phantom, seed, on_returned=self._phantom_loaded, what="Generating the phantom study")

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
    def _start(self, func, *args, on_returned=None, on_yielded=None, what: str = "") -> None:
        if self.busy:
            self._error("Still reading the previous file; wait for it to finish.")
            return
        self.status.setText(what + "…")
        self._worker = start_worker(
            func,
            *args,
            inputs=self.inputs,
            on_returned=on_returned,
            on_yielded=on_yielded,
            on_error=self._error,
            on_finished=self._finished,
            description=what,
        )

    def _finished(self) -> None:
        self._worker = None

    def _error(self, message: str) -> None:
        log.warning("%s", message)
        self.status.setText(message)
        show_error(message)

    # -------------------------------------------------------------------------------- results (GUI thread)
    def _image_loaded(self, result: _ImageResult) -> None:
        if result.series:
            self._show_series(result.series, result.path)
            self.status.setText(
                f"{result.path.name} holds {len(result.series)} DICOM series; choose one and press Open."
            )
            return
        self._show_series([])
        self._add_image(result.volume, result.layer, result.data_range)
        self.status.setText(f"Opened {result.path.name}: {self._describe(result.volume)}.")

    def _rater_loaded(self, result: _RaterResult) -> None:
        if result.error:
            self._error(result.error)
            return
        layer = self._add_layer(result.layer)
        self.status.setText(f"Added rater map '{layer.name}'.")

    def _phantom_loaded(self, result: _StudyResult) -> None:
        self._add_image(result.volume, result.layers[0], result.data_range)
        for layer_data in result.layers[1:]:
            self._add_layer(layer_data)
        msg = f"Phantom study: {self._describe(result.volume)}, {len(result.layers) - 1} rater maps."
        self.status.setText(msg)
        show_info(msg)

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
        data, kwargs, layer_type = layer_data
        return getattr(self.viewer, f"add_{layer_type}")(data, **kwargs)

    # -------------------------------------------------------------------------------- helpers
    def _preset_changed(self, _index: int) -> None:
        self.apply_preset(self.preset)

    def _target_image_layer(self) -> Image | None:
        if self.image_layer is not None and self.image_layer in self.viewer.layers:
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
    def _describe(volume: Volume) -> str:
        z, y, x = volume.shape
        sz, sy, sx = volume.spacing
        return f"{x}×{y}×{z} voxels of {sx:.2f}×{sy:.2f}×{sz:.2f} mm, {volume.modality.value}"
