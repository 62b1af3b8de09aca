"""The working annotation of a review session: multi-level undo/redo and atomic autosave. Qt-free.

`History` is one undo stack per viewer for every kind of change the plugin makes (label edits, accepted MedSAM2
results, box edits): each entry is a `Command` with ``undo``/``redo``. `WorkingAnnotation` is the label map being
corrected; its changes are `LabelEdit` commands that keep only the changed block (old and new values), so undo
costs memory in proportion to what changed. `SessionStore` writes the annotation (in the image's source geometry),
the box prompts and the history's descriptions to a session folder after each accepted change — in a background
thread, each file atomically (temporary file + rename), so killing the process loses at most the change being
written — and offers them back when the same image is opened again.

Session folders live under ``$SEGUNC_SESSION_DIR`` (default ``~/.napari-segunc/sessions``), one per image, named
after the image file and a hash of its absolute path: never beside the user's files.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInput, SegUncError
from .volume import Volume, VolumeKind, check_same_grid

__all__ = ["Command", "History", "LabelEdit", "SessionStore", "WorkingAnnotation", "session_root"]

log = logging.getLogger(__name__)

SESSION_ENV = "SEGUNC_SESSION_DIR"


@dataclasses.dataclass
class Command:
    """One undoable change: `redo` applies it (again), `undo` reverts it."""

    description: str
    undo: Callable[[], None]
    redo: Callable[[], None]


class History:
    """Multi-level undo/redo stack shared by every kind of change of a review session.

    `listeners` are called with no argument after every push, undo and redo (the widgets refresh their layers and
    buttons; the session store autosaves).
    """

    def __init__(self, limit: int = 100) -> None:
        self.limit = int(limit)
        self._done: list[Command] = []
        self._undone: list[Command] = []
        self.listeners: list[Callable[[], None]] = []

    def push(self, command: Command, *, apply: bool = False) -> None:
        """Record `command` (already applied unless `apply`); clears what could be redone."""
        if apply:
            command.redo()
        self._done.append(command)
        del self._done[: -self.limit]
        self._undone.clear()
        self._notify()

    def undo(self) -> str | None:
        """Revert the last change; returns its description (None when there is nothing to undo)."""
        if not self._done:
            return None
        command = self._done.pop()
        command.undo()
        self._undone.append(command)
        self._notify()
        return command.description

    def redo(self) -> str | None:
        if not self._undone:
            return None
        command = self._undone.pop()
        command.redo()
        self._done.append(command)
        self._notify()
        return command.description

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    @property
    def descriptions(self) -> list[str]:
        """What was done, oldest first (what undo would revert is last)."""
        return [c.description for c in self._done]

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()


def _bbox(changed: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding block of the True voxels (scipy's find_objects), None when nothing changed."""
    from scipy import ndimage

    found = ndimage.find_objects(changed.view(np.uint8))
    return found[0] if found else None


class LabelEdit(Command):
    """A change of a label array kept as the bounding block of the changed voxels, before and after."""

    def __init__(
        self,
        target: np.ndarray,
        box: tuple[slice, ...],
        before: np.ndarray,
        after: np.ndarray,
        description: str,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.target, self.box, self.before, self.after = target, box, before, after
        self.on_change = on_change
        self.n_changed = int((before != after).sum())
        super().__init__(description, self._undo, self._redo)

    def _undo(self) -> None:
        self.target[self.box] = self.before
        if self.on_change:
            self.on_change()

    def _redo(self) -> None:
        self.target[self.box] = self.after
        if self.on_change:
            self.on_change()


class WorkingAnnotation:
    """The label map being corrected, on the image's grid, with its changes recorded in a `History`.

    Parameters
    ----------
    grid : Volume
        The image: shape and geometry of the annotation.
    data : ndarray, optional
        Starting labels (copied); default all background.
    history : History, optional
        Shared undo stack (default a new one).
    on_change : callable, optional
        Called after every change, undo and redo (e.g. refresh the napari labels layer).
    """

    def __init__(
        self,
        grid: Volume,
        data: np.ndarray | None = None,
        *,
        history: History | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.grid = grid
        if data is None:
            data = np.zeros(grid.shape, dtype=np.uint8)
        data = np.asarray(data)
        if data.shape != tuple(grid.shape):
            raise InvalidInput(f"The annotation has shape {data.shape} but the image {tuple(grid.shape)}.")
        if data.dtype.kind not in "iub":
            raise InvalidInput(f"An annotation holds integer labels, not {data.dtype} values.")
        self.data = data.astype(np.uint16 if data.max(initial=0) > 255 else np.uint8, copy=True)
        self.history = history if history is not None else History()
        self.on_change = on_change

    def _record(self, new: np.ndarray, description: str) -> LabelEdit | None:
        changed = new != self.data
        box = _bbox(changed)
        if box is None:
            return None
        if new.max(initial=0) > np.iinfo(self.data.dtype).max:
            raise InvalidInput(f"Label {int(new.max())} does not fit the annotation's {self.data.dtype}.")
        edit = LabelEdit(
            self.data, box, self.data[box].copy(), new[box].astype(self.data.dtype), description, self.on_change
        )
        self.history.push(edit, apply=True)
        return edit

    def replace_all(self, labels: np.ndarray, *, description: str) -> LabelEdit | None:
        """Replace the whole map (e.g. start from the ensemble's segmentation); one undo step."""
        labels = np.asarray(labels)
        if labels.shape != self.data.shape:
            raise InvalidInput(f"A label map of shape {labels.shape} cannot replace the {self.data.shape} annotation.")
        return self._record(labels, description)

    def set_organ(self, mask: np.ndarray, label: int, *, description: str, replace: bool = True) -> LabelEdit | None:
        """Accept a result for one organ: its voxels become `label`; with `replace`, voxels of `label` outside
        `mask` become background. Voxels of other organs inside `mask` are overwritten (the accepted result wins)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.data.shape:
            raise InvalidInput(f"The accepted mask has shape {mask.shape} but the annotation {self.data.shape}.")
        new = self.data.copy()
        if replace:
            new[new == label] = 0
        new[mask] = label
        return self._record(new, description)

    def set_organs(self, masks: dict[int, np.ndarray], *, description: str) -> LabelEdit | None:
        """Accept several organs at once (one undo step): each label is replaced by its mask, in the given order."""
        new = self.data.copy()
        for label, mask in masks.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.data.shape:
                raise InvalidInput(f"The accepted mask has shape {mask.shape} but the annotation {self.data.shape}.")
            new[new == label] = 0
            new[mask] = label
        return self._record(new, description)

    def volume(self) -> Volume:
        return self.grid.with_data(self.data, kind=VolumeKind.LABELS, name="working annotation")


def session_root() -> Path:
    """``$SEGUNC_SESSION_DIR``, else ``sessions/`` beside the settings (``$SEGUNC_CONFIG_DIR`` or
    ``~/.napari-segunc``)."""
    from .settings import settings_path

    return Path(os.environ.get(SESSION_ENV) or settings_path().parent / "sessions")


class SessionStore:
    """Autosave folder of one image's review session."""

    ANNOTATION, PROMPTS, META = "annotation.nii.gz", "prompts.json", "session.json"

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="segunc-autosave")
        self._pending: concurrent.futures.Future | None = None
        self.saves = 0
        #: the sentence of the last autosave that failed (disk full, read-only...); None once a save succeeds again
        self.failure: str | None = None

    @classmethod
    def for_image(cls, image: Volume, root: str | os.PathLike | None = None) -> SessionStore:
        """The store of `image` (by its source file; the layer name when it has none)."""
        src = image.source.path if image.source is not None and image.source.path else image.name
        key = hashlib.sha1(str(Path(str(src)).expanduser().absolute()).encode()).hexdigest()[:10]
        stem = Path(str(src)).name.split(".")[0] or "image"
        return cls(Path(root) if root is not None else session_root() / f"{stem}-{key}")

    def exists(self) -> bool:
        return (self.folder / self.META).is_file() and (self.folder / self.ANNOTATION).is_file()

    def save(self, annotation: WorkingAnnotation, prompts: Any = None) -> concurrent.futures.Future:
        """Snapshot now (copies), write in the background; returns the future of the write."""
        volume = annotation.grid.with_data(annotation.data.copy(), kind=VolumeKind.LABELS, name="annotation")
        prompts_dict = prompts.to_dict() if prompts is not None else None
        meta = {
            "saved": time.strftime("%Y-%m-%d %H:%M:%S"),
            "history": annotation.history.descriptions,
            "image": annotation.grid.name,
            "format": "napari-segunc session",
            "version": 1,
        }
        previous = self._pending
        self._pending = self._pool.submit(self._write, volume, prompts_dict, meta, previous)
        return self._pending

    def _write(self, volume: Volume, prompts: dict | None, meta: dict, previous) -> None:
        """Write one snapshot; each file is replaced atomically, so a failed save keeps the previous one whole.

        A failure sets `failure` (and is raised into the future); the next save is tried all the same, so that
        autosaving resumes once the disk has room again.
        """
        if previous is not None:
            concurrent.futures.wait([previous])  # in order; a failure of that one was reported already
        try:
            self._write_files(volume, prompts, meta)
        except (SegUncError, OSError, RuntimeError) as exc:
            from .io.writers import write_error

            reason = write_error(self.folder, exc, folder=self.folder) if not isinstance(exc, SegUncError) else exc
            self.failure = (
                f"Autosave of the review session failed: {reason} The annotation is still in the viewer: export it "
                f"with the Export dock; autosaving resumes at the next edit once the folder has room ({SESSION_ENV} "
                "sets another folder)."
            )
            log.warning("%s", self.failure)
            raise
        if self.failure is not None:
            log.info("autosave works again in %s", self.folder)
        self.failure = None
        self.saves += 1

    def _write_files(self, volume: Volume, prompts: dict | None, meta: dict) -> None:
        from .io import write_volume
        from .io.writers import atomic_write

        self.folder.mkdir(parents=True, exist_ok=True)
        write_volume(volume, self.folder / self.ANNOTATION, overwrite=True)
        prompts_path = self.folder / self.PROMPTS
        if prompts is not None:
            atomic_write(prompts_path, lambda p: p.write_text(json.dumps(prompts, indent=1)), overwrite=True)
        elif prompts_path.exists():
            prompts_path.unlink()
        atomic_write(self.folder / self.META, lambda p: p.write_text(json.dumps(meta, indent=1)), overwrite=True)

    def flush(self, timeout: float | None = 60) -> None:
        """Wait for the writes in flight (raises what a write raised)."""
        if self._pending is not None:
            self._pending.result(timeout)

    def describe(self) -> str:
        meta = json.loads((self.folder / self.META).read_text())
        return f"saved {meta['saved']}, {len(meta['history'])} change(s)"

    def load(self, image: Volume):
        """(labels array, PromptSet or None) saved for `image`; refuses a session of another grid."""
        from .io import read_volume
        from .prompts import load_prompts

        saved = read_volume(self.folder / self.ANNOTATION, kind="labels")
        check_same_grid(image, saved)
        prompts_path = self.folder / self.PROMPTS
        prompts = load_prompts(prompts_path) if prompts_path.is_file() else None
        return np.asarray(saved.data), prompts

    def archive(self) -> Path | None:
        """Move the saved session aside (``<folder>-<date-time>``) so that a new session never overwrites it."""
        self.flush()
        if not self.folder.exists():
            return None
        target = self.folder.with_name(f"{self.folder.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while target.exists():
            n += 1
            target = target.with_name(f"{target.name.split('~')[0]}~{n}")
        self.folder.rename(target)
        log.info("previous session kept in %s", target)
        return target

    def close(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)
