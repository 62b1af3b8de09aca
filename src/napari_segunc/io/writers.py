"""Write label maps and float maps back in the source image's geometry, atomically and never over a file by surprise."""

from __future__ import annotations

import contextlib
import csv
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ..volume import FileFormat, Volume, VolumeKind
from .readers import SUPPORTED_SUFFIXES, file_suffix

__all__ = ["atomic_write", "output_format", "versioned_path", "write_csv", "write_volume"]

log = logging.getLogger(__name__)

_LABEL_DTYPES = (np.uint8, np.uint16, np.int16, np.int32)


def output_format(path: str | os.PathLike) -> FileFormat:
    """Format a write to `path` produces: from its suffix; NIfTI when it has none."""
    suffix = file_suffix(Path(path))
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
    suffix = file_suffix(p) or p.suffix
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
        suffix = file_suffix(path)
        stem = path.name[: len(path.name) - len(suffix)] if suffix in SUPPORTED_SUFFIXES else path.name
        path = path.with_name(stem + volume.source.format.suffix)
    fmt = output_format(path)
    if file_suffix(path) not in SUPPORTED_SUFFIXES:
        path = path.with_name(path.name.removesuffix(".gz") + ".nii.gz")
    if volume.source is not None and volume.source.path and _same_file(path, Path(volume.source.path)):
        raise InvalidInput(f"Refusing to write over the source image {path}; choose another file name.")
    image = sitk.GetImageFromArray(np.ascontiguousarray(_writable_array(volume)))
    canonical = volume.with_data(sitk.GetArrayViewFromImage(image))  # same grid, storable dtype
    out = canonical.to_source_sitk()
    use_compression = compress and fmt in (FileFormat.NRRD, FileFormat.MHA, FileFormat.MHD)
    write = lambda tmp: sitk.WriteImage(out, str(tmp), useCompression=use_compression)  # noqa: E731
    atomic_write(path, write, overwrite=overwrite, nifti=fmt is FileFormat.NIFTI)
    log.info("wrote %s (%s, %s)", path, fmt.value, out.GetPixelIDTypeAsString())
    return path


def atomic_write(path: Path, write: Callable[[Path], object], *, overwrite: bool, nifti: bool = False) -> Path:
    """Run ``write(tmp_path)`` in a temporary folder beside `path`, check what it wrote, then move it into place.

    Every file written is checked (not empty; with `nifti`, its size or gzip trailer against its header) and synced to
    disk before it is renamed, so no 0-byte, truncated or partial file ever sits under a final name: a full disk, a
    read-only folder or a missing permission raises `InvalidInput` naming the file, and leaves nothing behind. An
    existing target is refused unless `overwrite`; for formats that write two files (MetaImage ``.mhd`` + data file)
    the header is moved last.
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidInput(f"Cannot write {path}: it is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise InvalidInput(f"{path} already exists; choose another name or pass overwrite (--overwrite).")
    if not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise InvalidInput(f"Cannot write {path}: {path.parent} {what}; choose another output folder.")
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        try:
            write(tmpdir / path.name)
            written = sorted(tmpdir.iterdir(), key=lambda f: f.name == path.name)  # header last
            if not written:
                raise InvalidInput(f"Cannot write {path}: the writer produced no file; choose another format.")
            for f in written:
                verify_written(f, path.parent / f.name, nifti=nifti)
        except (OSError, RuntimeError) as exc:  # RuntimeError: ITK's writers
            raise write_error(path, exc, folder=path.parent) from None
        except InvalidInput as exc:
            raise write_error(path, exc, folder=path.parent) from None
        for f in written:
            target = path.parent / f.name
            if target != path and target.exists() and not overwrite:
                raise InvalidInput(f"{target} already exists; choose another name or pass overwrite.")
        for f in written:
            os.replace(f, path.parent / f.name)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def verify_written(f: Path, final: Path, *, nifti: bool = False) -> None:
    """Check one freshly written file (`final` is the name it will get) and sync it to disk; raise when incomplete.

    With `nifti`, a ``.nii``/``.nii.gz`` file's size (or gzip trailer) is checked against its header.
    """
    size = f.stat().st_size
    if size == 0:
        raise InvalidInput(
            f"Cannot write {final}: nothing was written (is the disk full?); free space or choose another folder."
        )
    name = f.name.lower()
    if nifti and name.endswith((".nii", ".nii.gz")):
        expected = _nifti_bytes(f)
        if expected is None:
            raise InvalidInput(
                f"Cannot write {final}: the file written has no readable NIfTI header (is the disk "
                "full?); free space or choose another folder."
            )
        if name.endswith(".nii"):
            got = size
        else:  # gzip's trailer holds the uncompressed size modulo 2**32: a cut stream ends with other bytes
            with open(f, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                got = int.from_bytes(fh.read(4), "little")
            expected %= 1 << 32
        if got != expected:
            raise InvalidInput(
                f"Cannot write {final}: only part of it could be written (is the disk full?); free "
                "space or choose another folder."
            )
    with open(f, "rb+") as fh:
        os.fsync(fh.fileno())


def _nifti_bytes(f: Path) -> int | None:
    """Header offset + voxel bytes a NIfTI file announces; None when its header cannot be read."""
    from .readers import nifti_layout

    try:
        return nifti_layout(f)[4]
    except Exception:  # noqa: BLE001 - any failure means the header is unreadable
        return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_ERRNO_TEXT = {
    errno.ENOSPC: "the disk is full; free space or choose another folder",
    errno.EDQUOT: "the disk quota is exceeded; free space or choose another folder",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another output folder",
    errno.ENAMETOOLONG: "the file name is too long; choose a shorter one",
}


def write_error(path: Path, exc: BaseException, *, folder: Path | None = None) -> InvalidInput:
    """One sentence for a failed write of `path`: the disk is full, read-only, not permitted... and what to do.

    `folder`, where the partial file still lies, tells a full disk apart when the writer (ITK) does not say why.
    """
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code is None:  # ITK reports the OS error inside its message
        for c, marker in ((errno.ENOSPC, "No space left"), (errno.EROFS, "Read-only"), (errno.EACCES, "Permission")):
            if marker in text:
                code = c
    if code is None and folder is not None:
        with contextlib.suppress(OSError):
            if shutil.disk_usage(folder).free < 1 << 20:
                code = errno.ENOSPC
    if isinstance(exc, InvalidInput) and code not in _ERRNO_TEXT:
        return exc
    reason = _ERRNO_TEXT.get(code) or f"{getattr(exc, 'strerror', None) or text.strip().splitlines()[-1]}"
    return InvalidInput(f"Cannot write {path}: {reason}.")


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
