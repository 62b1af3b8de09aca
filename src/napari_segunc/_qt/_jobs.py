"""One runner for the docks' background jobs: `DockJob`.

Every dock runs its long work (reading files, an ensemble, MedSAM2, metrics, an export) the same way: refuse a second
job while one runs, disable the dock's inputs, start a napari worker (`_worker.start_worker`: errors never reach the
Qt event loop, garbage collections are held off while it runs), show its progress, let Cancel stop it between steps,
show an error in the status line and as a napari notification, and add the result layers one per event-loop turn
(the dock stays busy until the last one is in). Python's full garbage collections stay held off
(`_worker.hold_old_objects_from_gc`) until then: the one CPython owes after a job walks the whole session on the GUI
thread (0.6 s measured in the middle of the ensemble's 16 layers, traced with ``gc.callbacks``).

Progress is shown at most every `DockJob.interval` seconds, the latest report winning, and the bar and the status
line change in one repaint. Each repaint of a dock is a recomposition of napari's whole window, which holds its canvas
(a QOpenGLWidget): 45 ms with software OpenGL (Mesa llvmpipe) at 1600×1000 for the label alone, 95 ms for the label
and the bar painted separately (measured). A job reporting every slice would otherwise keep the window busy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

from ..progress import Progress
from ._worker import add_layers_one_per_turn, release_old_objects_to_gc, start_worker

__all__ = ["DockJob"]

log = logging.getLogger(__name__)


class DockJob:
    """The background job of one dock: its worker, progress bar, status line, Cancel button and disabled inputs.

    Parameters
    ----------
    dock : QWidget
        The dock (parent of the progress timer; repainted once per progress display).
    inputs : callable
        Returns the widgets to disable while a job runs.
    status : QLabel
        The dock's status line.
    progress : QProgressBar, optional
        The dock's progress bar.
    cancel_button : QPushButton, optional
        Enabled while a job runs; it should call `cancel`.
    busy_message : str
        Shown when a second job is asked for while one runs.
    cancel_message : str
        Shown when Cancel is pressed.
    """

    interval = 0.3  # seconds between two progress displays

    def __init__(
        self,
        dock: QWidget,
        *,
        inputs: Callable[[], Iterable[QWidget]],
        status: QLabel,
        progress: QProgressBar | None = None,
        cancel_button: QPushButton | None = None,
        busy_message: str = "Still working on the previous request; wait for it to finish.",
        cancel_message: str = "Cancelling…",
    ) -> None:
        self.dock, self.inputs, self.status, self.progress = dock, inputs, status, progress
        self.cancel_button, self.busy_message, self.cancel_message = cancel_button, busy_message, cancel_message
        self.worker = None
        self.cancel_event = threading.Event()
        self._adding = False
        self._gc_held = False
        self._latest: tuple[int, int, str | None] | None = None
        self._shown_at = float("-inf")
        self._timer = QTimer(dock)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._show_latest)
        if cancel_button is not None:
            cancel_button.setEnabled(False)

    # ------------------------------------------------------------------------------------------ state
    @property
    def busy(self) -> bool:
        """A worker runs, or its result layers are still being added."""
        return self.worker is not None or self._adding

    def refuse_if_busy(self) -> bool:
        """Show `busy_message` and return True when a job runs."""
        if self.busy:
            self.error(self.busy_message)
        return self.busy

    # ------------------------------------------------------------------------------------------ running
    def start(
        self,
        func: Callable[..., Any],
        *args: Any,
        starting: str,
        on_returned: Callable[[Any], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        steps: int | None = 1,
        description: str | None = None,
        **kwargs: Any,
    ):
        """Run ``func(*args, **kwargs)`` in a worker; returns the worker, or None when one already runs.

        `starting` is the status text meanwhile. `on_progress` receives each report the job yields (default: `report`,
        which shows it). `steps`: the bar's initial range (None: a busy bar for a job that cannot report steps).
        A job that can stop takes ``cancel=job.cancel_event`` among `kwargs`.
        """
        if self.refuse_if_busy():
            return None
        self.cancel_event.clear()
        self._drop_progress()
        if self.progress is not None:
            self.progress.setRange(0, 0 if steps is None else max(1, steps))
            self.progress.setValue(0)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(True)
        self.show(starting)

        def returned(result: Any) -> None:
            self._drop_progress()  # a late progress display must not cover the result's message
            if result is not None and self.progress is not None and self.progress.maximum() > 0:
                self.progress.setValue(self.progress.maximum())  # done: the last report may not have been shown
            if on_returned is not None:
                on_returned(result)

        def finished() -> None:
            self.worker = None
            if not self._adding:
                self._release_gc()
            self._drop_progress()
            if self.cancel_button is not None:
                self.cancel_button.setEnabled(False)
            if self.progress is not None and self.progress.maximum() == 0:  # a busy bar stops
                self.progress.setRange(0, 1)
            if on_finished is not None:
                on_finished()

        self.worker = start_worker(
            func,
            *args,
            inputs=self.inputs(),
            on_returned=returned,
            on_yielded=on_progress or self.report,
            on_error=self.error,
            on_finished=finished,
            description=description,
            release_gc=False,
            **kwargs,
        )
        self._gc_held = True
        return self.worker

    def cancel(self) -> None:
        """Ask the job to stop at its next step (it returns None; nothing is added)."""
        if self.worker is not None:
            self.cancel_event.set()
            self.show(self.cancel_message)

    def add_layers(self, viewer: Any, layers: Iterable[tuple], then: Callable[[], None] | None = None) -> None:
        """Add the result layers one per event-loop turn (`_worker.add_layers_one_per_turn`); busy until done."""
        self._adding = True

        def done() -> None:
            self._adding = False
            if self.worker is None:
                self._release_gc()
            if then is not None:
                then()

        add_layers_one_per_turn(viewer, layers, then=done)

    # ------------------------------------------------------------------------------------------ what the user sees
    def report(self, report: Progress, text: str | None = None) -> None:
        """Show a progress report (the bar, and `text` or the report's message): now, or when `interval` has passed
        since the last display — the latest report then wins."""
        message = text if text is not None else report.message or None
        self._latest = (report.step, max(1, report.total), message)
        wait = self._shown_at + self.interval - time.perf_counter()
        if wait <= 0:
            self._show_latest()
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000) + 1)

    def show(self, text: str) -> None:
        """Put `text` in the status line (a pending progress display is dropped)."""
        self._drop_progress()
        self.status.setText(text)

    def error(self, message: str) -> None:
        """An error: the status line, the log and a napari notification."""
        log.warning("%s", message)
        self.show(message)
        show_error(message)

    def _show_latest(self) -> None:
        if self._latest is None:
            return
        step, total, message = self._latest
        self._latest = None
        self._shown_at = time.perf_counter()
        self.dock.setUpdatesEnabled(False)  # the bar and the text in one repaint (one recomposition of the window)
        try:
            if self.progress is not None:
                self.progress.setRange(0, total)
                self.progress.setValue(min(step, total))
            if message is not None:
                self.status.setText(message)
        finally:
            self.dock.setUpdatesEnabled(True)

    def _release_gc(self) -> None:
        if self._gc_held:
            self._gc_held = False
            release_old_objects_to_gc()

    def _drop_progress(self) -> None:
        self._timer.stop()
        self._latest = None
