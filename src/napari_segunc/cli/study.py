"""``segunc study``: seed 000's whole study in one resumable command (`napari_segunc.study`)."""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInput
from ._common import add_dask_options, add_quiet, print_progress

__all__ = ["add_commands"]


def _cmd_study(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io import check_outputs, write_csv
    from ..study import STUDY_COLUMNS, read_study, run_study, table1_markdown, write_summary
    from ..study.table1 import table1

    out = Path(args.out).expanduser()
    if args.demo:
        if args.study:
            raise InvalidInput("Give a study file or --demo N, not both.")
        from ..study.demo import write_demo_study

        path = out / "demo_inputs" / "study.yaml"
        if not path.exists():
            write_demo_study(path.parent, cases=args.demo)
        args.study = str(path)
    if not args.study:
        raise InvalidInput("Give the study file (STUDY.yaml), or --demo N for the phantom demo study.")
    spec = read_study(args.study)
    inputs = [spec.path, *(f for c in spec.cases for f in (c.image, *c.raters))]
    check_outputs([out / "results.csv"], inputs=inputs, overwrite=True)  # derived from the committed cases
    print(
        f"{len(spec.cases)} case(s) × {len(spec.members)} member(s) in {len(spec.groups)} group(s) "
        f"({', '.join(spec.groups) or 'none'}) → {out}",
        file=sys.stderr,
    )
    workers = args.workers
    if args.gpus:
        workers = _gpu_count()
    rows = run_study(
        spec,
        out,
        workers=workers,
        scheduler=args.scheduler,
        gpus=args.gpus,
        progress=None if args.quiet else print_progress,
    )
    results = write_csv(rows, out / "results.csv", columns=list(STUDY_COLUMNS), overwrite=True)
    written = write_summary(rows, out, dice_threshold=args.dice_threshold)
    print(table1_markdown(table1(rows)), end="")
    failed = [r for r in rows if r["metric"] == "error"]
    for r in failed:
        print(f"case {r['case']} failed: {r['reason']}", file=sys.stderr)
    print(f"{len(spec.cases) - len(failed)}/{len(spec.cases)} cases, {len(rows)} rows → {results}")
    for path in written:
        print(f"→ {path}")
    return 1 if failed else 0


def _gpu_count() -> int:
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - a broken CUDA install counts as none
        n = 0
    if n == 0:
        raise InvalidInput("--gpus: no CUDA GPU is visible here; run without --gpus (CPU workers) or on a GPU node.")
    return n


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``study`` to the ``segunc`` subparsers."""
    p = sub.add_parser("study", help="a cohort × ensemble study, resumable, on Dask")
    p.add_argument("study", nargs="?", help="the study file (YAML/JSON: cases, members, groups)")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (a rerun skips finished cases)")
    p.add_argument("--demo", type=int, metavar="N", help="a phantom cohort of N cases with the demo ensemble")
    add_dask_options(p, workers_default=1, workers_help="LocalCluster worker processes (0: serial, no Dask)")
    p.add_argument("--gpus", action="store_true", help="one worker per GPU (dask-cuda when installed)")
    p.add_argument("--dice-threshold", type=float, default=0.8, help="case-level QC: a case fails below this Dice")
    add_quiet(p)
    p.set_defaults(func=_cmd_study)
