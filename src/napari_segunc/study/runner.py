"""Running a study: one task per case, every member streamed into the case's accumulator, every case committed whole.

A case task (`run_case`) reads the image and its raters, runs every member on the image (nnU-Net's own predictor,
`napari_segunc.inference.nnunet.predict_members`), evaluates each member's probabilities as it passes (the
*individual models* of seed 000's Table 1) and streams it into the case's `EnsembleAccumulator` with its group
(no per-member probability file is written). Then every group (each member's own group: the *per-rater
ensembles*; ``all``: the *general ensemble*) is evaluated with its maps, and its segmentation, predictive entropy
and mutual information (and, when asked, its mean probabilities) are written as compressed NIfTI in the image's own
geometry under ``cases/<case>/<group>/`` (the maps rounded to multiples of `StudySpec.map_step`, 2⁻¹² nats by
default: invisible on screen, and three to five times smaller once compressed; the metrics use the exact maps),
beside ``rows.json``, the case's tidy metric rows. The case's folder
appears in one rename when everything is written (`napari_segunc.io.outputs.staged_folder`): a case is either
finished or absent, and a rerun skips the finished ones.

Why a task per case and not per (case, member): a member's output is its class probabilities, C × the image in
float32 (0.3 GB for 4 classes on 300 × 512 × 512); a task per member would ship each to the task that averages the
case, where a task per case keeps them in its own memory and lets each go after adding it.

`run_study` drives the cases serially (``workers=0``) or on Dask distributed: a `LocalCluster` of single-threaded
worker processes, or an existing scheduler. A worker that dies takes its case with it; Dask runs that case again
on another worker (``retries``). A case that fails for a reason of its own (an unreadable file, a rater on another
grid) becomes one ``metric = error`` row with the reason, and the other cases go on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import SegUncError
from ..metrics.pipeline import rater_names_from_files
from ..metrics.suite import COLUMNS
from ..progress import Progress
from .spec import StudyCase, StudySpec

__all__ = ["LEVELS", "ROWS", "STUDY_COLUMNS", "case_folder", "run_case", "run_study", "worker_device"]

log = logging.getLogger(__name__)

#: The three levels of seed 000's Table 1, by the value of the ``level`` column.
LEVELS = {"model": "Individual models", "group": "Per-group ensembles", "ensemble": "General ensemble"}

#: A finished case's rows, inside its folder.
ROWS = "rows.json"

#: The columns of the study's tidy table: the level and group, then the suite's.
STUDY_COLUMNS = ("level", "group", *COLUMNS)

_MAPS = ("entropy", "mutual_information")


def case_folder(out: str | Path, case: str) -> Path:
    """Where a case's results go: ``<out>/cases/<case>`` (the name made file-safe)."""
    from ..report.case import safe_name

    return Path(out) / "cases" / safe_name(case)


def _tagged(rows: Sequence[dict], level: str, group: str) -> list[dict]:
    return [{"level": level, "group": group, **r} for r in rows]


def _quantised(a, step: float):
    """`a` rounded to multiples of `step` (exact in float32 for a power of two), or `a` itself when `step` is 0."""
    import numpy as np

    return a if not step else (np.round(np.asarray(a, np.float32) / np.float32(step)) * np.float32(step))


def _write_group(maps: Any, image: Any, folder: Path, *, probabilities: bool, step: float) -> None:
    from ..io import write_probabilities, write_volume
    from ..volume import VolumeKind

    folder.mkdir(parents=True)
    segmentation = image.with_data(maps.segmentation, kind=VolumeKind.LABELS, name="segmentation")
    write_volume(segmentation, folder / "segmentation.nii.gz")
    for name in _MAPS:
        data = _quantised(getattr(maps, name), step)
        write_volume(image.with_data(data, kind=VolumeKind.FLOAT_MAP, name=name), folder / f"{name}.nii.gz")
    if probabilities:
        write_probabilities(maps.mean_probabilities, image, folder / "mean_probabilities.nii.gz")


def run_case(case: StudyCase, spec: StudySpec, out: str | Path, *, device: str | None = None) -> list[dict]:
    """Run and evaluate one case (module docstring); returns its rows (keys `STUDY_COLUMNS`). A finished case is
    read back, not run again. `device` overrides the study's (a worker's own GPU)."""
    from ..inference.nnunet import predict_members
    from ..io import atomic_write, read_volume, write_probabilities
    from ..io.outputs import staged_folder
    from ..members import MemberProbabilities
    from ..metrics.suite import evaluate_case
    from ..progress import run_job
    from ..report.case import safe_name
    from ..uncertainty.ensemble import ALL_MEMBERS
    from ..uncertainty.pipeline import accumulate
    from ..volume import VolumeKind, check_same_grid

    folder = case_folder(out, case.name)
    done = folder / ROWS
    if done.is_file():
        log.info("case %s: finished earlier, read back", case.name)
        return json.loads(done.read_text(encoding="utf-8"))
    image = read_volume(case.image)
    raters = []
    for path in case.raters:
        rater = read_volume(path, kind=VolumeKind.LABELS)
        check_same_grid(image, rater)
        raters.append(rater.data)
    names = rater_names_from_files(case.raters)
    rows: list[dict] = []

    def evaluate(probabilities, labels, ensemble=None) -> list[dict]:
        return evaluate_case(
            probabilities,
            raters,
            spacing=image.spacing,
            labels=spec.labels or labels or None,
            ensemble=ensemble,
            rater_names=names,
            case=case.name,
        ).rows

    def evaluated(source, stage: Path) -> Iterator:
        for item in source:
            if isinstance(item, MemberProbabilities):  # the individual model, before it joins the ensemble
                rows.extend(_tagged(evaluate(item.probabilities, dict(item.labels)), "model", item.name))
                if spec.save_member_probabilities:
                    members_dir = stage / "members"
                    members_dir.mkdir(exist_ok=True)
                    write_probabilities(item.probabilities, image, members_dir / f"{safe_name(item.name)}.nii.gz")
            yield item

    with staged_folder(folder) as stage:
        source = predict_members(image, spec.members, device=device or spec.device, mirroring=spec.mirroring)
        acc, _grid, labels = run_job(accumulate(evaluated(source, stage), class_variance=False, reference=image))
        for group in [g for g in acc.groups if g != ALL_MEMBERS] + [ALL_MEMBERS]:  # Table 1's order
            maps = acc.result(group, consume=True)
            level = "ensemble" if group == ALL_MEMBERS else "group"
            rows.extend(_tagged(evaluate(maps.mean_probabilities, labels, ensemble=maps), level, group))
            _write_group(
                maps, image, stage / safe_name(group), probabilities=spec.save_probabilities, step=spec.map_step
            )
            del maps
        text = json.dumps(rows, allow_nan=True)
        atomic_write(stage / ROWS, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=False)
    log.info("case %s: %d rows", case.name, len(rows))
    return rows


def _remove_stale_stages(cases: Path) -> None:
    """Staging folders a killed process left behind (``.<case>.partial-…``): never a finished case's."""
    import shutil

    for stale in cases.glob(".*.partial-*") if cases.is_dir() else ():
        log.info("removing %s, left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _error_rows(case: StudyCase, exc: BaseException) -> list[dict]:
    from ..metrics.cohort import error_row

    return [{"level": "", "group": "", **error_row(case.name, exc)}]


def worker_device(device: str) -> str | None:
    """This Dask worker's own GPU when the workers of a local cluster share several (``cuda:<worker index mod
    GPUs>``), else None (the study's device). Under dask-cuda every worker sees one GPU only: None there too."""
    if device not in ("auto", "cuda"):
        return None
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: the study's own device
        return None
    if n < 2:
        return None
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):  # not inside a worker
        return None
    return f"cuda:{int(name) % n}" if name.isdigit() else None


def _one(case: StudyCase, spec: StudySpec, out: str) -> list[dict]:
    """A task: the case's rows, or its error row when it fails for a reason of its own."""
    try:
        return run_case(case, spec, out, device=worker_device(spec.device))
    except SegUncError as exc:
        log.warning("case %s failed: %s", case.name, exc)
        return _error_rows(case, exc)
    except Exception as exc:  # noqa: BLE001 - any other failure is the case's too: the others go on
        log.warning("case %s failed", case.name, exc_info=True)
        return _error_rows(case, exc)


def run_study(
    spec: StudySpec,
    out: str | Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    retries: int = 2,
    gpus: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> list[dict]:
    """Every case of `spec` (module docstring); returns all rows in the study's case order.

    ``workers=0`` without a `scheduler` runs the cases in this process, one after the other; `gpus` starts one
    worker per GPU (`napari_segunc._dask.dask_client`).
    """
    out = str(Path(out).expanduser())
    _remove_stale_stages(Path(out) / "cases")
    total = len(spec.cases)
    results: dict[int, list[dict]] = {}

    def finished(i: int, rows: list[dict]) -> None:
        results[i] = rows
        if progress is not None:
            progress(Progress(len(results), total, spec.cases[i].name))

    if scheduler is None and workers <= 0:
        for i, case in enumerate(spec.cases):
            finished(i, _one(case, spec, out))
    else:
        from distributed import as_completed

        from .._dask import dask_client

        with dask_client(workers, scheduler, gpus=gpus) as client:
            futures = {
                client.submit(_one, c, spec, out, key=f"study-case-{i}-{c.name}", pure=False, retries=retries): i
                for i, c in enumerate(spec.cases)
            }
            for future in as_completed(futures):
                i = futures[future]
                try:
                    rows = future.result()
                except Exception as exc:  # noqa: BLE001 - a case whose workers kept dying: report it, go on
                    rows = _error_rows(spec.cases[i], exc)
                finished(i, rows)
    return [row for i in range(total) for row in results[i]]
