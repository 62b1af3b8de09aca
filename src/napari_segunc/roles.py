"""What a napari layer is to napari-segunc: its role and the metadata keys it carries (Qt-free).

The layer tuples the core builds (`io._npe2`, `uncertainty.layers`) and the docks (`_qt`) tag every layer with a
`LayerRole` under ``metadata[ROLE]``; the docks also give each layer a unique id (``metadata[ID]``) and find layers by
role and id, never by object identity or by their name (a dock opened from the Plugins menu sees napari's
`PublicOnlyProxy` layers, a new proxy object at every access). ``_qt/_layers.py`` holds the functions that work on a
viewer's layers.
"""

from __future__ import annotations

import enum

__all__ = [
    "CLASSES",
    "CONTOUR",
    "DERIVED",
    "GEOMETRY",
    "ID",
    "IMAGE_ID",
    "LABEL_NAMES",
    "MAP_KIND",
    "MEMBER_VOXELS",
    "PROBABILITIES",
    "REVIEW",
    "ROLE",
    "UNIT",
    "WINDOW",
    "LayerRole",
]


class LayerRole(str, enum.Enum):
    """The role of a layer (``metadata[ROLE]``)."""

    IMAGE = "image"  # the CT/MR volume (intensity, with a display window)
    RATER = "rater"  # a human rater's label map (loaded as a rater, whatever its file name)
    LABELS = "labels"  # a label map opened without a role (File ▸ Open)
    SEGMENTATION = "segmentation"  # a model's label map (ensemble, MedSAM2, probability files)
    MAP = "map"  # an uncertainty map (float, on the image's grid)
    PROBABILITIES = "probabilities"  # 4D class probabilities (C, z, y, x)
    RATER_ANALYSIS = "rater analysis"  # consensus, dissensus, majority vote, STAPLE, model vs raters
    REVIEW_MASK = "review mask"  # the voxels the review queue selected
    ANNOTATION = "annotation"  # the working annotation of an image (holds its review session)
    BOXES = "boxes"  # one organ's MedSAM2 box prompts (Shapes)
    CLICKS = "clicks"  # one organ's MedSAM2 click prompts (Points: positive / negative, in the order made)
    ATLAS_SCORE = "atlas score"  # an organ's atlas score map (float, 0–1)
    COMPARE_COPY = "compare copy"  # the compare view's image copies (never listed as images)


#: ``metadata`` keys (values: see each comment).
ROLE = "segunc_role"  # LayerRole value
ID = "segunc_id"  # unique id of the layer in its viewer (hex string)
GEOMETRY = "segunc_geometry"  # `Volume.geometry_dict()` of the grid
LABEL_NAMES = "segunc_labels"  # {organ name: label value}
MAP_KIND = "segunc_map"  # which uncertainty map ("entropy", "mutual_information"…)
UNIT = "segunc_unit"  # "nats", "normalised", "probability"
CLASSES = "segunc_classes"  # C of an entropy map (background included)
PROBABILITIES = "segunc_probabilities"  # (C, z, y, x) mean probabilities of a segmentation
MEMBER_VOXELS = "segunc_member_voxels"  # an ensemble segmentation's {member: [voxels per class of its label map]}
REVIEW = "segunc_review"  # the annotation's `ReviewState`
IMAGE_ID = "segunc_image"  # id of the image a layer belongs to (annotation, boxes)
WINDOW = "segunc_window"  # the display window preset of an image
DERIVED = "segunc_derived"  # which dock action made it ("raters", "queue"): replaced when it runs again
CONTOUR = "segunc_contour"  # contour width a labels layer is drawn with (0: filled)
