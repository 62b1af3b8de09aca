"""Class-probability maps on disk: nnU-Net ``.npz`` (+ ``.pkl``) and 4D NIfTI ``(x, y, z, C)``.

Both are brought to the canonical ``(C, z, y, x)`` LPS grid. nnU-Net writes ``probabilities`` in the array order
SimpleITK gives for the source image, and keeps that image's geometry in a ``.pkl`` beside it. A pickle can run code
when loaded, so it is only read when the caller says it trusts it (``trust_pickle=True``, ``--trust-pickle``);
passing the reference image (``reference=``, ``--reference``) gives the geometry without unpickling anything.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from ..volume import SourceGeometry, Volume, VolumeKind, array_to_canonical, array_to_source, check_same_grid
from .readers import file_suffix
from .writers import atomic_write

__all__ = ["ProbabilityMap", "read_probabilities", "write_probabilities"]

log = logging.getLogger(__name__)
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclasses.dataclass(eq=False)
class ProbabilityMap:
    """Class probabilities on the canonical grid.

    Attributes
    ----------
    data : ndarray, shape (C, Z, Y, X), float16 or float32
    grid : Volume
        A volume with the same canonical geometry and source (its ``data`` is a placeholder of shape (Z, Y, X)).
    path : str
    """

    data: np.ndarray
    grid: Volume
    path: str


def _grid_from_geometry(shape_zyx, spacing, origin, direction, path) -> Volume:
    """Canonical grid (placeholder voxels) of an image with this ITK geometry in SimpleITK array order."""
    import SimpleITK as sitk

    probe = sitk.Image([int(n) for n in shape_zyx[::-1]], sitk.sitkUInt8)
    probe.SetSpacing(tuple(float(v) for v in spacing))
    probe.SetOrigin(tuple(float(v) for v in origin))
    probe.SetDirection(tuple(float(v) for v in np.asarray(direction, float).ravel()))
    source = SourceGeometry(
        path=str(path),
        format=None,
        size=tuple(int(n) for n in shape_zyx[::-1]),
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in np.asarray(direction, float).ravel()),
    )
    return Volume.from_sitk(probe, source=source, kind=VolumeKind.FLOAT_MAP, name=Path(path).name)


def _itk_geometry_from_affine(affine: np.ndarray):
    """(spacing, origin, direction) in ITK's LPS convention from a NIfTI RAS affine."""
    lin = _LPS_FROM_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    return spacing, _LPS_FROM_RAS @ affine[:3, 3], lin / spacing


def read_probabilities(
    path: str | os.PathLike, *, reference: Volume | None = None, trust_pickle: bool = False
) -> ProbabilityMap:
    """Read one member's class probabilities onto the canonical grid.

    Parameters
    ----------
    path : path-like
        nnU-Net ``.npz`` (key ``probabilities``, shape (C, z, y, x) in the source image's array order) or a 4D
        NIfTI ``(x, y, z, C)``.
    reference : Volume, optional
        The image the probabilities belong to. For ``.npz`` it supplies the geometry; for NIfTI it is checked.
    trust_pickle : bool
        Allow reading the nnU-Net ``.pkl`` beside an ``.npz`` for its geometry when no `reference` is given.

    Returns
    -------
    ProbabilityMap
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidInput(f"{p} does not exist. Check the path of the probability map.")
    suffix = file_suffix(p)
    if suffix == ".npz":
        data, grid = _read_npz(p, reference, trust_pickle)
    elif suffix in (".nii", ".nii.gz"):
        data, grid = _read_nifti4d(p)
    else:
        raise InvalidInput(f"{p}: probability maps must be nnU-Net .npz files or 4D NIfTI (.nii.gz) files.")
    if reference is not None:
        try:
            check_same_grid(reference, grid)
        except GeometryMismatch as exc:
            raise GeometryMismatch(f"Probability map {p} does not belong to the reference image: {exc}") from None
        grid = reference.with_data(np.zeros(reference.shape, np.uint8), kind=VolumeKind.FLOAT_MAP, name=p.name)
    if data.dtype.kind == "f":
        bad = data.size - int(np.count_nonzero(np.isfinite(data)))
        if bad:
            raise InvalidInput(
                f"{p} holds {bad} NaN or infinite probabilities; the model or export that wrote it failed, so "
                "predict this case again."
            )
    return ProbabilityMap(data=data, grid=grid, path=str(p))


def probability_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The (C, z, y, x) shape a probability file declares, from its header alone; None when it cannot be told."""
    p = Path(path).expanduser()
    try:
        if file_suffix(p) == ".npz":
            return _npz_header(p)[0]
        import nibabel as nib

        x, y, z, c = nib.load(str(p)).shape
        return (int(c), int(z), int(y), int(x))
    except Exception:  # noqa: BLE001 - the reader explains later
        return None


def _npz_header(p: Path):
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("probabilities.npy")
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            fmt = np.lib.format
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(fh)
            return tuple(int(s) for s in shape), np.dtype(dtype), fh.tell(), info.file_size


def _check_npz_sizes(p: Path) -> None:
    """Refuse an .npz whose array header declares more bytes than the file holds or than memory has, before
    allocating anything (a corrupt header can declare petabytes)."""
    try:
        shape, dtype, header, file_size = _npz_header(p)
    except (KeyError, zipfile.BadZipFile, OSError, EOFError, ValueError):
        return  # np.load explains below
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need + header > file_size:
        raise InvalidInput(
            f"{p} is corrupt: its array header declares {shape} ({_size(need)}) but the file holds "
            f"{_size(file_size)}; export it again."
        )
    avail = _available_memory()
    if avail is not None and need > avail:
        raise InvalidInput(
            f"{p} holds probabilities of shape {shape} ({_size(need)}), more than the {_size(avail)} of memory "
            "available; close other programs or use a machine with more memory."
        )


def _size(n: int) -> str:
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n} bytes"


def _available_memory() -> int | None:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _read_npz(p: Path, reference: Volume | None, trust_pickle: bool):
    _check_npz_sizes(p)
    try:
        with np.load(p, allow_pickle=False) as npz:
            if "probabilities" not in npz.files:
                raise InvalidInput(f"{p} has no 'probabilities' array (it holds {npz.files}); is it an nnU-Net output?")
            raw = npz["probabilities"]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InvalidInput(f"{p} is not a readable .npz file (truncated or corrupt?): {exc}") from None
    if raw.ndim != 4:
        raise InvalidInput(f"{p} holds probabilities of shape {raw.shape}; (C, z, y, x) was expected.")
    if reference is not None:
        if reference.source is None:
            raise InvalidInput("The reference image has no source geometry; read it from its file.")
        src = reference.source
        if tuple(raw.shape[1:]) != tuple(src.size[::-1]):
            raise GeometryMismatch(
                f"{p} has probabilities on a {raw.shape[1:][::-1]} grid (x, y, z) but the reference image "
                f"{src.path} is {src.size}; they do not belong together."
            )
        geometry = (src.spacing, src.origin, src.direction)
    else:
        geometry = _npz_geometry(p, trust_pickle)
    grid = _grid_from_geometry(raw.shape[1:], *geometry, p)
    return np.ascontiguousarray(array_to_canonical(raw, geometry[2])), grid


def _npz_geometry(p: Path, trust_pickle: bool):
    pkl = p.with_suffix(".pkl")
    if not trust_pickle:
        raise InvalidInput(
            f"{p} carries no geometry of its own. Give the image it was predicted from (--reference IMAGE), or, "
            f"if you trust {pkl.name} (unpickling a file can run code), allow reading it (--trust-pickle)."
        )
    if not pkl.exists():
        raise InvalidInput(f"{p} needs its nnU-Net properties file {pkl} or a reference image (--reference).")
    log.warning("unpickling %s because trust_pickle was given", pkl)
    try:
        with open(pkl, "rb") as fh:
            props = pickle.load(fh)  # noqa: S301 - explicit opt-in, documented above
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise InvalidInput(f"{pkl} could not be read as nnU-Net properties: {exc}") from None
    if "sitk_stuff" in props:
        st = props["sitk_stuff"]
        return tuple(st["spacing"]), tuple(st["origin"]), tuple(np.asarray(st["direction"]).ravel())
    if "nibabel_stuff" in props:  # nnU-Net NibabelIO: array = nibabel data transposed to (z, y, x)
        affine = np.asarray(props["nibabel_stuff"].get("original_affine"))
        if "reoriented_affine" in props["nibabel_stuff"]:
            affine = np.asarray(props["nibabel_stuff"]["reoriented_affine"])
        spacing, origin, direction = _itk_geometry_from_affine(affine)
        return tuple(spacing), tuple(origin), tuple(direction.ravel())
    raise InvalidInput(f"{pkl} holds no 'sitk_stuff' or 'nibabel_stuff' geometry; give --reference instead.")


def _read_nifti4d(p: Path):
    import nibabel as nib

    from .readers import check_nifti_complete

    check_nifti_complete(p)
    try:
        img = nib.load(str(p))
        raw = np.asarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise InvalidInput(f"{p} is not a readable NIfTI file: {exc}") from None
    if raw.ndim == 5 and raw.shape[3] == 1:  # (x, y, z, 1, C): NIfTI vector intent
        raw = raw[:, :, :, 0, :]
    if raw.ndim != 4:
        raise InvalidInput(f"{p} has shape {raw.shape}; a 4D probability map (x, y, z, classes) is needed.")
    if raw.dtype.kind != "f":
        raw = raw.astype(np.float32)
    spacing, origin, direction = _itk_geometry_from_affine(img.affine)
    source_order = raw.transpose(3, 2, 1, 0)  # (C, z, y, x) as SimpleITK would order a 3D channel
    grid = _grid_from_geometry(source_order.shape[1:], spacing, origin, direction.ravel(), p)
    return np.ascontiguousarray(array_to_canonical(source_order, direction.ravel())), grid


def write_probabilities(
    probabilities: np.ndarray, reference: Volume, path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write canonical (C, Z, Y, X) probabilities as a 4D NIfTI ``(x, y, z, C)`` in the reference's source geometry.

    float16/float64 are stored as float32. The write is atomic and refuses an existing file unless `overwrite`.
    """
    import nibabel as nib

    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 4 or probabilities.shape[1:] != reference.shape:
        raise GeometryMismatch(
            f"Probabilities of shape {probabilities.shape} do not fit the reference grid {reference.shape}."
        )
    src = reference.source
    if src is None:
        spacing, origin, direction = reference.spacing[::-1], reference.origin[::-1], reference.direction
        source_order = probabilities
    else:
        spacing, origin, direction = src.spacing, src.origin, src.direction
        source_order = array_to_source(probabilities, src.direction)
    lin = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_FROM_RAS @ lin
    affine[:3, 3] = _LPS_FROM_RAS @ np.asarray(origin, float)
    img = nib.Nifti1Image(np.ascontiguousarray(source_order.transpose(3, 2, 1, 0), dtype=np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return atomic_write(Path(path), lambda tmp: nib.save(img, str(tmp)), overwrite=overwrite, nifti=True)
