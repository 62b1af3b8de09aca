"""Write label maps and float maps back in the source image's geometry, atomically and never over a file by surprise."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ..volume import FileFormat, Volume, VolumeKind
from .readers import SUPPORTED_SUFFIXES, _suffix

__all__ = ["atomic_write", "output_format", "versioned_path", "write_csv", "write_volume"]

log = logging.getLogger(__name__)

_LABEL_DTYPES = (np.uint8, np.uint16, np.int16, np.int32)


def output_format(path: str | os.PathLike) -> FileFormat:
    """Format a write to `path` produces: from its suffix; NIfTI when it has none."""
    suffix = _suffix(Path(path))
    if suffix in SUPPORTED_SUFFIXES:
        return SUPPORTED_SUFFIXES[suffix]
    if suffix in ("", ".gz"):
        return FileFormat.NIFTI
    raise InvalidInput(
        f"Cannot write {path}: unsupported extension '{suffix}'; use .nii.gz, .nii, .nrrd, .mha or .mhd."
    )


def versioned_path(path: str | os.PathLike) -> Path:
    """`path` if free, else the first of ``name_v2.nii.gz``, ``name_v3.nii.gz``... that does not exist."""
    p = Path(path)
    if not p.exists():
        return p
    suffix = _suffix(p) or p.suffix
    stem = p.name[: len(p.name) - len(suffix)] if suffix else p.name
    n = 2
    while True:
        candidate = p.with_name(f"{stem}_v{n}{suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def _writable_array(volume: Volume) -> np.ndarray:
    data = volume.data
    if volume.kind is VolumeKind.LABELS:
        if data.dtype == bool:
            return data.astype(np.uint8)
        if data.dtype.kind == "f":
            if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
                raise InvalidInput(f"Label map '{volume.name}' holds non-integer values; labels must be integers.")
        if data.dtype.type in _LABEL_DTYPES:
            return data
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        for dt in _LABEL_DTYPES:
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return data.astype(dt)
        raise InvalidInput(f"Label map '{volume.name}' has labels outside the int32 range ({lo}..{hi}).")
    if data.dtype == np.float16 or (volume.kind is VolumeKind.FLOAT_MAP and data.dtype.kind == "f"):
        return data.astype(np.float32)  # float16 is not storable; maps need no more than float32
    if data.dtype == bool:
        return data.astype(np.uint8)
    return data


def write_volume(
    volume: Volume,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    same_format_as_source: bool = False,
    compress: bool = True,
) -> Path:
    """Write `volume` in its source file's exact geometry (orientation, spacing, origin, direction).

    Parameters
    ----------
    volume : Volume
        Label map (integer dtype kept, bool → uint8), float map (written as float32) or image (dtype kept,
        float16 → float32).
    path : path-like
        Target file. The suffix picks the format (``.nii.gz`` when there is none). With
        `same_format_as_source`, the suffix is replaced by the source's (DICOM sources are written as NIfTI).
    overwrite : bool
        Replace an existing file. Without it an existing target raises `InvalidInput`. The source file the volume
        was read from is never overwritten.
    compress : bool
        gzip/zlib-compress formats that support it (NRRD, MHA/MHD; ``.nii.gz`` always is).

    Returns
    -------
    Path
        The file written (for MetaImage ``.mhd``, the header; its ``.zraw``/``.raw`` data file lies beside it).
    """
    import SimpleITK as sitk

    path = Path(path).expanduser()
    if same_format_as_source and volume.source is not None and volume.source.format is not None:
        suffix = _suffix(path)
        stem = path.name[: len(path.name) - len(suffix)] if suffix in SUPPORTED_SUFFIXES else path.name
        path = path.with_name(stem + volume.source.format.suffix)
    fmt = output_format(path)
    if _suffix(path) not in SUPPORTED_SUFFIXES:
        path = path.with_name(path.name.removesuffix(".gz") + ".nii.gz")
    if volume.source is not None and volume.source.path and _same_file(path, Path(volume.source.path)):
        raise InvalidInput(f"Refusing to write over the source image {path}; choose another file name.")
    image = sitk.GetImageFromArray(np.ascontiguousarray(_writable_array(volume)))
    canonical = volume.with_data(sitk.GetArrayViewFromImage(image))  # same grid, storable dtype
    out = canonical.to_source_sitk()
    use_compression = compress and fmt in (FileFormat.NRRD, FileFormat.MHA, FileFormat.MHD)
    atomic_write(path, lambda tmp: sitk.WriteImage(out, str(tmp), useCompression=use_compression), overwrite=overwrite)
    log.info("wrote %s (%s, %s)", path, fmt.value, out.GetPixelIDTypeAsString())
    return path


def atomic_write(path: Path, write: Callable[[Path], object], *, overwrite: bool) -> Path:
    """Run ``write(tmp_path)`` in a temporary folder beside `path`, then move the result(s) into place.

    Nothing is left behind on failure, an existing target is refused unless `overwrite`, and for formats that write
    two files (MetaImage ``.mhd`` + data file) the header is moved last.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InvalidInput(f"{path} already exists; choose another name or pass overwrite (--overwrite).")
    if not path.parent.is_dir():
        raise InvalidInput(f"Cannot write {path}: the folder {path.parent} does not exist.")
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmpdir / path.name)
        written = sorted(tmpdir.iterdir(), key=lambda f: f.name == path.name)  # header last
        for f in written:
            target = path.parent / f.name
            if target != path and target.exists() and not overwrite:
                raise InvalidInput(f"{target} already exists; choose another name or pass overwrite.")
        for f in written:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def write_csv(
    rows: Iterable[Mapping[str, object]], path: str | os.PathLike, *, columns: Sequence[str], overwrite: bool = False
) -> Path:
    """Write a tidy table (one dict per row, keys `columns`) as CSV, atomically; refuses an existing file."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(Path(path), write, overwrite=overwrite)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
