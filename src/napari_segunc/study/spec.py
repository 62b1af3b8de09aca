"""A study file: the cases (an image and its raters) and the ensemble members with their groups (seed 000's protocol).

YAML or JSON; relative paths are relative to the study file::

    cases:                         # each case: an image and its raters' label maps
      - name: case01               # optional (default: the image file's stem, or its folder's name)
        image: case01/image.nii.gz
        raters: [case01/rater_1.nii.gz, case01/rater_2.nii.gz, case01/rater_3.nii.gz]
    cases_folder: cases/           # or/and: every sub-folder holding image.nii.gz and rater_*.nii.gz is a case
    ensemble: models/ensemble.json # the members (an ensemble file), or inline:
    members:                       #   the same entries as an ensemble file's "members"
      - {model: models/rater1_seed1, folds: [all], group: rater1, name: rater1/seed1}
    labels: labels.json            # optional: name=value,…, a labels.json or a known table (default: the models')
    device: auto                   # optional: auto, cpu, cuda, cuda:1…
    mirroring: true                # optional: nnU-Net's test-time mirroring
    save_probabilities: false      # optional: also write each group's mean probabilities (4D, compressed)
    save_member_probabilities: false  # optional: and each member's (what seed 000 stored, 3 GB each there)
    map_step: 0.000244140625       # optional: the written maps' rounding step in nats (2⁻¹²; 0: exact float32)

Every member counts in the general ensemble (``all``) and in its own group (a rater, say): the groups of seed
000's Table 1 are then the individual models, the per-rater ensembles and the general ensemble.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..io.readers import LABEL_MAP_SUFFIXES, file_suffix

__all__ = ["MAP_STEP", "StudyCase", "StudySpec", "read_study"]

#: The written maps' rounding step (nats): 2⁻¹², at most 1.2 × 10⁻⁴ nats off — 1/60 of one colour step of an
#: 8-bit colour map over 0 … ln 6 — and three to five times smaller once compressed (docs/studies.md).
MAP_STEP = 2.0**-12


@dataclasses.dataclass(frozen=True)
class StudyCase:
    """One case: its name, its image file and its raters' label-map files (absolute paths)."""

    name: str
    image: str
    raters: tuple[str, ...]


@dataclasses.dataclass
class StudySpec:
    """What `read_study` reads (members as `napari_segunc.inference.nnunet.Member`)."""

    path: Path
    cases: list[StudyCase]
    members: list[Any]
    labels: dict[str, int] | None = None
    device: str = "auto"
    mirroring: bool = True
    save_probabilities: bool = False
    save_member_probabilities: bool = False
    map_step: float = MAP_STEP

    @property
    def groups(self) -> list[str]:
        """The members' own groups, in order of first appearance (``all`` not included)."""
        return list(dict.fromkeys(m.group for m in self.members if m.group))


def _load(path: Path) -> dict:
    from ..io.readers import read_mapping_file

    data = read_mapping_file(path, "study file")
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: a study file is a mapping with 'cases' and 'members' (or 'ensemble').")
    return data


def _step(value: Any, where: str) -> float:
    try:
        step = float(value)
    except (TypeError, ValueError):
        step = -1.0
    if not 0 <= step < 1:
        raise InvalidInput(f"{where}: map_step must be a number of nats in [0, 1) (0: exact), got {value!r}.")
    return step


def _path(base: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: expected a file path, got {value!r}.")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _listed_cases(base: Path, entries: Any, where: str) -> list[StudyCase]:
    if not isinstance(entries, list):
        raise InvalidInput(f"{where}: 'cases' must be a list of {{name, image, raters}} entries.")
    cases = []
    for i, e in enumerate(entries, start=1):
        if not isinstance(e, dict) or "image" not in e:
            raise InvalidInput(f"{where}: case {i} needs an 'image'.")
        image = _path(base, e["image"], f"{where}, case {i}")
        raters = e.get("raters") or []
        if not isinstance(raters, list) or not raters:
            raise InvalidInput(f"{where}: case {i} ({e['image']}) needs a list of 'raters' (label maps).")
        name = str(e.get("name") or image.name.split(".")[0])
        cases.append(StudyCase(name, str(image), tuple(str(_path(base, r, f"{where}, case {name}")) for r in raters)))
    return cases


def _folder_cases(folder: Path, where: str) -> list[StudyCase]:
    if not folder.is_dir():
        raise InvalidInput(f"{where}: cases_folder {folder} is not a folder.")
    cases = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = [p for p in sub.iterdir() if p.name.split(".")[0] == "image" and file_suffix(p) in LABEL_MAP_SUFFIXES]
        raters = sorted(
            p for p in sub.iterdir() if p.name.startswith("rater_") and file_suffix(p) in LABEL_MAP_SUFFIXES
        )
        if len(images) == 1 and raters:
            cases.append(StudyCase(sub.name, str(images[0]), tuple(str(r) for r in raters)))
    if not cases:
        raise InvalidInput(f"{where}: {folder} has no case folder (image.nii.gz with rater_*.nii.gz beside it).")
    return cases


def read_study(path: str | Path) -> StudySpec:
    """Read and check a study file (module docstring); every file it names must exist.

    Raises
    ------
    InvalidInput
        Unreadable file, missing keys, a file that does not exist, duplicate case names, no member.
    """
    from ..inference.nnunet import members_from_entries, read_ensemble_file
    from ..labels import parse_labels

    p = Path(path).expanduser().resolve()
    data = _load(p)
    base, where = p.parent, str(p)
    cases = _listed_cases(base, data["cases"], where) if "cases" in data else []
    if "cases_folder" in data:
        cases += _folder_cases(_path(base, data["cases_folder"], where), where)
    if not cases:
        raise InvalidInput(f"{where}: no case; list them under 'cases' or give a 'cases_folder'.")
    names = [c.name for c in cases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(f"{where}: case names must be unique; {', '.join(twice)} appear more than once.")
    for c in cases:
        for f in (c.image, *c.raters):
            if not Path(f).exists():
                raise InvalidInput(f"{where}: case {c.name}: {f} does not exist.")
    if "ensemble" in data:
        members = read_ensemble_file(_path(base, data["ensemble"], where))
    elif "members" in data:
        members = members_from_entries(data["members"], base=base, where=where)
    else:
        raise InvalidInput(f"{where}: no member; give an 'ensemble' file or a 'members' list.")
    labels = data.get("labels")
    if isinstance(labels, dict):
        labels = {str(k): int(v) for k, v in labels.items()}
    elif labels is not None:
        text = str(labels)
        candidate = _path(base, text, where)
        labels = parse_labels(str(candidate) if candidate.exists() else text)
    return StudySpec(
        path=p,
        cases=cases,
        members=members,
        labels=labels or None,
        device=str(data.get("device", "auto")),
        mirroring=bool(data.get("mirroring", True)),
        save_probabilities=bool(data.get("save_probabilities", False)),
        save_member_probabilities=bool(data.get("save_member_probabilities", False)),
        map_step=_step(data.get("map_step", MAP_STEP), where),
    )
