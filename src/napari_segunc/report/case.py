"""Export of one reviewed case: label map, uncertainty maps, box prompts, metrics CSV and the one-page PNG report.

`plan_case_files` names every file ``<case>_<what>.<suffix>`` in the output folder and gives the whole set one
version: ``_v2`` (``_v3``...) is appended to every name as soon as one of them exists, so an export never overwrites
anything and its files belong together. `write_case_files` is a generator job (ARCHITECTURE.md convention 2): it
yields a `napari_segunc.progress.Progress` per file and returns ``{what: Path}``. Label maps and maps are written in
the image's *source* geometry (`napari_segunc.io.write_volume`), maps as float32 NIfTI; the whole set is staged and
moved into place only when every file was written and checked (`napari_segunc.io.staged_folder`). Qt-free.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryMismatch, InvalidInput, SegUncError
from ..io.writers import write_csv, write_volume
from ..progress import Progress
from ..volume import FileFormat, Volume, VolumeKind

__all__ = [
    "LABELS",
    "METRICS",
    "PROMPTS",
    "REPORT",
    "STATISTICS",
    "CaseExport",
    "describe",
    "map_key",
    "plan_case_files",
    "safe_name",
    "write_case_files",
]

log = logging.getLogger(__name__)

LABELS, PROMPTS, METRICS, REPORT, DICOM_SEG = "labels", "prompts", "metrics", "report", "dicom_seg"
STATISTICS = "statistics"
_MAP = "map:"


def map_key(name: str) -> str:
    """Key of an uncertainty map in the plan and in the result (``"map:<name>"``)."""
    return _MAP + name


def safe_name(text: str, default: str = "case") -> str:
    """`text` as a portable file name part: letters, digits, ``.``, ``-`` and ``_`` (others become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text).strip()).strip("._")
    return name or default


@dataclasses.dataclass
class CaseExport:
    """Everything to write for one case; every array is on `image`'s canonical grid.

    Attributes
    ----------
    image : Volume
        The image: grid and source geometry of every volume written, and the CT of the report.
    case : str
        Case name, the first part of every file name (made file-safe with `safe_name`).
    labels : (Z, Y, X) int array, optional
        The corrected label map; written when `write_labels`, drawn in the report.
    maps : dict of str to (Z, Y, X) float array
        Uncertainty maps by name (file ``<case>_<safe name>.nii.gz``, float32).
    map_units : dict of str to str
        Colour bar label of a map in the report, e.g. ``"predictive entropy (nats)"``.
    prompts : PromptSet, optional
        Box prompts, written as ``<case>_boxes.json``.
    metrics_rows : list of dict, optional
        The metrics' tidy rows: written as ``<case>_metrics.csv`` (with `write_metrics`), Dice and HD95 in the
        report's table.
    statistics : list of dict, optional
        The organ statistics (`napari_segunc.metrics.stats.OrganStats.row`, the Metrics dock's Statistics): written
        as ``<case>_statistics.csv`` (with `write_metrics`), the members' and raters' volume ranges in the report.
    label_names : dict of str to int
        Organ name → label value (report legend and table).
    write_dicom_seg : bool
        Also write the label map as ``<case>_seg.dcm``, a DICOM SEG referencing the image's DICOM series
        (`napari_segunc.io.dicom_seg`); only for an image opened from DICOM.
    write_labels, write_maps, write_metrics, write_report : bool
        Which outputs to write (maps and metrics only when there are some; the prompts whenever given).
    report_map : str, optional
        The map drawn on the report (default the first of `maps`).
    """

    image: Volume
    case: str
    labels: np.ndarray | None = None
    maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    map_units: dict[str, str] = dataclasses.field(default_factory=dict)
    prompts: Any = None
    metrics_rows: list[dict[str, Any]] | None = None
    statistics: list[dict[str, Any]] | None = None
    label_names: dict[str, int] = dataclasses.field(default_factory=dict)
    write_labels: bool = True
    write_maps: bool = True
    write_metrics: bool = True
    write_report: bool = True
    report_map: str | None = None
    write_dicom_seg: bool = False

    def __post_init__(self) -> None:
        shape = self.image.shape
        if self.labels is not None and tuple(np.shape(self.labels)) != shape:
            raise GeometryMismatch(f"The label map has shape {np.shape(self.labels)} but the image {shape}.")
        for name, data in self.maps.items():
            if tuple(np.shape(data)) != shape:
                raise GeometryMismatch(f"The map '{name}' has shape {np.shape(data)} but the image {shape}.")
        if self.write_dicom_seg:
            src = self.image.source
            if src is None or src.format is None or src.format.value != "dicom":
                raise InvalidInput(
                    "DICOM SEG references the image's DICOM series: open the image from its DICOM folder, or untick "
                    "DICOM SEG."
                )
        if (self.write_labels or self.write_report or self.write_dicom_seg) and self.labels is None:
            raise InvalidInput(
                "There is no label map to export: accept a result into the working annotation, or "
                "choose a labels layer."
            )

    @property
    def labels_suffix(self) -> str:
        """The source image's format (DICOM and in-memory images: NIfTI)."""
        src = self.image.source
        return src.format.suffix if src is not None and src.format is not None else FileFormat.NIFTI.suffix


def _stems(export: CaseExport) -> dict[str, tuple[str, str]]:
    case = safe_name(export.case)
    stems: dict[str, tuple[str, str]] = {}
    if export.write_labels:
        stems[LABELS] = (f"{case}_labels", export.labels_suffix)
    if export.write_maps:
        for name in export.maps:
            stems[map_key(name)] = (f"{case}_{safe_name(name, 'map')}", ".nii.gz")
    if export.prompts is not None:
        stems[PROMPTS] = (f"{case}_boxes", ".json")
    if export.write_metrics and export.metrics_rows:
        stems[METRICS] = (f"{case}_metrics", ".csv")
    if export.write_metrics and export.statistics:
        stems[STATISTICS] = (f"{case}_statistics", ".csv")
    if export.write_report:
        stems[REPORT] = (f"{case}_report", ".png")
    if export.write_dicom_seg:
        stems[DICOM_SEG] = (f"{case}_seg", ".dcm")
    return stems


def _taken(path: Path) -> bool:
    if path.exists():
        return True
    if path.name.endswith(".mhd"):  # its data file lies beside it
        return any(path.with_name(path.name[:-4] + ext).exists() for ext in (".zraw", ".raw"))
    return False


def plan_case_files(export: CaseExport, folder: str | os.PathLike) -> dict[str, Path]:
    """The files an export will write, ``{what: path}``, all with the same free version.

    Keys: ``"labels"``, ``"map:<name>"`` per map, ``"prompts"``, ``"metrics"``, ``"statistics"``, ``"report"``,
    ``"dicom_seg"`` (only those to write).
    """
    folder = Path(folder).expanduser()
    stems = _stems(export)
    if not stems:
        raise InvalidInput("Nothing to export: tick at least one of labels, maps, prompts, metrics or report.")
    for version in range(1, 10_000):
        tail = "" if version == 1 else f"_v{version}"
        paths = {key: folder / f"{stem}{tail}{suffix}" for key, (stem, suffix) in stems.items()}
        if not any(_taken(p) for p in paths.values()):
            return paths
    raise InvalidInput(f"{folder} holds 9999 exports of '{export.case}'; choose another folder or case name.")


def _csv_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    from ..metrics.suite import COLUMNS

    extra = [k for r in rows for k in r if k not in COLUMNS]
    return list(COLUMNS) + list(dict.fromkeys(extra))


def _writer(export: CaseExport, key: str):
    image = export.image
    if key == LABELS:
        volume = image.with_data(np.asarray(export.labels), kind=VolumeKind.LABELS, name=f"{export.case} labels")
        return lambda path: write_volume(volume, path)
    if key.startswith(_MAP):
        name = key[len(_MAP) :]
        data = np.asarray(export.maps[name], dtype=np.float32)
        return lambda path: write_volume(image.with_data(data, kind=VolumeKind.FLOAT_MAP, name=name), path)
    if key == PROMPTS:
        from ..prompts import save_prompts

        return lambda path: save_prompts(export.prompts, path)
    if key == METRICS:
        rows = export.metrics_rows
        return lambda path: write_csv(rows, path, columns=_csv_columns(rows))
    if key == STATISTICS:
        stats = export.statistics
        return lambda path: write_csv(stats, path, columns=list(dict.fromkeys(k for r in stats for k in r)))
    if key == DICOM_SEG:
        from ..io.dicom_seg import write_dicom_seg

        labels = np.asarray(export.labels)
        organs = export.label_names or {f"label_{v}": int(v) for v in np.unique(labels) if v != 0}
        return lambda path: write_dicom_seg(image, path, organs=organs, labels=labels)
    if key == REPORT:
        from .page import write_case_report

        shown = export.report_map if export.report_map in export.maps else next(iter(export.maps), None)
        return lambda path: write_case_report(
            path,
            image,
            export.labels,
            uncertainty=export.maps.get(shown) if shown else None,
            label_names=export.label_names,
            table_rows=export.metrics_rows,
            statistics=export.statistics,
            title=export.case,
            uncertainty_label=export.map_units.get(shown, shown or ""),
        )
    raise ValueError(f"unknown export item {key!r}")


_WHAT = {
    LABELS: "label map",
    PROMPTS: "box prompts",
    METRICS: "metrics table",
    STATISTICS: "organ statistics",
    REPORT: "PNG report",
    DICOM_SEG: "DICOM SEG",
}


def describe(key: str) -> str:
    """A person's words for an export item."""
    return f"map '{key[len(_MAP) :]}'" if key.startswith(_MAP) else _WHAT.get(key, key)


def _reason(exc: BaseException, stage: Path) -> str:
    """Why a write failed, without the staging folder's name (the user never sees that folder)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().rstrip(".")
    match = re.match(r"Cannot write .+?: (.*)$", text, flags=re.S)
    return (match.group(1) if match else text).replace(str(stage), "the export folder")


def write_case_files(export: CaseExport, files: Mapping[str, Path]) -> Generator[Progress, None, dict[str, Path]]:
    """Write the planned `files` (from `plan_case_files`); yields progress per file, returns ``{what: path}``.

    The set is written whole or not at all: every file goes into a hidden staging folder inside the export folder
    and is checked there (`napari_segunc.io.staged_folder`), and only a complete set is moved to its final names.
    A name that was taken meanwhile is never overwritten: the export is refused and can simply be run again.

    Raises
    ------
    InvalidInput
        A write failed (folder missing or not writable, disk full...): the message names the file and says that
        nothing was exported.
    """
    from ..io.outputs import staged_folder

    total = len(files)
    folders = {Path(p).parent for p in files.values()}
    if len(folders) != 1:
        raise ValueError(f"an export is written into one folder, not {sorted(map(str, folders))}")
    (folder,) = folders
    with staged_folder(folder) as stage:
        for step, (key, planned) in enumerate(files.items(), start=1):
            yield Progress(step - 1, total, f"writing the {describe(key)}")
            try:
                _writer(export, key)(stage / planned.name)
            except (SegUncError, OSError, RuntimeError) as exc:  # RuntimeError: SimpleITK's writers
                raise InvalidInput(
                    f"Could not write the {describe(key)} {planned.name} to {folder}: "
                    f"{_reason(exc, stage)}. Nothing was exported (an export is written whole or not "
                    "at all)."
                ) from exc
            log.info("exported %s to %s", key, planned)
        taken = [p for p in files.values() if _taken(p)]
        if taken:
            raise InvalidInput(
                f"{taken[0]} appeared while exporting; nothing was overwritten. Export again: the "
                "next free version (_vN) is used."
            )
    yield Progress(total, total, "done")
    return dict(files)
