"""A cohort of cases evaluated in parallel on Dask distributed: ``segunc evaluate-cohort``.

The manifest is a CSV file with one row per case and the columns

- ``case`` (required, unique per group) and ``group`` (e.g. ``model1``, ``rater1-ensemble``, ``ensemble``; default
  ``all``);
- ``probabilities`` (one file) or ``members`` (ensemble members' files separated by ``;``);
- one or more ``rater…`` columns (``rater1``, ``rater2``, … or ``raters`` separated by ``;``); an empty cell is
  skipped, so cases may have different numbers of raters;
- ``image`` (optional; needed for ``--mode curvas`` and for nnU-Net ``.npz`` geometry).

Relative paths are relative to the manifest's folder. Each case is one task: on a `LocalCluster` (one process
per worker, one thread each) by default, or on an existing scheduler (``--scheduler tcp://host:8786``; the
workers must see the same paths). A case that fails is reported in the output as a row with ``metric = error``
and the error in ``reason``; the other cases still finish. Rows come out in manifest order whatever the order in
which the cases finish, so a parallel run writes the same table as a serial one.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import InvalidInput
from ..progress import Progress
from .pipeline import CaseFiles, evaluate_files
from .suite import COLUMNS

__all__ = ["COHORT_COLUMNS", "CohortCase", "error_row", "evaluate_cohort", "read_manifest"]

log = logging.getLogger(__name__)

#: Columns of the cohort results table.
COHORT_COLUMNS = ("case", "group", *COLUMNS[1:])


class CohortCase(NamedTuple):
    """One manifest row: its group and its files."""

    group: str
    files: CaseFiles


def _split(cell: str | None) -> list[str]:
    return [p.strip() for p in (cell or "").split(";") if p.strip()]


def read_manifest(path: str | os.PathLike) -> list[CohortCase]:
    """Parse a cohort manifest (module docstring); paths are resolved against its folder."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"{p}: cannot read the cohort manifest ({exc}).") from None
    rater_cols = [c for c in columns if c.lower().startswith("rater")]
    missing = [c for c in ("case",) if c not in columns]
    if missing or not rater_cols or not ({"probabilities", "members"} & set(columns)):
        raise InvalidInput(
            f"{p}: the manifest needs the columns case, probabilities (or members) and rater1, rater2, … (found "
            f"{columns})."
        )
    base = p.parent

    def resolve(x: str) -> str:
        q = Path(x).expanduser()
        return str(q if q.is_absolute() else base / q)

    cases, seen = [], set()
    for line, row in enumerate(rows, start=2):
        case, group = row.get("case", ""), row.get("group", "") or "all"
        if not case:
            raise InvalidInput(f"{p}, line {line}: the case name is empty.")
        if (case, group) in seen:
            raise InvalidInput(f"{p}, line {line}: case '{case}' appears twice in group '{group}'.")
        seen.add((case, group))
        raters = [resolve(x) for c in rater_cols for x in _split(row.get(c))]
        files = CaseFiles(
            raters=tuple(raters),
            probabilities=resolve(row["probabilities"]) if row.get("probabilities") else None,
            members=tuple(resolve(x) for x in _split(row.get("members"))),
            image=resolve(row["image"]) if row.get("image") else None,
            case=case,
        )
        cases.append(CohortCase(group, files))
    if not cases:
        raise InvalidInput(f"{p}: the manifest lists no case.")
    return cases


def _evaluate_one(group: str, files: CaseFiles, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One task: the case's rows with its group, or one ``error`` row (never raises)."""
    try:
        rows = evaluate_files(files, **options).rows
    except Exception as exc:  # noqa: BLE001 - a failed case is data in the output, the others go on
        log.warning("case %s (%s) failed: %s", files.case, group, exc)
        rows = [error_row(files.case, exc, mode=str(options.get("mode", "native")))]
    return [{"group": group, **row} for row in rows]


def error_row(case: str, exc: BaseException, *, mode: str = "native") -> dict[str, Any]:
    """The one row of a case that failed: ``metric = error``, the exception in ``reason`` (suite columns)."""
    return dict(
        case=case,
        mode=mode,
        organ="",
        label="",
        metric="error",
        rater="",
        value=math.nan,
        unit="",
        reason=f"{type(exc).__name__}: {exc}",
    )


def evaluate_cohort(
    cases: Sequence[CohortCase],
    *,
    labels: Mapping[str, int] | None = None,
    mode: str = "native",
    trust_pickle: bool = False,
    scheduler: str | None = None,
    workers: int = 2,
    progress: Callable[[Progress], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every case; returns the rows of all cases in manifest order (keys `COHORT_COLUMNS`).

    Parameters
    ----------
    cases : sequence of CohortCase
        From `read_manifest`.
    scheduler : str, optional
        Address of a running Dask scheduler. Without it a `LocalCluster` of `workers` processes is started and shut
        down; ``workers=0`` evaluates serially in this process (no Dask).
    progress : callable, optional
        Called with a `Progress` after each finished case.
    """
    options = {"labels": dict(labels) if labels else None, "mode": mode, "trust_pickle": trust_pickle}
    total = len(cases)
    results: dict[int, list[dict[str, Any]]] = {}
    if scheduler is None and workers <= 0:
        for i, c in enumerate(cases):
            results[i] = _evaluate_one(c.group, c.files, options)
            _report(progress, len(results), total, c)
    else:
        for i, rows in _distributed(cases, options, scheduler, workers):
            results[i] = rows
            _report(progress, len(results), total, cases[i])
    return [row for i in range(total) for row in results[i]]


def _report(progress, done: int, total: int, c: CohortCase) -> None:
    if progress is not None:
        progress(Progress(done, total, f"{c.files.case} ({c.group})"))


def _distributed(cases, options, scheduler: str | None, workers: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    from distributed import as_completed

    from .._dask import dask_client

    with dask_client(workers, scheduler) as client:
        futures = {
            client.submit(_evaluate_one, c.group, c.files, options, key=f"case-{i}-{c.files.case}", pure=False): i
            for i, c in enumerate(cases)
        }
        for future in as_completed(futures):
            i = futures[future]
            try:
                rows = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died: report, go on
                c = cases[i]
                rows = [{"group": c.group, **error_row(c.files.case, exc, mode=options["mode"])}]
            yield i, rows
