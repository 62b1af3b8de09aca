"""``segunc evaluate``, ``evaluate-cohort``, ``stats``, ``qc`` and ``compare``: metrics of cases, cohorts, groups."""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInput
from ..labels import parse_labels
from ._common import (
    add_dask_options,
    add_labels,
    add_overwrite,
    add_quiet,
    add_trust_pickle,
    check_table_suffix,
    print_progress,
)

__all__ = ["add_commands"]

_HEADLINE = ("dice_consensus", "hd95", "crps_volume", "confidence", "ece", "ace", "auroc", "aurc", "eaurc")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io import check_outputs
    from ..metrics.pipeline import CaseFiles, evaluate_files, write_plots, write_table

    files = CaseFiles(
        raters=tuple(args.rater or ()),
        probabilities=args.probabilities,
        members=tuple(args.member or ()),
        image=args.image,
        case=args.case,
    )
    if args.plots and args.mode != "native":
        raise InvalidInput("--plots needs --mode native (the curvas mode keeps no reliability data).")
    check_table_suffix(args.out)
    labels = parse_labels(args.labels)
    inputs = [*files.raters, files.probabilities, *files.members, files.image, args.labels]
    targets = [Path(args.out)]
    if args.plots:
        targets += [Path(args.plots) / f"{args.case}_{n}.png" for n in ("reliability", "risk_coverage")]
    check_outputs(targets, inputs=inputs, overwrite=args.overwrite)
    evaluation = evaluate_files(files, labels=labels, mode=args.mode, trust_pickle=args.trust_pickle)
    out = write_table(evaluation.rows, args.out, overwrite=args.overwrite)
    for row in evaluation.rows:
        if row["rater"] in ("mean", "consensus", "pooled") and row["metric"] in _HEADLINE:
            value = "NaN (" + str(row["reason"]) + ")" if row["value"] != row["value"] else f"{row['value']:.4f}"
            print(f"{row['organ']:16s} {row['metric']:16s} {row['rater']:10s} {value} {row['unit']}")
    print(f"{len(evaluation.rows)} rows → {out}")
    if args.plots:
        for path in write_plots(evaluation, args.plots, overwrite=args.overwrite):
            print(f"plot → {path}")
    return 0


def _cmd_evaluate_cohort(args: argparse.Namespace) -> int:
    from ..io import check_outputs
    from ..metrics.cohort import COHORT_COLUMNS, evaluate_cohort, read_manifest
    from ..metrics.pipeline import write_table

    check_table_suffix(args.out)
    labels = parse_labels(args.labels)
    check_outputs([args.out], inputs=[args.manifest, args.labels], overwrite=args.overwrite)
    cases = read_manifest(args.manifest)
    inputs = [args.manifest]
    for c in cases:
        inputs += [*c.files.raters, c.files.probabilities, *c.files.members, c.files.image]
    check_outputs([args.out], inputs=inputs, overwrite=args.overwrite)
    rows = evaluate_cohort(
        cases,
        labels=labels,
        mode=args.mode,
        trust_pickle=args.trust_pickle,
        scheduler=args.scheduler,
        workers=args.workers,
        progress=None if args.quiet else print_progress,
    )
    out = write_table([{c: r.get(c) for c in COHORT_COLUMNS} for r in rows], args.out, overwrite=args.overwrite)
    failed = [r for r in rows if r["metric"] == "error"]
    for r in failed:
        print(f"case {r['case']} ({r['group']}) failed: {r['reason']}", file=sys.stderr)
    print(f"{len(cases) - len(failed)}/{len(cases)} cases evaluated, {len(rows)} rows → {out}")
    return 1 if failed else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io import check_outputs
    from ..metrics.compare import read_results, write_comparison

    check_outputs([Path(args.out) / "mannwhitney.csv"], inputs=[args.results], overwrite=True)  # the folder
    rows = read_results(args.results)
    groups = sorted({str(r.get(args.group_column, "")) for r in rows} - {""})
    if len(groups) < 2:
        raise InvalidInput(
            f"{args.results} holds {len(groups)} group(s) in its column '{args.group_column}' ({', '.join(groups)}); "
            "a comparison needs 2 or more (or choose another --group-column)."
        )
    written = write_comparison(rows, args.metric, args.out, group_column=args.group_column, overwrite=args.overwrite)
    for path in written:
        print(f"→ {path}")
    return 0


def _cmd_qc(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io import check_outputs
    from ..io.writers import write_csv
    from ..metrics.case_qc import SCORES, cohort_cases, failure_detection
    from ..metrics.compare import read_results
    from ..metrics.plots import plot_case_risk_coverage

    out = Path(args.out)
    files = [out / "qc.csv", out / "qc_cases.csv", out / "qc_risk_coverage.png"]
    check_outputs(files, inputs=[args.results], overwrite=args.overwrite)
    groups = cohort_cases(read_results(args.results), group_column=args.group_column)
    found = [s for s in SCORES if any(s in c for cases in groups.values() for c in cases.values())]
    if not found:
        raise InvalidInput(
            f"{args.results} has no case-level QC rows (qc_…): evaluate the cases with this version "
            "(segunc evaluate-cohort) first."
        )
    table, per_case, curves = [], [], {}
    for group, cases in groups.items():
        names = sorted(cases)
        dice = [cases[c]["dice"] for c in names]
        scores = {s: [cases[c].get(s, float("nan")) for c in names] for s in found}
        usable = {s: v for s, v in scores.items() if any(x == x for x in v)}
        for fd in failure_detection(usable, dice, threshold=args.dice_threshold):
            table.append({"group": group, **fd.row()})
            curves[f"{group}: {fd.score}" if len(groups) > 1 else fd.score] = fd
        per_case += [{"group": group, "case": c, **cases[c]} for c in names]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, files[0], columns=list(table[0]), overwrite=args.overwrite)
    write_csv(per_case, files[1], columns=["group", "case", "dice", *found], overwrite=args.overwrite)
    plot_case_risk_coverage(curves, files[2], overwrite=args.overwrite)
    for r in table:
        print(
            f"{r['group']:<12} {r['score']:<26} AURC {r['aurc']:.4f}  E-AURC {r['eaurc']:.4f}  AUROC "
            f"{r['auroc']:.3f}  ({r['failures']}/{r['cases']} cases with Dice < {r['dice_threshold']:g})"
        )
    for path in files:
        print(f"→ {path}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import check_outputs, read_probabilities, read_volume
    from ..metrics.pipeline import write_table
    from ..metrics.stats import organ_statistics
    from ..volume import check_same_grid

    check_table_suffix(args.out)
    organs = parse_labels(args.labels)
    inputs = [args.image, args.labels_map, args.probabilities, *(args.member or ()), *(args.rater or ())]
    check_outputs([args.out], inputs=inputs, overwrite=args.overwrite)
    image = read_volume(args.image)
    labels = read_volume(args.labels_map, kind="labels")
    check_same_grid(image, labels)
    organs = organs or {f"label_{v}": int(v) for v in np.unique(labels.data) if v != 0}
    raters = []
    for path in args.rater or ():
        rater = read_volume(path, kind="labels")
        check_same_grid(image, rater)
        raters.append(rater.data)
    probs = read_probabilities(args.probabilities, reference=image).data if args.probabilities else None
    members = [read_probabilities(m, reference=image).data for m in args.member or ()]
    stats = organ_statistics(
        labels.data, image.spacing, organs, image=image.data, probabilities=probs, members=members, raters=raters
    )
    if not stats:
        raise InvalidInput(f"{args.labels_map} holds none of the organs {sorted(organs)}: no statistics.")
    rows = [s.row() for s in stats]
    out = write_table(rows, args.out, overwrite=args.overwrite, columns=list(rows[0]))
    for r in rows:
        spread = f", members {r['member_volume_min_ml']:.1f}–{r['member_volume_max_ml']:.1f} ml" if r["members"] else ""
        print(
            f"{r['organ']:20s} {r['volume_ml']:8.1f} ml{spread}, {r['mean']:.0f} ± {r['std']:.0f}, "
            f"long axis {r['long_axis_mm']:.1f} mm × {r['short_axis_mm']:.1f} mm (slice {r['long_axis_slice']})"
        )
    print(f"{len(rows)} organ(s) → {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate``, ``evaluate-cohort`` and ``compare`` to the ``segunc`` subparsers."""
    p = sub.add_parser("evaluate", help="accuracy, calibration, uncertainty metrics of one case")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--probabilities", metavar="P", help="class probabilities (.npz or 4D .nii.gz)")
    src.add_argument("--member", action="append", metavar="P", help="an ensemble member's probabilities (repeat)")
    p.add_argument("--rater", action="append", required=True, metavar="R", help="a rater's label map (repeat)")
    p.add_argument("--image", metavar="IMAGE", help="the CT: grid of .npz files; curvas mode crops to CT > 0")
    add_labels(p, "organs as name=value,… or a labels.json (channel order = increasing value)")
    p.add_argument(
        "--mode",
        choices=("native", "curvas"),
        default="native",
        help="native definitions (default) or the official CURVAS 2024 code's numbers",
    )
    p.add_argument("--case", default="case", help="case name written in the table (default 'case')")
    p.add_argument("--out", required=True, metavar="FILE", help="results table, .csv or .json")
    p.add_argument("--plots", metavar="DIR", help="write a reliability diagram and a risk–coverage curve (PNG)")
    add_trust_pickle(p)
    add_overwrite(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("evaluate-cohort", help="evaluate every case of a manifest CSV in parallel")
    p.add_argument("manifest", help="CSV with columns case, group, probabilities (or members), rater1, rater2, …")
    p.add_argument("--out", required=True, metavar="FILE", help="results table, .csv or .json")
    add_labels(p, "organs as name=value,… or a labels.json")
    p.add_argument("--mode", choices=("native", "curvas"), default="native")
    add_dask_options(p, workers_default=2, workers_help="LocalCluster worker processes (0: serial, no Dask)")
    add_trust_pickle(p)
    add_overwrite(p, "replace an existing results file")
    add_quiet(p)
    p.set_defaults(func=_cmd_evaluate_cohort)

    p = sub.add_parser("stats", help="organ volumes, HU, RECIST diameters, volume spread")
    p.add_argument("image", help="the image (its HU for the mean and std)")
    p.add_argument("labels_map", help="the label map (e.g. the reviewed labels)")
    add_labels(p, "organ names and values (name=value,…, a labels.json or a table name)")
    p.add_argument("--probabilities", metavar="P", help="mean class probabilities: the soft volume Σp")
    p.add_argument("--member", action="append", metavar="P", help="a member's probabilities (repeat): their spread")
    p.add_argument("--rater", action="append", metavar="R", help="a rater's label map (repeat): their volumes")
    p.add_argument("--out", required=True, metavar="FILE", help="stats .csv or .json")
    add_overwrite(p)
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("qc", help="which case-level scores find the failed cases")
    p.add_argument("results", help="results CSV of evaluate-cohort (its qc_… rows)")
    p.add_argument("--dice-threshold", type=float, default=0.8, help="a case fails below this Dice (0.8)")
    p.add_argument("--group-column", default="group", help="column holding the group (default 'group')")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for qc.csv, qc_cases.csv and the curves")
    add_overwrite(p)
    p.set_defaults(func=_cmd_qc)

    p = sub.add_parser("compare", help="Mann–Whitney U tests between groups, with violin plots")
    p.add_argument("results", help="results CSV of evaluate-cohort")
    p.add_argument("--metric", required=True, help="metric to compare (e.g. ece, dice_consensus, hd95)")
    p.add_argument("--group-column", default="group", help="column holding the group (default 'group')")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the table and the plots")
    add_overwrite(p)
    p.set_defaults(func=_cmd_compare)
