"""napari sample data: the synthetic abdominal CT study (`napari_segunc.phantom`) as napari layers.

It sits above both `napari_segunc.io` (the layer tuples of the reader) and `napari_segunc.phantom`, so that neither
imports the other for it. napari calls `phantom_sample` (File ▸ Open Sample ▸ napari-segunc); the Open-study dock
calls `phantom_layers`. Imports neither Qt nor napari.
"""

from __future__ import annotations

from .display import WindowPreset
from .io._npe2 import LayerData, rater_layer_data, volume_layer_data
from .organs import LABEL_NAMES_KEY, PHANTOM_LABELS
from .phantom import make_phantom
from .volume import Volume, VolumeKind

__all__ = ["phantom_layers", "phantom_sample"]


def phantom_sample() -> list[LayerData]:
    """Sample data: the synthetic abdominal CT (abdomen window) and one labels layer per simulated rater."""
    return phantom_layers(seed=0)[1]


def phantom_layers(*, seed: int = 0) -> tuple[Volume, list[LayerData]]:
    """The phantom study's image volume and its layers: the CT (abdomen window), then ``rater_1``, ``rater_2``...

    Every layer carries the phantom's organ table (``metadata["segunc_labels"]``), so the docks name its organs.
    """
    study = make_phantom(seed=seed)
    layers = [volume_layer_data(study.image, preset=WindowPreset.ABDOMEN)]
    for i, rater in enumerate(study.raters):
        if rater.kind is not VolumeKind.LABELS:
            rater = rater.with_data(rater.data, kind=VolumeKind.LABELS)
        layers.append(rater_layer_data(rater, i))
    for _data, kwargs, _type in layers:
        kwargs["metadata"] = {**kwargs.get("metadata", {}), LABEL_NAMES_KEY: dict(PHANTOM_LABELS)}
    return study.image, layers
