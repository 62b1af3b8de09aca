"""Output locations checked before any work, and output sets that appear whole or not at all.

`check_outputs` is what every command calls before it reads or computes anything: it refuses, with one sentence
naming the path and the fix, an output under a regular file, in a read-only or unwritable folder, equal to or inside
one of the inputs (even with ``--overwrite``: nothing the user made is replaced by its own result), already there
without ``--overwrite``, or larger than the free space. `staged_folder` then collects a multi-file result in a hidden
folder and moves it into place only when every file of it was written and verified.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import InvalidInput
from .writers import write_error

__all__ = ["check_outputs", "relocate", "staged_folder", "volume_bytes"]


def _existing_ancestor(p: Path) -> Path:
    a = p
    while not a.exists() and a != a.parent:
        a = a.parent
    return a


def _inside(child: Path, folder: Path) -> bool:
    try:
        child.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs(
    targets: Iterable[str | os.PathLike],
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    needed_bytes: int = 0,
    option: str = "--out",
) -> None:
    """Refuse, before any work, outputs that cannot or must not be written; see the module's docstring.

    `targets` are the files a command will write (or its output folder). `needed_bytes` is a lower estimate of their
    size: the command is refused when the disk holds less than that (the verified writes catch the rest).
    """
    targets = [Path(t).expanduser() for t in targets]
    input_paths = [Path(i).expanduser() for i in inputs if i]
    for t in targets:
        anc = _existing_ancestor(t.parent)
        if not anc.is_dir():
            raise InvalidInput(f"Cannot write {t}: {anc} is a file, not a folder; choose another {option}.")
        if not os.access(anc, os.W_OK | os.X_OK) or _read_only(anc):
            raise InvalidInput(
                f"Cannot write {t}: {anc} is read-only or not writable for you; choose another {option}."
            )
        for i in input_paths:
            if _same(t, i):
                raise InvalidInput(
                    f"Refusing to write {t}: it is one of the inputs, which is never replaced (not even with "
                    f"--overwrite); choose another {option}."
                )
            if i.is_dir() and _inside(t, i):
                raise InvalidInput(f"Refusing to write {t} inside the input folder {i}; choose an {option} outside it.")
    existing = [t for t in targets if t.exists() and not t.is_dir()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InvalidInput(
            f"{existing[0]} already exists{more}; choose another {option} or pass --overwrite to replace it."
        )
    if needed_bytes > 0 and targets:
        anc = _existing_ancestor(targets[0].parent)
        free = shutil.disk_usage(anc).free
        if free < needed_bytes:
            raise InvalidInput(
                f"Not enough free space for {targets[0].parent}: the outputs need at least {_mb(needed_bytes)} and "
                f"{anc} has {_mb(free)} free; free space or choose another {option}."
            )


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def volume_bytes(shape: Iterable[int], n_maps: float = 1.0, itemsize: int = 4, compressed: bool = True) -> int:
    """A lower estimate of the bytes `n_maps` maps of `shape` take on disk (gzip rarely does better than 1:4)."""
    n = 1
    for s in shape:
        n *= int(s)
    return int(n * itemsize * n_maps / (4 if compressed else 1))


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder; when the block ends normally, move everything written there into `out_dir`.

    A new `out_dir` appears in one rename; into an existing one, every file is checked for a name clash first, then
    moved (renames within one file system). On any error or interrupt the staging folder is removed and `out_dir`
    is left exactly as it was.
    """
    out = Path(out_dir).expanduser()
    try:
        if out.is_dir():
            base = out
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            base = out.parent
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=base))
    except OSError as exc:
        raise write_error(out, exc) from None
    try:
        yield stage
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        if not out.is_dir():
            try:
                os.rename(stage, out)
            except OSError as exc:
                raise write_error(out, exc) from None
            return
        clashes = [out / f.relative_to(stage) for f in files if (out / f.relative_to(stage)).exists()]
        if clashes and not overwrite:
            raise InvalidInput(f"{clashes[0]} already exists; choose another --out or pass --overwrite.")
        try:
            for f in files:
                target = out / f.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, target)
        except OSError as exc:
            raise write_error(out, exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def relocate(written, stage: Path, out: str | os.PathLike):
    """The final paths of files written into `stage` (a dict or list of paths, as the writers return them)."""
    out = Path(out).expanduser()

    def move(p: Path) -> Path:
        try:
            return out / Path(p).relative_to(stage)
        except ValueError:
            return Path(p)

    if isinstance(written, dict):
        return {k: move(v) for k, v in written.items()}
    return [move(p) for p in written]
