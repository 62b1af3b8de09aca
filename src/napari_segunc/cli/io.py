"""``segunc info``, ``convert``, ``resample``, ``export-dicom-seg`` and ``phantom``: images, label maps and the
phantom study, read, moved between grids and written."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InvalidInput
from ._common import add_labels, add_overwrite, add_trust_pickle

__all__ = ["add_commands"]


def _geometry(src) -> dict[str, Any]:
    """A source file's geometry as `segunc info --json` reports it (ITK order, LPS)."""
    return {
        "size": list(src.size),
        "spacing": list(src.spacing),
        "origin": list(src.origin),
        "direction": list(src.direction),
        "orientation": src.orientation,
    }


def _is_probability_map(path: str) -> bool:
    """A 4D NIfTI or an nnU-Net .npz: class probabilities (what `segunc uncertainty` reads and `predict` writes)."""
    from pathlib import Path

    from ..io.probabilities import probability_shape
    from ..io.readers import file_suffix

    p = Path(path).expanduser()
    if not p.is_file() or file_suffix(p) not in (".npz", ".nii", ".nii.gz"):
        return False
    shape = probability_shape(p)
    return shape is not None and len(shape) == 4


def _probability_info(args: argparse.Namespace) -> int:
    """``segunc info`` of a probability map: its grid, its classes and how close every voxel's sum is to 1."""
    import numpy as np

    from ..io import read_probabilities

    probs = read_probabilities(args.path, trust_pickle=args.trust_pickle)
    data, src = probs.data, probs.grid.source
    sums = np.zeros(data.shape[1:], np.float64)
    for channel in data:  # one class at a time: no float64 copy of the whole map
        sums += channel
    worst = float(np.abs(sums - 1.0).max()) if sums.size else 0.0
    per_class = [
        {"class": c, "min": float(data[c].min()), "max": float(data[c].max()), "mean": float(data[c].mean())}
        for c in range(data.shape[0])
    ]
    info: dict[str, Any] = {
        "path": src.path,
        "format": "probabilities",
        "classes": int(data.shape[0]),
        "canonical_shape_czyx": list(data.shape),
        **_geometry(src),
        "dtype": str(data.dtype),
        "sum_min": float(sums.min()),
        "sum_max": float(sums.max()),
        "sum_max_deviation": worst,
        "per_class": per_class,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    fmt3 = lambda v: " × ".join(f"{x:g}" for x in v)  # noqa: E731
    lines = [
        f"path         {src.path}",
        f"format       class probabilities, {data.shape[0]} classes (background first), {data.dtype}",
        f"size         {fmt3(src.size)} voxels (x, y, z) × {data.shape[0]} classes",
        f"spacing      {fmt3(src.spacing)} mm",
        f"origin       ({', '.join(f'{x:.4f}' for x in src.origin)}) mm (LPS, ITK convention)",
        f"orientation  {src.orientation}",
        f"sum over classes  {info['sum_min']:.6g} .. {info['sum_max']:.6g} (largest deviation from 1: {worst:.2g})",
    ]
    lines += [f"class {r['class']:<3d}    {r['min']:.4g} .. {r['max']:.4g}, mean {r['mean']:.4g}" for r in per_class]
    print("\n".join(lines))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import read_volume

    if _is_probability_map(args.path):
        return _probability_info(args)
    vol = read_volume(args.path, series_id=args.series_id)
    src = vol.source
    data = vol.data
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    info: dict[str, Any] = {
        "path": src.path,
        "format": src.format.value,
        **_geometry(src),
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


def _cmd_resample(args: argparse.Namespace) -> int:
    import sys

    from ..io import check_outputs, read_volume, write_probabilities, write_volume
    from ..io.resample import resample_like, resample_probabilities_like
    from ..volume import VolumeKind

    check_outputs([args.out], inputs=[args.moving, args.like], overwrite=args.overwrite, option="--out")
    reference = read_volume(args.like)
    if _is_probability_map(args.moving):
        from ..io import read_probabilities

        probs = read_probabilities(args.moving, trust_pickle=args.trust_pickle)
        done = resample_probabilities_like(probs.data, probs.grid, reference)
        out = write_probabilities(done.data, reference, args.out, overwrite=args.overwrite)
        what = f"{probs.data.shape[0]} class probabilities (linear, renormalised)"
    else:
        kind = None if args.kind == "auto" else VolumeKind(args.kind)
        moving = read_volume(args.moving, kind=kind)
        done = resample_like(moving, reference)
        kind = moving.kind
        out = write_volume(
            reference.with_data(done.data, kind=kind, name=moving.name), args.out, overwrite=args.overwrite
        )
        what = "labels (nearest neighbour)" if kind is VolumeKind.LABELS else f"{kind.value} (linear)"
    if done.outside > 0:
        print(
            f"segunc resample: warning: {done.outside:.1%} of {args.like}'s voxels lie outside {args.moving}; they "
            "were filled with background.",
            file=sys.stderr,
        )
    print(f"{args.moving} → {out}: {what} on the grid of {args.like}")
    return 0


def _cmd_export_dicom_seg(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import check_outputs, read_probabilities, read_volume
    from ..io.dicom_seg import write_dicom_seg
    from ..labels import parse_labels
    from ..volume import check_same_grid

    if (args.labels_map is None) == (args.probabilities is None):
        raise InvalidInput("Give the label map to export, or --probabilities P for a fractional SEG (not both).")
    if not str(args.out).lower().endswith(".dcm"):
        raise InvalidInput(f"{args.out}: a DICOM SEG file ends in .dcm.")
    organs = parse_labels(args.labels)
    inputs = [args.dicom_dir, args.labels_map, args.probabilities, args.labels]
    check_outputs([args.out], inputs=inputs, overwrite=args.overwrite, option="--out")
    image = read_volume(args.dicom_dir, series_id=args.series_id)
    if image.source is None or image.source.format.value != "dicom":
        raise InvalidInput(f"{args.dicom_dir} is not a DICOM series; DICOM SEG references the source DICOM slices.")
    if args.labels_map is not None:
        labels = read_volume(args.labels_map, kind="labels")
        check_same_grid(image, labels)
        organs = organs or {f"label_{v}": int(v) for v in np.unique(labels.data) if v != 0}
        data, automatic, kind = {"labels": labels.data}, args.automatic, "binary"
    else:
        probs = read_probabilities(args.probabilities, reference=image)
        organs = organs or {f"label_{c}": c for c in range(1, probs.data.shape[0])}
        data, automatic, kind = {"probabilities": probs.data}, True, "fractional"
    out = write_dicom_seg(
        image,
        args.out,
        organs=organs,
        algorithm=args.algorithm,
        models=args.model or (),
        automatic=automatic,
        overwrite=args.overwrite,
        **data,
    )
    print(f"DICOM SEG ({kind}, {len(organs)} organ(s), referencing {args.dicom_dir}) → {out}")
    return 0


def _cmd_relabel(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import check_outputs, read_volume, write_volume
    from ..label_tables import map_labels
    from ..labels import parse_labels

    source, target = parse_labels(args.source), parse_labels(args.target)
    check_outputs([args.out], inputs=[args.labels_map], overwrite=args.overwrite, option="--out")
    labels = read_volume(args.labels_map, kind="labels")
    unknown = sorted({int(v) for v in np.unique(labels.data) if v != 0} - {int(v) for v in source.values()})
    if unknown:
        raise InvalidInput(
            f"{args.labels_map} holds label value(s) {', '.join(map(str, unknown[:8]))} that --from {args.source} "
            "does not name; is it the right table?"
        )
    mapped = map_labels(labels.data, source, target)
    out = write_volume(labels.with_data(mapped, name=labels.name), args.out, overwrite=args.overwrite)
    kept = sorted({int(v) for v in np.unique(mapped) if v != 0})
    names = {v: n for n, v in target.items()}
    print(f"{args.labels_map} → {out}: {', '.join(names.get(v, str(v)) for v in kept) or 'nothing'} ({args.target})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``info``, ``convert``, ``resample`` and ``phantom`` to the ``segunc`` subparsers."""
    p = sub.add_parser("info", help="geometry (size, spacing, origin, direction) and values")
    p.add_argument("path", help="NIfTI / NRRD / MHA / MHD file, DICOM folder, or a probability map (4D NIfTI, .npz)")
    _add_series_id(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_trust_pickle(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="convert between formats, keeping the geometry exactly")
    p.add_argument("input", help="image file or DICOM folder")
    p.add_argument("output", help="target file; its suffix picks the format (.nii.gz, .nrrd, .mha, .mhd, .nii)")
    _add_series_id(p)
    add_overwrite(p, "replace an existing output file")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("resample", help="resample a label map or a map onto an image's grid")
    p.add_argument("moving", help="the label map, image, float map or probability map (4D NIfTI, .npz) to move")
    p.add_argument("--like", required=True, metavar="IMAGE", help="the image whose grid to resample onto")
    p.add_argument(
        "--kind",
        choices=("auto", "labels", "intensity", "float_map"),
        default="auto",
        help="how to read MOVING (default: from its values); labels use nearest neighbour, the rest linear",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (its suffix picks the format)")
    add_trust_pickle(p)
    add_overwrite(p, "replace an existing output file")
    p.set_defaults(func=_cmd_resample)

    p = sub.add_parser("export-dicom-seg", help="labels or probabilities as DICOM SEG of their series")
    p.add_argument("dicom_dir", help="the DICOM folder the labels were made on")
    p.add_argument("labels_map", nargs="?", help="the label map (any format, on the series' grid)")
    p.add_argument("--probabilities", metavar="P", help="class probabilities (4D NIfTI): a FRACTIONAL SEG instead")
    add_labels(p, "organ names and label values (name=value,… or a labels.json; default: label_<value>)")
    _add_series_id(p)
    p.add_argument("--algorithm", default="napari-segunc", help="the algorithm named in each segment")
    p.add_argument("--model", action="append", metavar="NAME", help="a model that made the labels (repeat)")
    p.add_argument("--automatic", action="store_true", help="the labels are a model's raw output (not reviewed)")
    p.add_argument("--out", required=True, metavar="FILE.dcm", help="the DICOM SEG file to write")
    add_overwrite(p, "replace an existing output file")
    p.set_defaults(func=_cmd_export_dicom_seg)

    p = sub.add_parser("relabel", help="map a label map from one label table to another")
    p.add_argument("labels_map", help="the label map")
    p.add_argument("--from", dest="source", required=True, metavar="TABLE", help="its table (name, file or pairs)")
    p.add_argument("--to", dest="target", required=True, metavar="TABLE", help="the table to map onto")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    add_overwrite(p, "replace an existing output file")
    p.set_defaults(func=_cmd_relabel)

    p = sub.add_parser("phantom", help="write the synthetic abdominal CT study with its raters")
    p.add_argument("out_dir", help="folder to write image.nii.gz, truth.nii.gz, rater_K.nii.gz, labels.json")
    p.add_argument("--seed", type=int, default=0, help="anatomy and rater seed (same seed, same bytes)")
    p.add_argument("--raters", type=int, default=3, help="number of simulated raters (default 3)")
    add_overwrite(p, "replace files already in OUT_DIR")
    p.set_defaults(func=_cmd_phantom)


def _add_series_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("--series-id", help="DICOM SeriesInstanceUID when the folder holds several series")
