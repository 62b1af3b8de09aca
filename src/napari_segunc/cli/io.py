"""``segunc info``, ``segunc convert`` and ``segunc phantom``: images and the phantom study, read and written."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InvalidInput
from ._common import add_overwrite

__all__ = ["add_commands"]


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import read_volume

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
    from ..io import check_outputs, output_format, read_volume, volume_bytes, write_volume

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

    from ..io import check_outputs
    from ..phantom import make_phantom, write_phantom

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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``info``, ``convert`` and ``phantom`` to the ``segunc`` subparsers."""
    p = sub.add_parser("info", help="geometry (size, spacing, origin, direction) and values")
    p.add_argument("path", help="NIfTI / NRRD / MHA / MHD file or DICOM folder")
    _add_series_id(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="convert between formats, keeping the geometry exactly")
    p.add_argument("input", help="image file or DICOM folder")
    p.add_argument("output", help="target file; its suffix picks the format (.nii.gz, .nrrd, .mha, .mhd, .nii)")
    _add_series_id(p)
    add_overwrite(p, "replace an existing output file")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("phantom", help="write the synthetic abdominal CT study with its raters")
    p.add_argument("out_dir", help="folder to write image.nii.gz, truth.nii.gz, rater_K.nii.gz, labels.json")
    p.add_argument("--seed", type=int, default=0, help="anatomy and rater seed (same seed, same bytes)")
    p.add_argument("--raters", type=int, default=3, help="number of simulated raters (default 3)")
    add_overwrite(p, "replace files already in OUT_DIR")
    p.set_defaults(func=_cmd_phantom)


def _add_series_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("--series-id", help="DICOM SeriesInstanceUID when the folder holds several series")
