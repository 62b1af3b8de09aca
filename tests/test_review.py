"""Working annotation: multi-level undo/redo over mixed kinds of changes, diff-sized undo records, atomic autosave
that survives a killed process, and restore with a geometry check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.io import read_volume
from napari_segunc.phantom import LABELS, make_phantom, write_phantom
from napari_segunc.prompts import prompts_from_mask
from napari_segunc.review import Command, History, SessionStore, WorkingAnnotation


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    s = make_phantom(seed=1, n_raters=2)
    paths = write_phantom(s, tmp_path_factory.mktemp("review_study"))
    return s, read_volume(paths["image"]), paths


def test_undo_redo_across_label_edits_and_other_commands(study):
    s, image, _ = study
    history = History()
    changes = []
    ann = WorkingAnnotation(image, history=history, on_change=lambda: changes.append(1))
    truth = s.truth.data
    ann.replace_all(s.raters[0].data, description="start from rater 1")
    after_start = ann.data.copy()
    edit = ann.set_organ(truth == LABELS["liver"], LABELS["liver"], description="accept MedSAM2 liver")
    after_liver = ann.data.copy()
    # the liver now equals the truth's liver exactly; the other organs are rater 1's except where the liver won
    assert np.array_equal(ann.data == LABELS["liver"], truth == LABELS["liver"])
    assert edit.n_changed == int((after_start != after_liver).sum()) > 0
    # the undo record holds only the changed block, not the volume
    assert edit.before.size < ann.data.size and edit.before.shape == edit.after.shape
    boxes = {"value": "old"}
    history.push(
        Command("move a box", lambda: boxes.update(value="old"), lambda: boxes.update(value="new")), apply=True
    )
    assert boxes["value"] == "new"
    assert history.descriptions == ["start from rater 1", "accept MedSAM2 liver", "move a box"]

    assert history.undo() == "move a box" and boxes["value"] == "old"
    assert history.undo() == "accept MedSAM2 liver" and np.array_equal(ann.data, after_start)
    assert history.undo() == "start from rater 1" and not ann.data.any()
    assert history.undo() is None and not history.can_undo
    assert history.redo() == "start from rater 1" and np.array_equal(ann.data, after_start)
    assert history.redo() == "accept MedSAM2 liver" and np.array_equal(ann.data, after_liver)
    # a new change after an undo drops what could be redone
    history.undo()
    ann.set_organ(truth == LABELS["spleen"], LABELS["spleen"], description="accept spleen", replace=False)
    assert not history.can_redo and history.descriptions[-1] == "accept spleen"
    assert len(changes) >= 8
    # no-op changes are not recorded
    n = len(history.descriptions)
    assert ann.replace_all(ann.data.copy(), description="nothing") is None and len(history.descriptions) == n


def test_history_limit_and_bad_input(study):
    _, image, _ = study
    history = History(limit=3)
    ann = WorkingAnnotation(image, history=history)
    for i in range(5):
        m = np.zeros(image.shape, bool)
        m[i, :2, :2] = True
        ann.set_organ(m, i + 1, description=f"edit {i}")
    assert history.descriptions == ["edit 2", "edit 3", "edit 4"]
    with pytest.raises(InvalidInput, match="shape"):
        ann.set_organ(np.ones((2, 2, 2), bool), 1, description="x")
    with pytest.raises(InvalidInput, match="integer labels"):
        WorkingAnnotation(image, np.zeros(image.shape, np.float32))


def test_autosave_and_restore(study, tmp_path):
    s, image, _ = study
    store = SessionStore.for_image(image, root=tmp_path / "session")
    ann = WorkingAnnotation(image)
    ann.set_organ(s.truth.data == 1, 1, description="accept liver")
    prompts = prompts_from_mask(s.truth.data, LABELS)
    store.save(ann, prompts)
    store.flush()
    assert store.exists() and store.saves == 1
    meta = json.loads((store.folder / "session.json").read_text())
    assert meta["history"] == ["accept liver"]
    labels, restored_prompts = store.load(image)
    assert np.array_equal(labels, ann.data) and restored_prompts == prompts
    # written in the image's source geometry: re-read as a plain file it lands on the image's grid
    again = read_volume(store.folder / "annotation.nii.gz", kind="labels")
    assert again.shape == image.shape and np.allclose(again.origin, image.origin)
    # another grid is refused
    other = make_phantom(seed=1, n_raters=1, shape=(40, 112, 144)).image
    with pytest.raises(GeometryMismatch):
        store.load(other)
    # a declined session is moved aside under a dated name, never overwritten by the next one
    kept = store.archive()
    assert not store.exists() and kept.parent == store.folder.parent and kept.name.startswith(store.folder.name + "-")
    assert np.array_equal(SessionStore(kept).load(image)[0], ann.data)
    store.close()


def test_default_session_folder_is_outside_the_study(study, monkeypatch, tmp_path):
    _, image, paths = study
    monkeypatch.setenv("SEGUNC_SESSION_DIR", str(tmp_path / "root"))
    store = SessionStore.for_image(image)
    assert store.folder.parent == tmp_path / "root" and store.folder.name.startswith("image-")
    assert SessionStore.for_image(image).folder == store.folder  # same image → same folder
    assert os.path.commonpath([store.folder, paths["image"].parent]) != str(paths["image"].parent)


def test_killing_the_process_loses_at_most_the_change_being_written(study, tmp_path):
    """A child process accepts 20 changes, autosaving each, and is SIGKILLed while it keeps going; the session
    folder then holds a complete, readable earlier state (never a half-written file)."""
    _, image, paths = study
    folder = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from napari_segunc.io import read_volume
        from napari_segunc.review import SessionStore, WorkingAnnotation
        image = read_volume({str(paths["image"])!r})
        store = SessionStore({str(folder)!r})
        ann = WorkingAnnotation(image)
        for i in range(1000):
            m = np.zeros(image.shape, bool); m[i % image.shape[0]] = True
            ann.set_organ(m, 1 + i % 5, description=f"edit {{i}}")
            store.save(ann)
            if i == 3:
                store.flush(); print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = SessionStore(folder)
    assert store.exists()
    labels, _ = store.load(image)
    meta = json.loads((folder / "session.json").read_text())
    n = len(meta["history"])
    assert n >= 4
    # the annotation on disk is the state after some complete edit k ≥ 3: slice k % Z holds label 1 + k % 5
    assert not any(p.name.startswith(".") for p in folder.iterdir() if p.is_file())
    assert labels.max() >= 1 and set(np.unique(labels)) <= {0, 1, 2, 3, 4, 5}


def test_sessions_live_beside_the_settings_unless_told(monkeypatch, tmp_path):
    from napari_segunc.review import session_root

    monkeypatch.delenv("SEGUNC_SESSION_DIR", raising=False)
    monkeypatch.setenv("SEGUNC_CONFIG_DIR", str(tmp_path / "profile"))
    assert session_root() == tmp_path / "profile" / "sessions"  # a fresh profile starts with no sessions
    monkeypatch.setenv("SEGUNC_SESSION_DIR", str(tmp_path / "elsewhere"))
    assert session_root() == tmp_path / "elsewhere"


def test_autosave_on_a_full_disk_keeps_the_last_save_and_resumes_when_there_is_room(study, tmpfs):
    import shutil

    s, image, _ = study
    disk = tmpfs("disk", "size=1m")
    store = SessionStore.for_image(image, root=disk / "session")
    ann = WorkingAnnotation(image)
    ann.set_organ(s.truth.data == 1, 1, description="accept liver")
    store.save(ann)
    store.flush()
    saved = (store.folder / "annotation.nii.gz").read_bytes()
    meta = (store.folder / "session.json").read_text()
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 8192))  # 8 KiB left

    noise = np.random.default_rng(0).integers(0, 6, image.shape).astype(np.uint8)  # does not compress to 8 KiB
    ann.replace_all(noise, description="paint noise")
    with pytest.raises(InvalidInput, match="disk is full"):
        store.save(ann).result(30)
    assert store.failure.startswith("Autosave of the review session failed: Cannot write ")
    assert "the disk is full" in store.failure and "Export dock" in store.failure
    # the last good save is whole, and nothing half-written lies beside it
    assert (store.folder / "annotation.nii.gz").read_bytes() == saved
    assert (store.folder / "session.json").read_text() == meta
    assert sorted(p.name for p in store.folder.iterdir()) == ["annotation.nii.gz", "session.json"]
    with pytest.raises(InvalidInput):  # a second failure is reported too, and does not block the queue
        store.save(ann).result(30)

    filler.unlink()
    ann.set_organ(s.truth.data == 4, 4, description="accept spleen")
    store.save(ann).result(30)
    assert store.failure is None and store.saves == 2
    labels, _ = store.load(image)
    assert np.array_equal(labels, ann.data)
    assert json.loads((store.folder / "session.json").read_text())["history"][-1] == "accept spleen"
    store.close()
