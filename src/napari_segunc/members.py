"""Ensemble members as their sources hand them over: the one currency between the engines and the pipeline.

A *member source* is an iterator of `napari_segunc.progress.Progress` reports and `MemberProbabilities`, one per
member, in order:

- `napari_segunc.inference.nnunet.predict_members`: nnU-Net models, with test-time flips or MC-dropout samples as
  members of their own group;
- `napari_segunc.uncertainty.pipeline.file_members`: probability files on disk (nnU-Net ``.npz``, 4D NIfTI).

`napari_segunc.uncertainty.pipeline.accumulate` streams any of them into the uncertainty maps. A source never
accumulates anything itself (ARCHITECTURE.md convention 4), and it yields each member once and then lets go of it,
so that memory does not grow with the number of members. Closing a source stops it (a running nnU-Net member at its
next sliding-window tile). Qt-free; imports neither the engines nor the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    from .progress import Progress
    from .volume import Volume

__all__ = ["MemberProbabilities", "MemberSource", "dataset_labels"]


@dataclasses.dataclass(eq=False)
class MemberProbabilities:
    """One member's class probabilities, as a source yields them.

    Attributes
    ----------
    name : str
        The member's name in results and messages (``"rater1/fold_0"``, a file name).
    probabilities : ndarray, shape (C, Z, Y, X)
        Class probabilities (background first) on the canonical grid of the image, float32 or float16.
    group : str, optional
        The group it also counts in (a rater, ``"tta"``, ``"mc_dropout"``); every member counts in ``"all"``.
    grid : Volume, optional
        The grid the probabilities lie on; the pipeline checks every member's against the first one's.
    labels : mapping of str to int
        Label names from the model or the files (``dataset.json``), background left out; empty when unknown.
    """

    name: str
    probabilities: np.ndarray
    group: str | None = None
    grid: Volume | None = None
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)


#: What a member source yields (see the module's docstring).
MemberSource = Iterator[Union["Progress", MemberProbabilities]]


def dataset_labels(folder: str | os.PathLike, *, n_classes: int | None = None) -> dict[str, int]:
    """The label names of an nnU-Net ``dataset.json`` in `folder` (its ``labels``; background and region labels
    left out), or ``{}`` when there is none or it cannot be read.

    With `n_classes`, the file must describe exactly the channels 0 … n_classes − 1 of a probability map beside it
    (channel i = label i); otherwise ``{}``: names that do not match the channels would be worse than none.
    """
    try:
        spec = json.loads((Path(folder) / "dataset.json").read_text(encoding="utf-8"))
        labels = {str(k): int(v) for k, v in spec["labels"].items() if isinstance(v, int) and not isinstance(v, bool)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    if n_classes is not None and sorted(labels.values()) != list(range(n_classes)):
        return {}
    return {name: value for name, value in labels.items() if value != 0}
