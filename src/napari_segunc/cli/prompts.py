"""``segunc prompts``, ``segunc medsam2`` and ``segunc atlas-prompts``: box prompts and MedSAM2 segmentation."""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInput
from ..labels import parse_labels
from ._common import add_dask_options, add_device, add_labels, add_overwrite, add_quiet, parse_window, print_progress

__all__ = ["add_commands"]

#: ``--strategy`` of the box prompts (``prompts``, ``atlas-prompts``).
_BOX_STRATEGIES = "A: one box per organ at mid-height; B: three, at 1/4, 1/2 and 3/4 (default)"


def _cmd_prompts(args: argparse.Namespace) -> int:
    from ..io import check_outputs, read_volume
    from ..prompts import prompts_from_mask, save_prompts

    labels = parse_labels(args.labels)
    check_outputs([args.out], inputs=[args.mask, args.labels], overwrite=args.overwrite)
    mask = read_volume(args.mask, kind="labels")
    prompts = prompts_from_mask(
        mask.data,
        labels,
        strategy=args.strategy,
        enlarge=args.enlarge,
        source=f"mask:{mask.source.path}",
    )
    out = save_prompts(prompts, args.out, overwrite=args.overwrite)
    for o in prompts.organs:
        print(f"{o.name:20s} slices {o.z_min}..{o.z_max}, {len(o.boxes)} box(es)")
    for name in prompts.missing:
        print(f"{name} is absent from {args.mask}: no boxes for it", file=sys.stderr)
    print(f"{len(prompts.organs)} organ(s), strategy {args.strategy} → {out}")
    return 0


def _cmd_medsam2(args: argparse.Namespace) -> int:
    from ..progress import run_job
    from ..prompts.pipeline import medsam2_files_job

    window = parse_window(args.window)
    job = medsam2_files_job(
        args.image,
        checkpoint=args.checkpoint,
        out=args.out,
        boxes=args.boxes,
        from_mask=args.from_mask,
        init_mask=args.init_mask,
        labels=parse_labels(args.labels),
        strategy=args.strategy,
        device=args.device,
        config=args.config,
        image_size=args.image_size,
        window=window,
        overwrite=args.overwrite,
        no_enlargement=args.no_enlargement.split(",") if args.no_enlargement is not None else None,
    )
    done = run_job(job, None if args.quiet else print_progress)
    if done["notice"]:
        print(done["notice"], file=sys.stderr)
    for p in done["result"].passes:
        print(f"pass: {len(p.prompts.organs)} organ(s), propagated {len(p.recomputed)} in {p.seconds:.1f} s")
    print(f"strategy {args.strategy} → {args.out} ({', '.join(sorted(done['written']))})")
    return 0


def _cmd_simulate_clicks(args: argparse.Namespace) -> int:
    from ..progress import run_job
    from ..prompts.pipeline import simulate_clicks_files_job

    job = simulate_clicks_files_job(
        args.image,
        args.truth,
        checkpoint=args.checkpoint,
        out=args.out,
        labels=parse_labels(args.labels),
        n_clicks=args.clicks,
        box_shift=args.box_shift,
        device=args.device,
        config=args.config,
        image_size=args.image_size,
        window=parse_window(args.window),
        overwrite=args.overwrite,
    )
    done = run_job(job, None if args.quiet else print_progress)
    if done["notice"]:
        print(done["notice"], file=sys.stderr)
    for step in done["result"].steps:
        prompt = "box" if step.index == 0 else f"click {step.index}"
        organs = ", ".join(f"{name} {d:.3f}" for name, d in step.dice.items())
        print(f"{prompt:8s} mean Dice {step.mean_dice:.3f} in {step.seconds:.2f} s ({organs})")
    s = done["summary"]
    auc = f"DSC-AUC {s['dice_auc']:.3f} (of 4), " if s["dice_auc"] is not None else ""
    print(f"{auc}final Dice {s['final_dice']:.3f} → {args.out}")
    return 0


def _cmd_atlas_prompts(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io import check_outputs, read_volume
    from ..progress import run_job
    from ..prompts import save_prompts
    from ..prompts.atlas import atlas_prompts_job, parse_thresholds, score_map_paths, write_score_maps

    labels = parse_labels(args.labels)
    out = Path(args.out).expanduser()
    planned = [out, *(score_map_paths(labels or {}, args.score_maps).values() if args.score_maps else ())]
    inputs = [args.target, args.labels, *(f for pair in args.atlas for f in pair)]
    check_outputs(planned, inputs=inputs, overwrite=args.overwrite)
    target = read_volume(args.target, kind="intensity")
    refine = "bspline" if args.bspline else "demons" if args.demons else "none"
    job = atlas_prompts_job(
        target,
        [tuple(pair) for pair in args.atlas],
        labels,
        thresholds=parse_thresholds(args.thresholds),
        strategy=args.strategy,
        refine=refine,
        warp=args.warp,
        workers=args.workers,
        scheduler=args.scheduler,
    )
    result = run_job(job, None if args.quiet else print_progress)
    saved = save_prompts(result.prompts, out, overwrite=args.overwrite)
    for name, reason in result.failed:
        print(f"atlas {name} skipped: {reason}", file=sys.stderr)
    for name, threshold in result.thresholds.items():
        try:
            o = result.prompts.organ(name)
        except InvalidInput:
            print(f"{name}: no voxel scores above its threshold {threshold:g}, no boxes", file=sys.stderr)
            continue
        boxes = "; ".join(f"z={b.z} {b.as_xyxy()}" for b in o.boxes)
        print(f"{name:20s} threshold {threshold:g}, slices {o.z_min}..{o.z_max}, boxes {boxes}")
    if args.score_maps:
        written = write_score_maps(result, target, args.score_maps, overwrite=args.overwrite)
        print(f"{len(written)} score map(s) → {Path(args.score_maps).expanduser()}")
    used = f"{len(result.used)} of {len(args.atlas)} atlas(es)"
    print(f"{len(result.prompts.organs)} organ(s) from {used}, strategy {args.strategy} → {saved}")
    return 0


def _add_model(p: argparse.ArgumentParser) -> None:
    """The MedSAM2 model: ``--checkpoint``, ``--config``, ``--image-size``."""
    p.add_argument("--checkpoint", help="MedSAM2/SAM2.1 checkpoint .pt (default: $SEGUNC_MEDSAM2_CHECKPOINT)")
    p.add_argument(
        "--config",
        default="medsam2",
        help="architecture: medsam2 (sam2.1_hiera_t at 512 px) or sam2.1_hiera_t|s|b+|l",
    )
    p.add_argument("--image-size", type=int, help="override the model input size (tests)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What a MedSAM2 run needs besides its prompts: ``--window``, ``--device``, ``--out``, overwrite, quiet."""
    p.add_argument("--window", metavar="LOW,HIGH", help="intensity window (default: the image's display window)")
    add_device(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_overwrite(p)
    add_quiet(p)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``prompts``, ``medsam2`` and ``atlas-prompts`` to the ``segunc`` subparsers."""
    p = sub.add_parser("prompts", help="MedSAM2 box prompts (boxes.json) from an organ label map")
    p.add_argument("mask", help="label map of the organs (NIfTI, NRRD, MHA or a DICOM folder)")
    add_labels(p, "organs as name=value,… or a labels.json (default: every label, label_<value>)")
    _add_strategy(p, "AB", _BOX_STRATEGIES)
    p.add_argument(
        "--enlarge",
        action="store_true",
        help="grow box areas 10%% and slice ranges 20%% (not the aorta, IVC, adrenal glands)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the boxes.json file to write")
    add_overwrite(p, "replace an existing output file")
    p.set_defaults(func=_cmd_prompts)

    p = sub.add_parser("medsam2", help="MedSAM2 segmentation from box prompts, with the cascade")
    p.add_argument("image", help="the image (NIfTI, NRRD, MHA or a DICOM folder)")
    _add_model(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--prompts",
        "--boxes",
        dest="boxes",
        metavar="FILE",
        help="boxes.json with boxes, clicks and masks (segunc prompts, the MedSAM2 dock), or a result's prompts.json "
        "(replays its final pass: the same segmentation)",
    )
    src.add_argument("--from-mask", metavar="MASK", help="label map to take the boxes from (e.g. an nnU-Net result)")
    src.add_argument(
        "--init-mask",
        metavar="MASK",
        help="label map to start each organ from: its largest slice, as a SAM2 mask prompt (no boxes)",
    )
    add_labels(p, "organs of --from-mask/--init-mask as name=value,… or a labels.json")
    _add_strategy(p, "ABCD", "A/B: one pass; C: second pass boxed from the first; D: C with larger boxes")
    p.add_argument(
        "--no-enlargement",
        metavar="NAMES",
        help="organs D never enlarges (default: aorta, IVC, adrenal glands)",
    )
    _add_run_options(p)
    p.set_defaults(func=_cmd_medsam2)

    p = sub.add_parser("simulate-clicks", help="simulated annotator: a box, then 5 clicks (CVPR 2025)")
    p.add_argument("image", help="the image (NIfTI, NRRD, MHA or a DICOM folder)")
    p.add_argument("--truth", required=True, metavar="MASK", help="the reference label map the annotator follows")
    add_labels(p, "organs of --truth as name=value,… or a labels.json (default: every label)")
    _add_model(p)
    p.add_argument("--clicks", type=int, default=5, metavar="N", help="click steps after the box (default 5)")
    p.add_argument(
        "--box-shift",
        type=int,
        default=0,
        metavar="PX",
        help="widen the initial box by PX × size/256 pixels (the challenge draws 0-5 at random; default 0)",
    )
    _add_run_options(p)
    p.set_defaults(func=_cmd_simulate_clicks)

    p = sub.add_parser("atlas-prompts", help="MedSAM2 box prompts from atlases registered to the image")
    p.add_argument("target", help="the image to prompt (NIfTI, NRRD, MHA or a DICOM folder)")
    p.add_argument(
        "--atlas",
        nargs=2,
        action="append",
        required=True,
        metavar=("IMAGE", "MASK"),
        help="a reference image and its organ label map (repeat for each atlas)",
    )
    add_labels(p, "organs of the atlas masks as name=value,… or a labels.json", required=True)
    p.add_argument(
        "--thresholds",
        metavar="NAME=VALUE,…",
        help="score thresholds overriding seed 004's Table 2.3 (e.g. spleen=0.5,LKI=0.3)",
    )
    _add_strategy(p, "AB", _BOX_STRATEGIES)
    refine = p.add_mutually_exclusive_group()
    refine.add_argument("--bspline", action="store_true", help="B-spline refinement after the affine registration")
    refine.add_argument("--demons", action="store_true", help="demons refinement (same modality: CT to CT)")
    p.add_argument(
        "--warp",
        choices=("nearest", "linear"),
        default="nearest",
        help="carry the masks by nearest neighbour (default) or linearly (smoother score maps)",
    )
    add_dask_options(
        p,
        workers_default=None,
        workers_help="worker processes (0: serial; default one per atlas up to the cores)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the boxes.json file to write")
    p.add_argument("--score-maps", metavar="DIR", help="also write each organ's score map (score_<organ>.nii.gz)")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=_cmd_atlas_prompts)


def _add_strategy(p: argparse.ArgumentParser, choices: str, text: str) -> None:
    """``--strategy`` among `choices` (one letter each), B by default."""
    p.add_argument("--strategy", choices=tuple(choices), default="B", help=text)
