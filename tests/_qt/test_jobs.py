"""`_jobs.DockJob`, the docks' one job runner: a second job refused, inputs disabled while it runs, progress shown at
most every `interval` (latest report wins, bar and text together), Cancel, errors in the status line and as a
notification, result layers added one per turn with the dock busy until the last one."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtWidgets import QLabel, QLineEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_segunc._qt._jobs import DockJob
from napari_segunc.errors import InvalidInput
from napari_segunc.progress import Progress

pytestmark = [pytest.mark.gui, pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend")]


@pytest.fixture
def dock(qtbot, monkeypatch):
    widget = QWidget()
    widget.edit, widget.status, widget.bar, widget.cancel = QLineEdit(), QLabel(), QProgressBar(), QPushButton()
    layout = QVBoxLayout(widget)
    for w in (widget.edit, widget.status, widget.bar, widget.cancel):
        layout.addWidget(w)
    qtbot.addWidget(widget)
    widget.errors = []
    monkeypatch.setattr("napari_segunc._qt._jobs.show_error", widget.errors.append)
    widget.job = DockJob(
        widget,
        inputs=lambda: [widget.edit],
        status=widget.status,
        progress=widget.bar,
        cancel_button=widget.cancel,
        busy_message="busy!",
        cancel_message="stopping",
    )
    return widget


def _steps(n: int, cancel: threading.Event, release: threading.Event):
    for i in range(n):
        release.wait(5)
        if cancel.is_set():
            return None
        yield Progress(i + 1, n, f"step {i + 1}")
    return n


def test_a_job_disables_its_inputs_refuses_a_second_and_shows_its_result(dock, qtbot):
    release, results = threading.Event(), []
    assert not dock.cancel.isEnabled()
    dock.job.start(_steps, 3, dock.job.cancel_event, release, starting="working", on_returned=results.append)
    assert dock.job.busy and not dock.edit.isEnabled() and dock.cancel.isEnabled()
    assert dock.status.text() == "working"
    assert dock.job.start(_steps, 1, dock.job.cancel_event, release, starting="again") is None
    assert dock.errors == ["busy!"] and dock.status.text() == "busy!"
    release.set()
    qtbot.waitUntil(lambda: not dock.job.busy, timeout=10_000)
    assert results == [3] and dock.edit.isEnabled() and not dock.cancel.isEnabled()
    assert dock.bar.value() == dock.bar.maximum() == 3  # done is 100 %, whichever report was shown last


def test_cancel_stops_between_steps(dock, qtbot):
    release, results = threading.Event(), []
    dock.job.start(_steps, 100, dock.job.cancel_event, release, starting="working", on_returned=results.append)
    dock.job.cancel()
    assert dock.status.text() == "stopping"
    release.set()
    qtbot.waitUntil(lambda: not dock.job.busy, timeout=10_000)
    assert results == [None]


def test_an_error_is_shown_and_the_dock_is_usable_again(dock, qtbot):
    def fails():
        raise InvalidInput("image.nii.gz is truncated: export it again.")

    dock.job.start(fails, starting="reading")
    qtbot.waitUntil(lambda: not dock.job.busy, timeout=10_000)
    assert dock.errors == ["image.nii.gz is truncated: export it again."]
    assert dock.status.text() == dock.errors[0] and dock.edit.isEnabled()


def test_progress_is_shown_at_most_every_interval_latest_first(dock, qtbot):
    job = dock.job
    job.interval = 0.5
    shown = []
    original = job._show_latest
    job._show_latest = lambda: (original(), shown.append((dock.bar.value(), dock.bar.maximum(), dock.status.text())))
    job._timer.timeout.disconnect()
    job._timer.timeout.connect(job._show_latest)
    t0 = time.perf_counter()
    for i in range(1, 51):  # 50 reports in a burst
        job.report(Progress(i, 50, f"slice {i}"))
    assert shown == [(1, 50, "slice 1")]  # the first at once
    qtbot.waitUntil(lambda: len(shown) == 2, timeout=5_000)
    assert time.perf_counter() - t0 >= 0.45
    assert shown[1] == (50, 50, "slice 50")  # then the latest, in one go; the 48 between were never painted
    qtbot.wait(700)
    assert len(shown) == 2  # nothing pending
    job.report(Progress(3, 4, "late"))  # the interval has passed: shown at once
    assert shown[2] == (3, 4, "late")
    job.report(Progress(4, 4, "later"))
    job.show("done")  # a message drops the pending report
    qtbot.wait(700)
    assert len(shown) == 3 and dock.status.text() == "done"


def test_result_layers_are_added_one_per_turn_and_the_dock_is_busy_until_the_last(dock, make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    counts, done = [], []
    viewer.layers.events.inserted.connect(lambda _e: counts.append(len(viewer.layers)))
    layers = [(np.full((4, 5, 6), i, np.float32), {"name": f"map {i}"}, "image") for i in range(3)]
    dock.job.add_layers(viewer, layers, then=lambda: done.append(dock.job.busy))
    assert dock.job.busy and len(viewer.layers) == 0  # nothing added in the same turn
    qtbot.waitUntil(lambda: bool(done), timeout=5_000)
    assert counts == [1, 2, 3] and done == [False] and not dock.job.busy
    assert [la.name for la in viewer.layers] == ["map 0", "map 1", "map 2"]
