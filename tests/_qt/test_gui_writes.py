"""What the docks write, on disks that refuse: an export to a read-only or full disk is refused in one sentence and
leaves nothing (whole or not at all), and a failed autosave warns once while the annotation stays in the viewer.
Every dock is opened from the Plugins menu. The disks are small tmpfs mounts (root only, as in CI)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_segunc._qt._docks import open_dock
from napari_segunc._qt._session import review_for

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend"),
    pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB"),
]


@pytest.fixture
def reviewed(make_napari_viewer, wait_idle, phantom_study):
    """A viewer with the phantom opened from Open study and two organs accepted into its working annotation."""
    viewer = make_napari_viewer()
    _, study = open_dock(viewer, "Open study")
    study.load_phantom(seed=0)
    wait_idle(study)
    state = review_for(viewer, study.image_layer, autosave=False)
    for value in (1, 4):
        state.annotation.set_organ(phantom_study.truth.data == value, value, description=f"accept {value}")
    return viewer, study.image_layer, state


@pytest.mark.parametrize("disk", ["read-only", "full"])
def test_export_to_a_disk_that_refuses_leaves_nothing_and_the_gui_carries_on(
    reviewed, wait_idle, errors, tmpfs, disk, tmp_path
):
    viewer, _image, state = reviewed
    _, widget = open_dock(viewer, "Export")
    if disk == "read-only":
        target = tmpfs("ro", "size=64k,ro")
        expected = "the file system is read-only"
    else:
        target = tmpfs("full", "size=256k")
        filler = target / "someone_elses_file.bin"
        filler.write_bytes(np.random.default_rng(0).bytes(shutil.disk_usage(target).free - 16384))
        expected = "the disk is full"
    before = sorted(p.name for p in target.iterdir())

    planned = widget.export(target)
    wait_idle(widget)
    assert planned, "the export was planned (the folder exists)"
    assert len(errors) == 1 and expected in errors[0] and str(target) in errors[0], errors
    assert sorted(p.name for p in target.iterdir()) == before  # nothing half-written, no staging folder
    assert widget.written == {} and widget.export_button.isEnabled()

    good = tmp_path / "export"  # the same session exports fine elsewhere
    planned = widget.export(good)
    wait_idle(widget)
    assert len(errors) == 1 and widget.written == planned and all(p.is_file() for p in planned.values())
    assert np.array_equal(state.annotation.data, np.asarray(state.layer.data))


def test_a_failed_autosave_warns_once_and_resumes(make_napari_viewer, qtbot, wait_idle, tmpfs, monkeypatch):
    warned: list[str] = []
    monkeypatch.setattr("napari_segunc._qt._session.show_warning", warned.append)
    ro = tmpfs("ro", "size=64k,ro")
    monkeypatch.setenv("SEGUNC_SESSION_DIR", str(ro / "sessions"))
    viewer = make_napari_viewer()
    _, study = open_dock(viewer, "Open study")
    study.load_phantom(seed=0)
    wait_idle(study)
    state = review_for(viewer, study.image_layer)
    assert str(state.store.folder).startswith(str(ro))

    state.annotation.set_organ(np.asarray(study.image_layer.data) > 100, 1, description="accept bright")
    qtbot.waitUntil(lambda: bool(warned), timeout=10_000)
    (message,) = warned
    assert message.startswith("Autosave of the review session failed: Cannot write ")
    assert "read-only" in message and "Export dock" in message and "SEGUNC_SESSION_DIR" in message
    state.annotation.set_organ(np.asarray(study.image_layer.data) > 200, 2, description="accept brighter")
    qtbot.wait(500)
    assert len(warned) == 1  # one warning, not one per edit
    assert state.layer.data.max() == 2  # the edits are in the viewer

    # room again: the next edit saves, and a later failure would warn again
    monkeypatch.setattr(state.store, "folder", ro.parent / "writable" / "session")
    state.annotation.set_organ(np.asarray(study.image_layer.data) > 300, 3, description="accept brightest")
    qtbot.waitUntil(lambda: state.store.failure is None and state.store.exists(), timeout=10_000)
    assert len(warned) == 1
