"""The ``segunc`` command line. Headless: it never imports Qt or napari (``segunc demo`` loads them lazily).

Every user error ends with one sentence on stderr naming the file and the problem, and exit code 2; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import InvalidInput, SegUncError

__all__ = ["build_parser", "main"]

log = logging.getLogger("napari_segunc")


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from .io import read_volume

    vol = read_volume(args.path, series_id=args.series_id)
    src = vol.source
    data = vol.data
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    info: dict[str, Any] = {
        "path": src.path,
        "format": src.format.value,
        "size": list(src.size),
        "spacing": list(src.spacing),
        "origin": list(src.origin),
        "direction": list(src.direction),
        "orientation": src.orientation,
        "dtype": str(data.dtype),
        "kind": vol.kind.value,
        "modality": vol.modality.value,
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "canonical_shape_zyx": list(vol.shape),
        "canonical_origin_zyx": list(vol.origin),
    }
    if src.series_id:
        info["series_id"] = src.series_id
    if vol.kind.value == "labels":
        info["labels"] = [int(v) for v in np.unique(data) if v != 0]
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    fmt3 = lambda v: " × ".join(f"{x:g}" for x in v)  # noqa: E731
    d = src.direction
    lines = [
        f"path         {src.path}",
        f"format       {src.format.value}" + (f" (series {src.series_id})" if src.series_id else ""),
        f"size         {fmt3(src.size)} voxels (x, y, z)",
        f"spacing      {fmt3(src.spacing)} mm",
        f"origin       ({', '.join(f'{x:.4f}' for x in src.origin)}) mm (LPS, ITK convention)",
        "direction    " + "  ".join("[" + " ".join(f"{d[3 * r + c]:+.4f}" for c in range(3)) + "]" for r in range(3)),
        f"orientation  {src.orientation} (index axes i, j, k point to these patient directions)",
        f"dtype        {data.dtype} ({vol.kind.value}, modality {vol.modality.value})",
        f"value range  {info['min']:g} .. {info['max']:g}" if finite.size else "value range  (no finite values)",
    ]
    if "labels" in info:
        lines.append(f"labels       {info['labels']}")
    print("\n".join(lines))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .io import check_outputs, output_format, read_volume, volume_bytes, write_volume

    output_format(args.output)  # an unsupported suffix is refused before reading
    check_outputs([args.output], inputs=[args.input], overwrite=args.overwrite, option="output file")
    vol = read_volume(args.input, series_id=args.series_id)
    itemsize = vol.data.dtype.itemsize
    needed = volume_bytes(vol.shape, itemsize=itemsize, compressed=args.output.endswith(".gz"))
    check_outputs([args.output], inputs=[args.input], overwrite=args.overwrite, needed_bytes=needed, option="output")
    out = write_volume(vol, args.output, overwrite=args.overwrite)
    print(f"wrote {out} ({vol.source.orientation} orientation, spacing {vol.source.spacing} mm, as the source)")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .io import check_outputs
    from .phantom import make_phantom, write_phantom

    if not 1 <= args.raters <= 20:
        raise InvalidInput(f"--raters must be between 1 and 20, got {args.raters}.")
    out = Path(args.out_dir)
    names = ["image", "truth", *(f"rater_{i}" for i in range(1, args.raters + 1))]
    targets = [out / f"{n}.nii.gz" for n in names] + [out / "labels.json"]
    check_outputs(targets, overwrite=args.overwrite, option="output folder")
    study = make_phantom(seed=args.seed, n_raters=args.raters)
    paths = write_phantom(study, args.out_dir, overwrite=args.overwrite)
    for name, path in paths.items():
        print(f"{name:10s} {path}")
    return 0


def parse_labels(text: str | None) -> dict[str, int] | None:
    """``name=value,name=value`` or the path of a JSON file ``{"liver": 1, ...}`` (e.g. a phantom's labels.json)."""
    if not text:
        return None
    from pathlib import Path

    if text.endswith(".json") or Path(text).is_file():
        try:
            mapping = json.loads(Path(text).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"{text} is not a readable JSON labels file ({exc}).") from None
        if not isinstance(mapping, dict):
            raise InvalidInput(
                f'{text} must hold one JSON object of organ names and label values, e.g. {{"liver": 1}}; it holds '
                f"a {type(mapping).__name__}."
            )
        bad = [k for k, v in mapping.items() if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise InvalidInput(
                f"{text}: the label value of '{bad[0]}' is {mapping[bad[0]]!r}; label values must be whole numbers "
                '(e.g. "liver": 1).'
            )
        return _checked_labels({str(k): v for k, v in mapping.items()}, text)
    labels = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise InvalidInput(
                f"--labels expects name=value pairs separated by commas (liver=1,spleen=4), got '{item}'."
            )
        if name.strip() in labels:
            raise InvalidInput(f"--labels names '{name.strip()}' twice; give each organ once.")
        labels[name.strip()] = int(value)
    return _checked_labels(labels, "--labels")


def _checked_labels(labels: dict[str, int], where: str) -> dict[str, int]:
    """Refuse empty names, negative values and two organs on one value; background (0) is dropped if listed."""
    for name, value in labels.items():
        if not name.strip():
            raise InvalidInput(f"{where}: an organ name is empty (in '={value}'); give every label a name.")
        if value < 0:
            raise InvalidInput(f"{where}: '{name}' has the negative label value {value}; label values are ≥ 0.")
    by_value: dict[int, str] = {}
    for name, value in labels.items():
        if value in by_value and value != 0:
            raise InvalidInput(f"{where}: '{by_value[value]}' and '{name}' both have the label value {value}.")
        by_value[value] = name
    return labels


def _print_progress(report) -> None:
    width = 30
    filled = int(width * report.fraction)
    end = "\n" if report.step >= report.total or not sys.stderr.isatty() else "\r"
    print(f"[{'#' * filled}{'.' * (width - filled)}] {report.step}/{report.total} {report.message}",
          file=sys.stderr, end=end, flush=True)  # fmt: skip


def _cmd_uncertainty(args: argparse.Namespace) -> int:
    from .io import check_outputs, read_volume, relocate, staged_folder, volume_bytes
    from .progress import run_job
    from .uncertainty import pipeline

    specs = pipeline.parse_member_specs(args.member or (), args.group or ())
    _check_quantile(args.top_q)
    labels = parse_labels(args.labels)
    groups = ["all", *dict.fromkeys(s.group for s in specs if s.group)]
    names = pipeline.ensemble_output_names(not args.no_class_variance)
    targets = [pipeline.output_folder(args.out, g) / n for g in groups for n in names]
    inputs = [s.path for s in specs] + [args.reference, args.labels]
    check_outputs(targets, inputs=inputs, overwrite=args.overwrite)
    from .io.probabilities import probability_shape

    shape = probability_shape(specs[0].path)
    if shape:  # per group: the per-class maps (mean, variance) and the scalar maps, as float32
        per_group = shape[0] * (1 if args.no_class_variance else 2) + len(names) - 2
        needed = volume_bytes(shape[1:], n_maps=len(groups) * per_group)
        check_outputs(targets, inputs=inputs, overwrite=args.overwrite, needed_bytes=needed)
    reference = read_volume(args.reference) if args.reference else None
    job = pipeline.ensemble_job(
        specs, reference=reference, trust_pickle=args.trust_pickle, renormalize=args.renormalize,
        class_variance=not args.no_class_variance,
    )  # fmt: skip
    acc, grid = run_job(job, None if args.quiet else _print_progress)
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


def _check_quantile(q: float) -> None:
    if not 0 < q < 1:
        raise InvalidInput(f"--top-q must lie strictly between 0 and 1 (e.g. 0.99), got {q:g}.")


def _cmd_raters(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from .io import check_outputs, read_volume, volume_bytes
    from .uncertainty import analyze_raters
    from .uncertainty.pipeline import RATER_OUTPUT_NAMES, write_rater_outputs

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


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .io import check_outputs
    from .metrics.pipeline import CaseFiles, evaluate_files, write_plots, write_table

    files = CaseFiles(
        raters=tuple(args.rater or ()), probabilities=args.probabilities, members=tuple(args.member or ()),
        image=args.image, case=args.case,
    )  # fmt: skip
    if args.plots and args.mode != "native":
        raise InvalidInput("--plots needs --mode native (the curvas mode keeps no reliability data).")
    _check_table_suffix(args.out)
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


def _check_table_suffix(out: str) -> None:
    if not str(out).lower().endswith((".csv", ".json")):
        raise InvalidInput(f"{out}: the results file must end in .csv or .json.")


_HEADLINE = ("dice_consensus", "hd95", "crps_volume", "confidence", "ece", "ace", "auroc", "aurc", "eaurc")


def _cmd_evaluate_cohort(args: argparse.Namespace) -> int:
    from .io import check_outputs
    from .metrics.cohort import COHORT_COLUMNS, evaluate_cohort, read_manifest
    from .metrics.pipeline import write_table

    _check_table_suffix(args.out)
    labels = parse_labels(args.labels)
    check_outputs([args.out], inputs=[args.manifest, args.labels], overwrite=args.overwrite)
    cases = read_manifest(args.manifest)
    inputs = [args.manifest]
    for c in cases:
        inputs += [*c.files.raters, c.files.probabilities, *c.files.members, c.files.image]
    check_outputs([args.out], inputs=inputs, overwrite=args.overwrite)
    rows = evaluate_cohort(
        cases, labels=labels, mode=args.mode, trust_pickle=args.trust_pickle,
        scheduler=args.scheduler, workers=args.workers, progress=None if args.quiet else _print_progress,
    )  # fmt: skip
    out = write_table([{c: r.get(c) for c in COHORT_COLUMNS} for r in rows], args.out, overwrite=args.overwrite)
    failed = [r for r in rows if r["metric"] == "error"]
    for r in failed:
        print(f"case {r['case']} ({r['group']}) failed: {r['reason']}", file=sys.stderr)
    print(f"{len(cases) - len(failed)}/{len(cases)} cases evaluated, {len(rows)} rows → {out}")
    return 1 if failed else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .io import check_outputs
    from .metrics.compare import read_results, write_comparison

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


def _cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .inference.input_qc import check_input
    from .inference.nnunet import discover_members, predict_job, read_ensemble_file
    from .io import check_outputs, read_volume, relocate, staged_folder, volume_bytes
    from .io.writers import atomic_write
    from .progress import run_job
    from .uncertainty.pipeline import ensemble_output_names, output_folder, write_ensemble_outputs

    if args.mc_dropout and args.tta:
        raise InvalidInput("Use either test-time flips (--tta) or MC dropout (--mc-dropout) as the source, not both.")
    if args.ensemble:
        members = read_ensemble_file(args.ensemble)
    elif args.model:
        members = discover_members(args.model, folds=args.folds, checkpoint=args.checkpoint)
    else:
        from .inference.demo_models import demo_ensemble_file

        members = read_ensemble_file(demo_ensemble_file())
    source = "tta" if args.tta else "mc_dropout" if args.mc_dropout else None  # nnunet.TTA_GROUP, MC_GROUP
    groups = ["all", source] if source else ["all", *dict.fromkeys(m.group for m in members if m.group)]
    names = ensemble_output_names(not args.no_class_variance)
    targets = [output_folder(args.out, g) / n for g in groups for n in names] + [Path(args.out) / "qc.json"]
    inputs = [args.image, args.ensemble, *(m.model_dir for m in members)]
    check_outputs(targets, inputs=inputs, overwrite=args.overwrite)
    image = read_volume(args.image)
    n_classes = len(_labels_of(members[0].model_dir) or {}) + 1
    maps_per_group = n_classes * (1 if args.no_class_variance else 2) + len(names) - 2  # per-class maps are 4D
    needed = volume_bytes(image.shape, n_maps=len(groups) * maps_per_group)
    check_outputs(targets, inputs=inputs, overwrite=args.overwrite, needed_bytes=needed)
    qc = check_input(image, [m.model_dir for m in members])  # input check against the training data: warnings only
    for warning in qc.warnings:
        print(f"segunc predict: warning: {warning}", file=sys.stderr, flush=True)
    job = predict_job(
        image, members, device=args.device, tta=args.tta, trust_checkpoint=args.trust_checkpoint,
        class_variance=not args.no_class_variance, mc_dropout=args.mc_dropout,
    )  # fmt: skip
    acc, grid = run_job(job, None if args.quiet else _print_progress)
    labels = _labels_of(members[0].model_dir)
    done = []
    with staged_folder(args.out, overwrite=args.overwrite) as stage:  # every group's maps and qc.json, or nothing
        for group in acc.groups:
            maps = acc.result(group, normalized=args.normalized, consume=True)
            folder = output_folder(stage, group)
            write_ensemble_outputs(maps, grid, folder, labels=labels)
            done.append((group, maps.n_members, folder))
        qc_text = qc.to_json()
        atomic_write(stage / "qc.json", lambda tmp: tmp.write_text(qc_text, encoding="utf-8"), overwrite=False)
    for group, n, folder in done:
        print(f"{group:12s} {n} member(s) → {relocate([folder], stage, args.out)[0]}")
    qc_path = Path(args.out).expanduser() / "qc.json"
    print(f"{'input check':12s} {'ok' if qc.ok else f'{len(qc.warnings)} warning(s)'} → {qc_path}")
    return 0


def _labels_of(model_dir: str) -> dict[str, int] | None:
    from pathlib import Path

    try:
        labels = json.loads((Path(model_dir) / "dataset.json").read_text())["labels"]
        return {str(k): int(v) for k, v in labels.items() if isinstance(v, int) and v != 0}
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out_dir=args.out_dir, screenshot=args.screenshot, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    from .cli_prompts import add_prompt_commands

    """The ``segunc`` argument parser (sub-commands: info, convert, phantom, uncertainty, raters, demo)."""
    parser = argparse.ArgumentParser(
        prog="segunc",
        description="Review medical image segmentation with its uncertainty (napari-segunc).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is read and written")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="size, spacing, origin, direction, orientation and values of an image")
    p.add_argument("path", help="NIfTI / NRRD / MHA / MHD file or DICOM folder")
    p.add_argument("--series-id", help="DICOM SeriesInstanceUID when the folder holds several series")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="convert between formats, keeping the geometry exactly")
    p.add_argument("input", help="image file or DICOM folder")
    p.add_argument("output", help="target file; its suffix picks the format (.nii.gz, .nrrd, .mha, .mhd, .nii)")
    p.add_argument("--series-id", help="DICOM SeriesInstanceUID when the folder holds several series")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("phantom", help="write the synthetic abdominal CT study with simulated raters")
    p.add_argument("out_dir", help="folder to write image.nii.gz, truth.nii.gz, rater_K.nii.gz, labels.json")
    p.add_argument("--seed", type=int, default=0, help="anatomy and rater seed (same seed, same bytes)")
    p.add_argument("--raters", type=int, default=3, help="number of simulated raters (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in OUT_DIR")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("uncertainty", help="ensemble uncertainty maps from members' class probabilities")
    p.add_argument("--member", action="append", metavar="P", help="member probabilities (.npz or 4D .nii.gz)")
    p.add_argument("--group", action="append", metavar="NAME:P", help="member in a named group (repeatable)")
    p.add_argument("--reference", metavar="IMAGE", help="image the probabilities belong to (geometry of outputs)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a sub-folder per group)")
    p.add_argument("--normalized", action="store_true", help="divide entropies and MI by ln C (range 0..1)")
    p.add_argument("--renormalize", action="store_true", help="rescale probabilities that do not sum to 1")
    p.add_argument("--no-class-variance", action="store_true",
                   help="skip the per-class variance (variance.nii.gz); saves 0.75 member of memory")  # fmt: skip
    p.add_argument("--labels", help="name=value,… or a labels.json, to name structures in regions.csv")
    p.add_argument("--top-q", type=float, default=0.99, help="review regions: voxels above this entropy quantile")
    p.add_argument("--trust-pickle", action="store_true", help="read nnU-Net .pkl geometry (unpickling runs code)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_uncertainty)

    p = sub.add_parser("raters", help="agreement and disagreement maps of several raters' label maps")
    p.add_argument("raters", nargs="+", metavar="R", help="label maps of the same image (2 or more)")
    p.add_argument("--labels", help="name=value,… or a labels.json, to name the classes")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--normalized", action="store_true", help="divide the vote entropy by ln C (range 0..1)")
    p.add_argument("--no-staple", action="store_true", help="skip SimpleITK STAPLE (the slowest part)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_raters)

    p = sub.add_parser("evaluate", help="accuracy, calibration and uncertainty metrics of one case against raters")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--probabilities", metavar="P", help="class probabilities (.npz or 4D .nii.gz)")
    src.add_argument("--member", action="append", metavar="P", help="an ensemble member's probabilities (repeat)")
    p.add_argument("--rater", action="append", required=True, metavar="R", help="a rater's label map (repeat)")
    p.add_argument("--image", metavar="IMAGE", help="the CT: grid of .npz files; curvas mode crops to CT > 0")
    p.add_argument("--labels", help="organs as name=value,… or a labels.json (channel order = increasing value)")
    p.add_argument("--mode", choices=("native", "curvas"), default="native",
                   help="native definitions (default) or the official CURVAS 2024 code's numbers")  # fmt: skip
    p.add_argument("--case", default="case", help="case name written in the table (default 'case')")
    p.add_argument("--out", required=True, metavar="FILE", help="results table, .csv or .json")
    p.add_argument("--plots", metavar="DIR", help="write a reliability diagram and a risk–coverage curve (PNG)")
    p.add_argument("--trust-pickle", action="store_true", help="read nnU-Net .pkl geometry (unpickling runs code)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("evaluate-cohort", help="evaluate every case of a manifest CSV in parallel (Dask)")
    p.add_argument("manifest", help="CSV with columns case, group, probabilities (or members), rater1, rater2, …")
    p.add_argument("--out", required=True, metavar="FILE", help="results table, .csv or .json")
    p.add_argument("--labels", help="organs as name=value,… or a labels.json")
    p.add_argument("--mode", choices=("native", "curvas"), default="native")
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (0: serial, no Dask)")
    p.add_argument("--trust-pickle", action="store_true", help="read nnU-Net .pkl geometry (unpickling runs code)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate_cohort)

    p = sub.add_parser("compare", help="one-sided Mann–Whitney U tests between groups, with violin plots")
    p.add_argument("results", help="results CSV of evaluate-cohort")
    p.add_argument("--metric", required=True, help="metric to compare (e.g. ece, dice_consensus, hd95)")
    p.add_argument("--group-column", default="group", help="column holding the group (default 'group')")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the table and the plots")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("predict", help="run an nnU-Net v2 ensemble on an image: probabilities and uncertainty maps")
    p.add_argument("image", help="the image (NIfTI, NRRD, MHA or a DICOM folder)")
    p.add_argument("--model", action="append", metavar="DIR", help="an nnU-Net trained-model folder (repeat)")
    p.add_argument("--ensemble", metavar="FILE", help="JSON/YAML file naming members and groups")
    p.add_argument("--folds", nargs="+", help="folds to use (default: every fold found)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name in each fold")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--tta", choices=("flips",), help="test-time augmentation: every axis-flip combination")
    p.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                   help="N dropout samples per member (only for networks with dropout layers)")  # fmt: skip
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of checkpoints that need it (can run code)")  # fmt: skip
    p.add_argument("--normalized", action="store_true", help="divide entropies and MI by ln C (range 0..1)")
    p.add_argument("--no-class-variance", action="store_true", help="skip the per-class variance map")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a sub-folder per group)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

    add_prompt_commands(sub)

    p = sub.add_parser("demo", help="open the phantom study in napari (screenshot PNG when there is no display)")
    p.add_argument("--out-dir", default="demo_data", help="where the phantom study is written (default demo_data)")
    p.add_argument("--screenshot", default=None, help="PNG path used when there is no display")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)
    for p in sub.choices.values():  # the readers' explicit exceptions, on every subcommand
        p.add_argument("--replace-nonfinite", action="store_true", help="read NaN/±Inf image voxels as 0 (warns)")
        p.add_argument("--accept-dicom-gaps", action="store_true",
                       help="read DICOM series with missing, duplicate or unevenly spaced slices (warns)")  # fmt: skip
    return parser


class _Formatter(logging.Formatter):
    """Warnings read ``segunc CMD: warning: …`` like the errors; --verbose/--debug records keep their logger name."""

    def __init__(self, command: str) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.WARNING:
            return f"segunc {self.command}: warning: {record.getMessage()}"
        return super().format(record)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segunc`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = logging.StreamHandler()  # on the package's logger, replacing an earlier call's (tests call main often)
    handler.setFormatter(_Formatter(args.command))
    for old in [h for h in log.handlers if isinstance(h.formatter, _Formatter)]:
        log.removeHandler(old)
    log.addHandler(handler)
    log.setLevel(level)
    from .io import read_policy

    try:
        with read_policy(replace_nonfinite=args.replace_nonfinite, accept_dicom_gaps=args.accept_dicom_gaps):
            return int(args.func(args) or 0)
    except SegUncError as exc:
        if args.debug:
            raise
        print(f"segunc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"segunc {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `segunc info … | head`: the reader left; say nothing more
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
