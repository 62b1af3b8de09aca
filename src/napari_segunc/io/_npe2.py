"""napari plugin (npe2) contributions: reader, label-map writer and the phantom sample data.

The manifest (``napari.yaml``) points at the module-level callables here. Layers are in mm world coordinates:
``scale`` = voxel spacing and ``translate`` = origin, in the canonical LPS ``(z, y, x)`` grid, and
``layer.metadata["segunc_geometry"]`` holds the grid and the source file's geometry so that label maps drawn or
computed on an image are written back in that image's exact orientation, spacing, origin and direction.

This module imports neither Qt nor napari: the contributions exchange plain napari ``LayerData`` tuples
``(data, kwargs, layer_type)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..display import WindowPreset, contrast_limits, default_preset
from ..errors import GeometryMismatch, InvalidInput
from ..roles import CONTOUR, ROLE, LayerRole
from ..volume import Volume, VolumeKind
from .readers import detect_format, list_dicom_series, read_volume
from .writers import write_volume

__all__ = [
    "READER_PATTERNS",
    "LayerData",
    "activate",
    "get_reader",
    "prefer_segunc_reader",
    "rater_layer_data",
    "read_layers",
    "volume_layer_data",
    "write_labels",
]

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


# ---------------------------------------------------------------------------------------------------- layer data
def volume_layer_data(
    volume: Volume, *, preset: WindowPreset | None = None, role: LayerRole | None = None
) -> LayerData:
    """napari ``LayerData`` tuple for a volume: an image layer, or a labels layer for label maps.

    Parameters
    ----------
    volume : Volume
        Canonical volume; its spacing/origin (mm) become the layer's ``scale``/``translate`` and its geometry goes
        to ``metadata["segunc_geometry"]``.
    preset : WindowPreset, optional
        Display window of an image layer; `default_preset` (abdomen for CT, percentile otherwise) when omitted.
        Only the contrast limits depend on it, never the voxel values.
    role : LayerRole, optional
        The layer's role (``metadata[roles.ROLE]``); by default IMAGE for an intensity volume, LABELS for a label
        map, MAP for a float map. Raters are loaded with ``role=LayerRole.RATER`` and drawn as outlines.

    Returns
    -------
    (data, kwargs, layer_type)
        ``layer_type`` is ``"labels"`` for `VolumeKind.LABELS`, ``"image"`` otherwise (gray colormap).
    """
    kwargs = volume.napari_kwargs()
    defaults = {VolumeKind.LABELS: LayerRole.LABELS, VolumeKind.INTENSITY: LayerRole.IMAGE}
    kwargs["metadata"][ROLE] = LayerRole(role or defaults.get(volume.kind, LayerRole.MAP)).value
    if volume.kind is VolumeKind.LABELS:
        return (volume.data, kwargs, "labels")
    preset = default_preset(volume) if preset is None else WindowPreset(preset)
    kwargs["contrast_limits"] = list(contrast_limits(preset, volume.data))
    kwargs["colormap"] = "gray"
    kwargs["metadata"]["segunc_window"] = preset.value
    return (volume.data, kwargs, "image")


def rater_layer_data(volume: Volume, index: int) -> LayerData:
    """A human rater's label map: role RATER, drawn as an outline in the `index`-th rater colour (0-based), so that
    every rater of an image can be seen at once (napari-segunc's docks draw it so; napari itself, adding the
    phantom sample, cannot set a contour and fills it at 0.6)."""
    return as_rater(volume_layer_data(volume), index)


def as_rater(layer_data: LayerData, index: int) -> LayerData:
    """A labels layer tuple made the `index`-th rater's (see `rater_layer_data`)."""
    from ..organs import rater_colormap

    data, kwargs, layer_type = layer_data
    kwargs = {**kwargs, "colormap": rater_colormap(index), "opacity": 0.6}
    kwargs["metadata"] = {**kwargs.get("metadata", {}), ROLE: LayerRole.RATER.value, CONTOUR: 1}
    return data, kwargs, layer_type


# ---------------------------------------------------------------------------------------------------- reader
def _as_paths(path: Any) -> list[Path] | None:
    if isinstance(path, str | os.PathLike):
        return [Path(path)]
    if isinstance(path, Sequence) and path and all(isinstance(p, str | os.PathLike) for p in path):
        return [Path(p) for p in path]
    return None


def _file_header_readable(path: Path) -> bool:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()  # RuntimeError when this is not an image ITK understands
    return reader.GetDimension() >= 3


def _can_read(path: Path) -> bool:
    if path.is_dir():
        return bool(list_dicom_series(path))
    if not path.is_file() or detect_format(path) is None:
        return False
    return _file_header_readable(path)


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """npe2 reader hook: `read_layers` when every path is a readable 3D file or DICOM folder, else ``None``.

    A file qualifies when its suffix is one of ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``
    and SimpleITK can read its header; a folder when SimpleITK finds a DICOM series directly in it. Never raises.
    """
    try:
        paths = _as_paths(path)
        if not paths:
            return None
        for p in paths:
            if not _can_read(p.expanduser()):
                return None
    except Exception:  # noqa: BLE001 - a reader hook must never raise; anything odd means "not ours"
        log.debug("napari-segunc cannot read %r", path, exc_info=True)
        return None
    return read_layers


def read_layers(path: PathOrPaths) -> list[LayerData]:
    """Read each file or DICOM folder into one napari layer (image, or labels for integer label maps).

    Raises
    ------
    InvalidInput
        A file cannot be read, or a folder holds several DICOM series (use the "Open study" widget to choose).
    """
    paths = _as_paths(path)
    if not paths:
        raise InvalidInput(f"Nothing to open in {path!r}.")
    layers = []
    for p in paths:
        p = p.expanduser()
        if p.is_dir():
            series = list_dicom_series(p)
            if len(series) > 1:
                listing = "; ".join(str(s) for s in series)
                raise InvalidInput(
                    f"{p} holds {len(series)} DICOM series ({listing}); open it with Plugins › SegUnc › "
                    "Open study to choose one."
                )
        layers.append(volume_layer_data(read_volume(p)))
    return layers


# ---------------------------------------------------------------------------------------------------- reader choice
PLUGIN_NAME = "napari-segunc"
#: napari ``plugins.extension2reader`` patterns set to this plugin: the reader's file patterns, and ``*/`` (any
#: folder, the pattern napari matches folders with) for DICOM series folders.
READER_PATTERNS = ("*.nii", "*.nii.gz", "*.nrrd", "*.nhdr", "*.mha", "*.mhd", "*" + os.sep)


def _example_path(pattern: str) -> str:
    """An absolute path of the kind `pattern` stands for (what napari matches preferences against)."""
    root = os.path.join(os.path.abspath(os.sep), "data")
    return root + os.sep if pattern.endswith(os.sep) else os.path.join(root, "image" + pattern.removeprefix("*"))


def prefer_segunc_reader(settings: Any = None) -> list[str]:
    """Make napari open medical images and folders with this plugin without asking, where the user chose nothing.

    napari's own reader ("napari builtins") also claims ``*.nii``, ``*.nii.gz``, ``*.nrrd``, ``*.mha``... and every
    folder, so File ▸ Open would ask which plugin to use every time. Each of `READER_PATTERNS` is set to this
    plugin in ``settings.plugins.extension2reader`` (saved with napari's settings, listed in Preferences ▸ Plugins)
    unless one of the user's own patterns (relative ones, such as ``*.gz`` or ``*``) already decides those files:
    a choice the user made is never replaced. Absolute-path preferences (napari's "remember" for one folder) are
    more specific than these patterns and keep winning.

    Parameters
    ----------
    settings : napari.settings.NapariSettings, optional
        Default: napari's settings of this session (``napari.settings.get_settings()``).

    Returns
    -------
    list of str
        The patterns set now (empty when nothing changed).
    """
    from fnmatch import fnmatch

    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    users = [key for key in current if not os.path.isabs(key)]
    added = [p for p in READER_PATTERNS if not any(fnmatch(_example_path(p), key) for key in users)]
    if added:
        settings.plugins.extension2reader = {**current, **dict.fromkeys(added, PLUGIN_NAME)}
        log.info(
            "napari now opens %s with napari-segunc without asking (napari's Preferences > Plugins lists and "
            "removes these choices)",
            ", ".join("folders" if p.endswith(os.sep) else p for p in added),
        )
    return added


def activate(context: Any = None) -> None:
    """npe2 ``on_activate`` hook, run once per napari session when this plugin is first used (its reader, sample or
    a dock): `prefer_segunc_reader`. Never raises: a plugin that fails to activate would not open at all."""
    try:
        prefer_segunc_reader()
    except Exception:  # noqa: BLE001 - not inside napari, or its settings unusable: the reader dialog stays
        log.debug("could not set napari's reader preference", exc_info=True)


# ---------------------------------------------------------------------------------------------------- writer
def _meta_volume(data: Any, meta: dict[str, Any], name: str) -> Volume:
    data = np.asarray(data)
    geometry = (meta.get("metadata") or {}).get("segunc_geometry")
    if geometry:
        expected = tuple(int(n) for n in geometry.get("shape", data.shape))
        if tuple(data.shape) != expected:
            raise GeometryMismatch(
                f"Label layer '{name}' has shape {data.shape} but the image grid it was made on has {expected}; "
                "it cannot be written in that image's geometry."
            )
        return Volume.from_geometry_dict(data, geometry, kind=VolumeKind.LABELS, name=name)
    if data.ndim != 3:
        raise InvalidInput(f"Label layer '{name}' has {data.ndim} dimension(s); only 3D label maps can be saved.")
    scale = tuple(meta.get("scale") or (1.0, 1.0, 1.0))[-3:]
    translate = tuple(meta.get("translate") or (0.0, 0.0, 0.0))[-3:]
    log.warning(
        "label layer '%s' carries no source geometry; writing it with spacing %s, origin %s and identity "
        "direction (LPS)",
        name,
        scale,
        translate,
    )
    return Volume(data, spacing=scale, origin=translate, kind=VolumeKind.LABELS, name=name)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for labels layers.

    The file gets the source image's exact orientation, spacing, origin and direction when the layer carries
    ``metadata["segunc_geometry"]`` (layers opened by this plugin, or copied from such a layer); otherwise the
    layer's ``scale``/``translate`` (mm) with an identity (LPS) direction. An existing file is never replaced.

    Returns
    -------
    list of str
        The file written (napari's writer contract).
    """
    name = meta.get("name") or Path(path).name
    volume = _meta_volume(data, meta, name)
    written = write_volume(volume, path, overwrite=False)
    return [str(written)]
