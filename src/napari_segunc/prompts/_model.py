"""The box prompt data model: `Strategy`, organ names, `Box`, `OrganPrompt`, `PromptSet` and its JSON form.

Import these from `napari_segunc.prompts` (or `napari_segunc.prompts.boxes`); the file format is documented in
`napari_segunc.prompts.boxes`. Every coordinate is a voxel index in the package's canonical ``(z, y, x)`` grid.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidInput
from ..organs import NO_ENLARGEMENT, ORGAN_ALIASES, canonical_organ_name
from .corrections import Correction, voxel_index

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "NO_ENLARGEMENT",
    "ORGAN_ALIASES",
    "Box",
    "OrganPrompt",
    "PromptSet",
    "Strategy",
    "canonical_organ_name",
]

log = logging.getLogger(__name__)

FORMAT = "napari-segunc boxes"
#: The version written when some organ holds corrections (clicks, slice masks); box-only sets are written as
#: version 1, which every napari-segunc reads. Both are read.
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)


class Strategy(str, enum.Enum):
    """How many boxes an organ gets and where they come from (seed 004, §3.3.1–3.3.3).

    A: one box, on the middle slice ``z_min + round_half_up((z_max - z_min) / 2)`` of the organ.
    B: three boxes, at 1/4, 1/2 and 3/4 of the organ's height (fewer for organs of 1 or 2 slices).
    C: cascade: a second pass whose boxes and slice range (placed as in B) come from the first pass's masks.
    D: as C, with each box's area enlarged by 10 % and the slice range by 20 % (except `NO_ENLARGEMENT` organs).
    """

    A = "A"
    B = "B"
    C = "C"
    D = "D"


@dataclasses.dataclass(frozen=True)
class Box:
    """One box prompt: inclusive voxel bounds ``x_min..x_max``, ``y_min..y_max`` on axial slice `z`.

    Coordinates are converted to Python ints; their consistency is checked by the `OrganPrompt` holding the box.
    """

    z: int
    x_min: int
    y_min: int
    x_max: int
    y_max: int

    def __post_init__(self) -> None:
        for field in ("z", "x_min", "y_min", "x_max", "y_max"):
            object.__setattr__(self, field, voxel_index(getattr(self, field), f"A box's {field} (a voxel index)"))

    def as_xyxy(self) -> list[int]:
        """``[x_min, y_min, x_max, y_max]``, what SAM2's ``add_new_points_or_box(box=...)`` takes."""
        return [self.x_min, self.y_min, self.x_max, self.y_max]


@dataclasses.dataclass(frozen=True)
class OrganPrompt:
    """The boxes of one organ, the corrections made since, and the slice range its mask is propagated over.

    Attributes
    ----------
    label : int
        Label value of the organ (>= 1).
    name : str
        Organ name (see `canonical_organ_name`).
    z_min, z_max : int
        First and last axial slice of the propagation, inclusive.
    boxes : tuple of Box
        Inside ``z_min..z_max``, at most one per slice; stored sorted by z. At least one unless the organ has
        corrections (an organ may start from clicks or a slice mask alone).
    enlargeable : bool
        False for organs strategy D never enlarges (`NO_ENLARGEMENT`).
    corrections : tuple of Correction
        Clicks and slice masks in the order they were made (`napari_segunc.prompts.corrections`), each inside
        ``z_min..z_max``.

    Raises
    ------
    InvalidInput
        Any inconsistency, in a sentence naming the organ.
    """

    label: int
    name: str
    z_min: int
    z_max: int
    boxes: tuple[Box, ...]
    enlargeable: bool = True
    corrections: tuple[Correction, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidInput(f"Every organ needs a name; label {self.label!r} has {self.name!r}.")
        who = f"The prompt for '{self.name}'"
        object.__setattr__(self, "label", voxel_index(self.label, f"{who}: the label"))
        object.__setattr__(self, "z_min", voxel_index(self.z_min, f"{who}: z_min"))
        object.__setattr__(self, "z_max", voxel_index(self.z_max, f"{who}: z_max"))
        object.__setattr__(self, "enlargeable", bool(self.enlargeable))
        boxes = tuple(sorted(self.boxes, key=lambda b: b.z))
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "corrections", tuple(self.corrections))
        who = f"{who} (label {self.label})"
        if self.label < 1:
            raise InvalidInput(f"{who} needs a label value of 1 or more (0 is the background).")
        if not 0 <= self.z_min <= self.z_max:
            raise InvalidInput(
                f"{who} has the slice range {self.z_min}..{self.z_max}; it must start at 0 or more "
                "and not end before it starts."
            )
        if not boxes and not self.corrections:
            raise InvalidInput(f"{who} has no box and no click; give it at least one.")
        for c in self.corrections:
            if not isinstance(c, Correction):
                raise InvalidInput(f"{who} holds {c!r}, which is not a Correction.")
            outside = [z for z in c.slices if not self.z_min <= z <= self.z_max]
            if outside:
                raise InvalidInput(
                    f"{who} has a correction on slice {outside[0]}, outside its slice range "
                    f"{self.z_min}..{self.z_max}; widen the range first."
                )
        for b in boxes:
            if not isinstance(b, Box):
                raise InvalidInput(f"{who} holds {b!r}, which is not a Box.")
            if not self.z_min <= b.z <= self.z_max:
                raise InvalidInput(
                    f"{who} has a box on slice {b.z}, outside its slice range {self.z_min}..{self.z_max}."
                )
            if min(b.x_min, b.y_min) < 0 or b.x_min > b.x_max or b.y_min > b.y_max:
                raise InvalidInput(
                    f"{who} has the box {b.as_xyxy()} on slice {b.z}; a box is [x_min, y_min, "
                    "x_max, y_max] with 0 <= x_min <= x_max and 0 <= y_min <= y_max."
                )
        if len({b.z for b in boxes}) != len(boxes):
            zs = [b.z for b in boxes]
            dup = sorted({z for z in zs if zs.count(z) > 1})
            raise InvalidInput(f"{who} has two boxes on slice {dup[0]}; keep one box per slice.")

    @property
    def key_z(self) -> int:
        """Slice of the middle box (lower middle for an even count), where propagation starts; without boxes,
        the first correction's slice."""
        if not self.boxes:
            return self.corrections[0].z
        return self.boxes[(len(self.boxes) - 1) // 2].z

    def with_correction(self, correction: Correction) -> OrganPrompt:
        """This prompt with one more correction at the end (the slice range widened to hold it)."""
        zs = correction.slices
        return dataclasses.replace(
            self,
            z_min=min(self.z_min, *zs),
            z_max=max(self.z_max, *zs),
            corrections=(*self.corrections, correction),
        )

    def without_corrections(self) -> OrganPrompt:
        """The boxes alone (what a new box round starts from)."""
        return dataclasses.replace(self, corrections=())

    def fingerprint(self) -> str:
        """SHA-256 hex digest of (label, name, z_min, z_max, boxes, corrections): equal prompts give equal
        fingerprints."""
        key = [self.label, self.name, self.z_min, self.z_max, [[b.z, *b.as_xyxy()] for b in self.boxes]]
        if self.corrections:
            key.append([c.key() for c in self.corrections])
        return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()

    def outside(self, shape: Sequence[int]) -> str | None:
        """What of this prompt lies outside a ``(Z, Y, X)`` grid, as a phrase, or None when all is inside."""
        nz, ny, nx = (int(n) for n in shape)
        if self.z_max >= nz:
            return f"its slice range {self.z_min}..{self.z_max} goes past the last slice ({nz - 1})"
        for b in self.boxes:
            if b.x_max >= nx or b.y_max >= ny:
                return f"its box {b.as_xyxy()} on slice {b.z} goes past x {nx - 1} or y {ny - 1}"
        for c in self.corrections:
            problem = c.outside(shape)
            if problem:
                return problem
        return None


def grid_shape(shape: Any) -> tuple[int, int, int]:
    """Three positive whole voxel counts (z, y, x), or `InvalidInput`."""
    try:
        out = tuple(voxel_index(n, "A grid size (voxels)") for n in shape)
    except TypeError:
        out = ()
    if len(out) != 3 or min(out) < 1:
        raise InvalidInput(f"A grid size is three positive voxel counts (z, y, x), got {shape!r}.")
    return out  # type: ignore[return-value]


def _size(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """Box prompts of several organs on one image grid.

    Attributes
    ----------
    shape : tuple of 3 int
        ``(Z, Y, X)`` of the canonical grid the boxes refer to.
    organs : tuple of OrganPrompt
        Unique labels and unique (canonical) names, every box inside `shape`.
    strategy : Strategy, optional
        How the boxes were placed.
    source : str
        Where they come from, e.g. ``"mask:/path/seg.nii.gz"``, ``"user"``, ``"atlas"``, ``"cascade pass 1"``.
    missing : tuple of str
        Organs that were asked for but absent from the mask or score maps (no prompt).
    """

    shape: tuple[int, int, int]
    organs: tuple[OrganPrompt, ...]
    strategy: Strategy | None = None
    source: str = ""
    missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", grid_shape(self.shape))
        object.__setattr__(self, "organs", tuple(self.organs))
        object.__setattr__(self, "missing", tuple(str(m) for m in self.missing))
        object.__setattr__(self, "source", str(self.source))
        if self.strategy is not None:
            try:
                object.__setattr__(self, "strategy", Strategy(self.strategy))
            except ValueError:
                raise InvalidInput(f"Unknown box strategy {self.strategy!r}; use A, B, C or D.") from None
        labels, names = set(), set()
        for organ in self.organs:
            if not isinstance(organ, OrganPrompt):
                raise InvalidInput(f"A prompt set holds organ prompts, not {organ!r}.")
            name = canonical_organ_name(organ.name)
            if organ.label in labels or name in names:
                raise InvalidInput(
                    f"Two organ prompts share the label {organ.label} or the name '{organ.name}'; "
                    "each organ must appear once."
                )
            labels.add(organ.label)
            names.add(name)
            problem = organ.outside(self.shape)
            if problem:
                raise InvalidInput(
                    f"The prompt for '{organ.name}' does not fit its own {_size(self.shape)} image: {problem}."
                )

    def organ(self, name_or_label: str | int) -> OrganPrompt:
        """The prompt of an organ, by label value or by name (aliases and case accepted)."""
        for organ in self.organs:
            if isinstance(name_or_label, str):
                if canonical_organ_name(organ.name) == canonical_organ_name(name_or_label):
                    return organ
            elif organ.label == name_or_label:
                return organ
        have = ", ".join(f"{o.name} ({o.label})" for o in self.organs) or "none"
        raise InvalidInput(f"There is no box prompt for '{name_or_label}'; the prompts cover: {have}.")

    def replace(self, organ: OrganPrompt) -> PromptSet:
        """A new set with `organ` in place of the organ of the same label, or added at the end."""
        organs = list(self.organs)
        at = next((i for i, o in enumerate(organs) if o.label == organ.label), None)
        if at is None:
            organs.append(organ)
        else:
            organs[at] = organ
        name = canonical_organ_name(organ.name)
        missing = tuple(m for m in self.missing if canonical_organ_name(m) != name)
        return dataclasses.replace(self, organs=tuple(organs), missing=missing)

    def validate_for(self, shape: Sequence[int]) -> None:
        """Check that every box and slice range lies inside a ``(Z, Y, X)`` grid.

        Raises
        ------
        InvalidInput
            Naming the first organ that does not fit and both grid sizes. A different grid that still holds every
            box is accepted with a logged warning.
        """
        shape = grid_shape(shape)
        if shape == self.shape:
            return
        for organ in self.organs:
            problem = organ.outside(shape)
            if problem:
                raise InvalidInput(
                    f"The boxes were made for a {_size(self.shape)} image, this one is {_size(shape)} (z×y×x): the "
                    f"prompt for '{organ.name}' does not fit ({problem}). Make the boxes on this image."
                )
        log.warning("box prompts made for a %s grid used on a %s grid", _size(self.shape), _size(shape))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written to ``boxes.json`` (format in `napari_segunc.prompts.boxes`)."""
        corrected = any(o.corrections for o in self.organs)
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION if corrected else 1,
            "shape_zyx": list(self.shape),
            "strategy": self.strategy.value if self.strategy is not None else None,
            "source": self.source,
            "missing": list(self.missing),
            "organs": [
                {
                    "label": o.label,
                    "name": o.name,
                    "z_min": o.z_min,
                    "z_max": o.z_max,
                    "enlargeable": o.enlargeable,
                    "boxes": [{"z": b.z, "box": b.as_xyxy()} for b in o.boxes],
                    **({"corrections": [c.to_dict() for c in o.corrections]} if o.corrections else {}),
                }
                for o in self.organs
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source_file: str | None = None) -> PromptSet:
        """Rebuild a set from `to_dict`'s form; `InvalidInput` (naming `source_file` when given) if it is not one."""
        where = f"{source_file} is not a usable box prompt file" if source_file else "These box prompts are unusable"
        try:
            return _from_dict(cls, d)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None


_ORGAN_KEYS = {"label", "name", "z_min", "z_max", "boxes"}


def _keys(d: Any, required: set[str], optional: set[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise InvalidInput(f"{what} must be a JSON object, not {type(d).__name__}.")
    lacking, unknown = required - set(d), set(d) - required - optional
    if lacking:
        raise InvalidInput(f"{what} lacks {', '.join(sorted(lacking))}.")
    if unknown:
        raise InvalidInput(f"{what} has unknown entries {', '.join(sorted(unknown))}.")


def _from_dict(cls: type[PromptSet], d: Any) -> PromptSet:
    _keys(d, {"format", "version", "shape_zyx", "organs"}, {"strategy", "source", "missing"}, "The file")
    if d["format"] != FORMAT:
        raise InvalidInput(f"its format is {d['format']!r}, not {FORMAT!r}.")
    if type(d["version"]) is not int or d["version"] not in READ_VERSIONS:
        raise InvalidInput(
            f"it is version {d['version']!r}; this napari-segunc reads versions {', '.join(map(str, READ_VERSIONS))}."
        )
    if not isinstance(d["organs"], list) or not isinstance(d.get("missing", []), list):
        raise InvalidInput("'organs' and 'missing' must be lists.")
    if not isinstance(d.get("source", ""), str):
        raise InvalidInput("'source' must be a text.")
    organs = []
    for i, o in enumerate(d["organs"]):
        _keys(
            o,
            _ORGAN_KEYS,
            {"enlargeable", "corrections"} if d["version"] >= 2 else {"enlargeable"},
            f"Organ entry {i + 1}",
        )
        who = f"The prompt for '{o['name']}'"
        if not isinstance(o["boxes"], list) or not isinstance(o.get("enlargeable", True), bool):
            raise InvalidInput(f"{who}: 'boxes' must be a list and 'enlargeable' true or false.")
        boxes = []
        for b in o["boxes"]:
            _keys(b, {"z", "box"}, set(), f"{who}: a box entry")
            if not isinstance(b["box"], list) or len(b["box"]) != 4:
                raise InvalidInput(f"{who}: a box is [x_min, y_min, x_max, y_max], got {b['box']!r}.")
            boxes.append(Box(b["z"], *b["box"]))
        if not isinstance(o.get("corrections", []), list):
            raise InvalidInput(f"{who}: 'corrections' must be a list.")
        corrections = tuple(Correction.from_dict(c, who) for c in o.get("corrections", []))
        organs.append(
            OrganPrompt(
                o["label"],
                o["name"],
                o["z_min"],
                o["z_max"],
                tuple(boxes),
                enlargeable=o.get("enlargeable", True),
                corrections=corrections,
            )
        )
    return cls(d["shape_zyx"], tuple(organs), d.get("strategy"), d.get("source", ""), tuple(d.get("missing", [])))
