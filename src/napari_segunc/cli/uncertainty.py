"""``segunc uncertainty`` and ``segunc raters``: uncertainty maps of an ensemble's members, agreement of raters."""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInput
from ..labels import parse_labels
from ._common import add_labels, add_overwrite, add_quiet, add_trust_pickle, check_quantile, print_progress

__all__ = ["add_commands"]


def _cmd_uncertainty(args: argparse.Namespace) -> int:
    from ..io import check_outputs, read_volume, relocate, staged_folder, volume_bytes
    from ..progress import run_job
    from ..uncertainty import pipeline

    specs = pipeline.parse_member_specs(args.member or (), args.group or ())
    check_quantile(args.top_q)
    labels = parse_labels(args.labels)
    groups = ["all", *dict.fromkeys(s.group for s in specs if s.group)]
    names = pipeline.ensemble_output_names(not args.no_class_variance)
    targets = [pipeline.output_folder(args.out, g) / n for g in groups for n in names]
    inputs = [s.path for s in specs] + [args.reference, args.labels]
    check_outputs(targets, inputs=inputs, overwrite=args.overwrite)
    from ..io.probabilities import probability_shape

    shape = probability_shape(specs[0].path)
    if shape:  # per group: the per-class maps (mean, variance) and the scalar maps, as float32
        per_group = shape[0] * (1 if args.no_class_variance else 2) + len(names) - 2
        needed = volume_bytes(shape[1:], n_maps=len(groups) * per_group)
        check_outputs(targets, inputs=inputs, overwrite=args.overwrite, needed_bytes=needed)
    reference = read_volume(args.reference) if args.reference else None
    members = pipeline.file_members(specs, reference=reference, trust_pickle=args.trust_pickle)
    job = pipeline.accumulate(members, renormalize=args.renormalize, class_variance=not args.no_class_variance)
    acc, grid, found = run_job(job, None if args.quiet else print_progress)
    labels = labels or found  # --labels, else a dataset.json beside the members
    done = []
    with staged_folder(args.out, overwrite=args.overwrite) as stage:  # every group's maps, or none
        for group in acc.groups:
            maps = acc.result(group, normalized=args.normalized, consume=True)
            folder = pipeline.output_folder(stage, group)
            pipeline.write_ensemble_outputs(maps, grid, folder, labels=labels, quantile=args.top_q)
            done.append((group, maps.n_members, folder))
    for group, n, folder in done:
        print(f"{group:12s} {n} member(s) → {relocate([folder], stage, args.out)[0]}")
    return 0


def _cmd_raters(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ..io import check_outputs, read_volume, volume_bytes
    from ..uncertainty import analyze_raters
    from ..uncertainty.pipeline import RATER_OUTPUT_NAMES, write_rater_outputs

    if len(args.raters) < 2:
        raise InvalidInput(f"{args.raters[0]} is the only rater given; at least 2 raters are needed (add the others).")
    for i, a in enumerate(args.raters):
        if a in args.raters[:i]:
            raise InvalidInput(f"{a} is given twice; each rater's label map counts once.")
    labels = parse_labels(args.labels)
    targets = [Path(args.out) / f"{n}.nii.gz" for n in RATER_OUTPUT_NAMES] + [Path(args.out) / "agreement.csv"]
    check_outputs(targets, inputs=[*args.raters, args.labels], overwrite=args.overwrite)
    raters = [read_volume(p, kind="labels") for p in args.raters]
    empty = [p for p, r in zip(args.raters, raters, strict=True) if not r.data.any()]
    if len(empty) == len(raters):
        raise InvalidInput(f"Every rater's label map is empty (only background), e.g. {empty[0]}; check the files.")
    for p in empty:
        print(f"segunc raters: warning: {p} is empty (only background)", file=sys.stderr)
    n_classes = len(set().union(*(np.unique(r.data).tolist() for r in raters)) | {0})
    needed = volume_bytes(raters[0].shape, n_maps=2 * n_classes + 1)  # soft labels, variance, vote entropy
    check_outputs(targets, inputs=[*args.raters, args.labels], overwrite=args.overwrite, needed_bytes=needed)
    analysis = analyze_raters(raters, labels=labels, normalized=args.normalized, staple=not args.no_staple)
    write_rater_outputs(analysis, raters[0], args.out, overwrite=args.overwrite)
    for row in analysis.agreement_rows():
        if row["kind"] == "fleiss_kappa":
            print(f"{row['name']:24s} Fleiss' kappa {row['value']:.3f}")
    for label, raters_missing in analysis.missing_labels.items():
        print(f"label {label} is missing in {', '.join(raters_missing)}", file=sys.stderr)
    print(f"{analysis.n_raters} raters → {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``uncertainty`` and ``raters`` to the ``segunc`` subparsers."""
    p = sub.add_parser("uncertainty", help="uncertainty maps from members' class probabilities")
    p.add_argument("--member", action="append", metavar="P", help="member probabilities (.npz or 4D .nii.gz)")
    p.add_argument("--group", action="append", metavar="NAME:P", help="member in a named group (repeatable)")
    p.add_argument("--reference", metavar="IMAGE", help="image the probabilities belong to (geometry of outputs)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a sub-folder per group)")
    p.add_argument("--normalized", action="store_true", help="divide entropies and MI by ln C (range 0..1)")
    p.add_argument("--renormalize", action="store_true", help="rescale probabilities that do not sum to 1")
    p.add_argument(
        "--no-class-variance",
        action="store_true",
        help="skip the per-class variance (variance.nii.gz); saves 0.75 member of memory",
    )
    add_labels(p, "name=value,… or a labels.json, to name structures in regions.csv")
    p.add_argument("--top-q", type=float, default=0.99, help="review regions: voxels above this entropy quantile")
    add_trust_pickle(p)
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=_cmd_uncertainty)

    p = sub.add_parser("raters", help="agreement and disagreement maps of raters' label maps")
    p.add_argument("raters", nargs="+", metavar="R", help="label maps of the same image (2 or more)")
    add_labels(p, "name=value,… or a labels.json, to name the classes")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--normalized", action="store_true", help="divide the vote entropy by ln C (range 0..1)")
    p.add_argument("--no-staple", action="store_true", help="skip SimpleITK STAPLE (the slowest part)")
    add_overwrite(p)
    p.set_defaults(func=_cmd_raters)
