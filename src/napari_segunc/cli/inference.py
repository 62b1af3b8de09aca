"""``segunc predict``: an nnU-Net v2 ensemble run on an image, with its probabilities and uncertainty maps."""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInput
from ._common import add_device, add_overwrite, add_quiet, print_progress

__all__ = ["add_commands"]


def _cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..inference.input_qc import check_input
    from ..inference.nnunet import MC_GROUP, TTA_GROUP, discover_members, predict_members, read_ensemble_file
    from ..io import check_outputs, read_volume, relocate, staged_folder, volume_bytes
    from ..io.writers import atomic_write
    from ..members import dataset_labels
    from ..progress import run_job
    from ..uncertainty.pipeline import accumulate, ensemble_output_names, output_folder, write_ensemble_outputs

    if args.mc_dropout and args.tta:
        raise InvalidInput("Use either test-time flips (--tta) or MC dropout (--mc-dropout) as the source, not both.")
    if args.ensemble:
        members = read_ensemble_file(args.ensemble)
    elif args.model:
        members = discover_members(args.model, folds=args.folds, checkpoint=args.checkpoint)
    else:
        from ..inference.demo_models import demo_ensemble_file

        members = read_ensemble_file(demo_ensemble_file())
    source = TTA_GROUP if args.tta else MC_GROUP if args.mc_dropout else None
    groups = ["all", source] if source else ["all", *dict.fromkeys(m.group for m in members if m.group)]
    names = ensemble_output_names(not args.no_class_variance)
    targets = [output_folder(args.out, g) / n for g in groups for n in names] + [Path(args.out) / "qc.json"]
    inputs = [args.image, args.ensemble, *(m.model_dir for m in members)]
    check_outputs(targets, inputs=inputs, overwrite=args.overwrite)
    image = read_volume(args.image)
    n_classes = len(dataset_labels(members[0].model_dir)) + 1
    maps_per_group = n_classes * (1 if args.no_class_variance else 2) + len(names) - 2  # per-class maps are 4D
    needed = volume_bytes(image.shape, n_maps=len(groups) * maps_per_group)
    check_outputs(targets, inputs=inputs, overwrite=args.overwrite, needed_bytes=needed)
    qc = check_input(image, [m.model_dir for m in members])  # input check against the training data: warnings only
    for warning in qc.warnings:
        print(f"segunc predict: warning: {warning}", file=sys.stderr, flush=True)
    runs = predict_members(
        image,
        members,
        device=args.device,
        tta=args.tta,
        trust_checkpoint=args.trust_checkpoint,
        mc_dropout=args.mc_dropout,
    )
    job = accumulate(runs, class_variance=not args.no_class_variance)
    acc, grid, labels = run_job(job, None if args.quiet else print_progress)
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``segunc`` subparsers."""
    p = sub.add_parser("predict", help="nnU-Net v2 ensemble on an image: probabilities and maps")
    p.add_argument("image", help="the image (NIfTI, NRRD, MHA or a DICOM folder)")
    p.add_argument("--model", action="append", metavar="DIR", help="an nnU-Net trained-model folder (repeat)")
    p.add_argument("--ensemble", metavar="FILE", help="JSON/YAML file naming members and groups")
    p.add_argument("--folds", nargs="+", help="folds to use (default: every fold found)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name in each fold")
    add_device(p)
    p.add_argument("--tta", choices=("flips",), help="test-time augmentation: every axis-flip combination")
    p.add_argument(
        "--mc-dropout",
        type=int,
        default=0,
        metavar="N",
        help="N dropout samples per member (only for networks with dropout layers)",
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling of checkpoints that need it (can run code)",
    )
    p.add_argument("--normalized", action="store_true", help="divide entropies and MI by ln C (range 0..1)")
    p.add_argument("--no-class-variance", action="store_true", help="skip the per-class variance map")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a sub-folder per group)")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=_cmd_predict)
