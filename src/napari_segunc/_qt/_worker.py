"""Thin helpers that run the package's long jobs in napari workers and keep the GUI responsive.

The GUI thread never reads files or computes: a widget hands a function (or a generator that yields progress)
to `start_worker`, which disables the widget's inputs, starts a napari worker thread, re-enables the inputs on
``finished`` whatever happened, and reports errors through ``on_error`` (by default a napari notification).
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QSizePolicy, QWidget

from ..errors import SegUncError

__all__ = [
    "add_layers_one_per_turn",
    "error_message",
    "hold_old_objects_from_gc",
    "import_in_gui_thread",
    "keep_triton_away_from_mesa",
    "release_old_objects_to_gc",
    "set_enabled",
    "start_worker",
    "status_label",
    "warm_up_in_background",
]

log = logging.getLogger(__name__)


def error_message(exc: BaseException) -> str:
    """Text shown to the user: the message alone for the package's own errors, the type name otherwise."""
    if isinstance(exc, SegUncError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _system_llvm_loaded() -> bool:
    """Whether a shared ``libLLVM`` (Mesa's, for llvmpipe or radeonsi OpenGL) is mapped into this process (Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any("libLLVM" in line for line in maps)
    except OSError:
        return False


def keep_triton_away_from_mesa() -> bool:
    """Make ``import triton`` fail softly in this process when it would crash it. Returns whether it did.

    Mesa's OpenGL drivers that compile shaders with LLVM (llvmpipe — Xvfb, VMs, machines without a GPU driver — and
    radeonsi) load ``libLLVM``. Once it is loaded, loading triton's ``libtriton.so`` (its own LLVM) crashes the
    process in LLVM's static initialisers (SIGSEGV in ``llvm::DebugCounter`` / ``DenseMap::grow``), whichever thread
    does it. torch's dynamo imports triton when it is installed, and nnU-Net's predictor imports dynamo. So inside a
    napari window drawn by Mesa, when triton is not loaded yet, ``sys.modules["triton"]`` is set to None: torch then
    sees no triton (it only needs it for ``torch.compile`` kernels, which prediction does not use).
    """
    if "triton" in sys.modules or not _system_llvm_loaded():
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # import triton -> ImportError, torch's own fallback
    log.warning("Mesa's LLVM is loaded (software or radeonsi OpenGL): triton is disabled in this napari session.")
    return True


def import_in_gui_thread(*modules: str) -> None:
    """Import `modules` now, on the GUI thread, rather than first inside a worker (after
    `keep_triton_away_from_mesa`), so that native libraries are initialised while nothing else runs."""
    import importlib

    keep_triton_away_from_mesa()
    for name in modules:
        importlib.import_module(name)


def warm_up_in_background(target: str):
    """Run ``module:function`` in a separate Python process (returns its `subprocess.Popen`, or None if it could not
    start). Used for numba kernels: their first compilation holds the GIL long enough to freeze napari's window
    (~0.4 s measured) when it happens in a worker thread; done in another process it fills numba's on-disk cache, and
    the worker later only loads the compiled code."""
    import subprocess

    module, _, func = target.partition(":")
    code = f"import {module} as m; m.{func}()"
    try:
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:  # no harm: the kernels then compile on first use
        log.warning("could not start the warm-up of %s: %s", target, exc)
        return None


class _GcHold:
    jobs = 0  # jobs running now
    we_froze = False  # whether the first of them froze (else someone else had, and their freeze stays)
    thresholds: tuple[int, ...] = ()  # the collector's thresholds before the first job


#: while a job runs, full collections happen only when asked for (`gc.collect()`); see `hold_old_objects_from_gc`
NO_AUTOMATIC_FULL_COLLECTION = 1 << 30


def hold_old_objects_from_gc() -> None:
    """While a job runs, keep Python's full garbage collections from walking the whole session.

    A napari session holds millions of Python objects (Qt, vispy, torch, the plugin's own). A job that builds many
    (a network, nnU-Net's plans) triggers a full collection in its thread, which walks all of them with the GIL held:
    0.3-0.4 s during which the window cannot repaint (measured at the ensemble's member boundaries with gc.callbacks).
    So, for the job's duration: the objects that exist are frozen (`gc.freeze`: a collection skips them), and the
    automatic full collections are put off (the oldest generation's threshold is raised; the young generations are
    collected as usual). The second matters after the job: a full collection of the few unfrozen objects would make
    CPython's next automatic one, over everything, due at once (its trigger compares with the size the last full
    collection saw) — on the GUI thread, while the results are being added. Reference counting frees everything as
    usual; cycles among old objects wait for `release_old_objects_to_gc`. Nested jobs are counted; a freeze made by
    someone else before the first job is left in place.
    """
    if _GcHold.jobs == 0:
        _GcHold.we_froze = gc.get_freeze_count() == 0
        _GcHold.thresholds = gc.get_threshold()
        if _GcHold.thresholds[0]:  # 0: automatic collection is off; leave it so
            gc.set_threshold(*_GcHold.thresholds[:2], NO_AUTOMATIC_FULL_COLLECTION)
    _GcHold.jobs += 1
    gc.freeze()


def release_old_objects_to_gc() -> None:
    """The end of `hold_old_objects_from_gc` for one job: the last job to finish restores the thresholds and
    unfreezes (if it froze)."""
    _GcHold.jobs = max(0, _GcHold.jobs - 1)
    if _GcHold.jobs == 0:
        if _GcHold.thresholds:
            gc.set_threshold(*_GcHold.thresholds)
        if _GcHold.we_froze:
            gc.unfreeze()


#: milliseconds between two layers added by `add_layers_one_per_turn` (napari draws each new layer in between)
LAYER_INTERVAL_MS = 20


def add_layers_one_per_turn(viewer: Any, layers: Iterable[tuple], then: Callable[[], None] | None = None) -> None:
    """Add `layers` (napari ``(data, kwargs, layer_type)`` tuples) to `viewer` one per turn of the event loop, then
    call `then`. napari builds each layer's canvas visual (shaders, textures) on the GUI thread, 0.1-0.2 s a layer
    with software OpenGL, so a dozen layers at once would freeze the window. Each gets its id and contour
    (`_layers.add_layer`); the colour bar and the canvas legend follow once, on a turn of their own, after the last
    (each colour bar drawn costs ~0.5 s in software: one per map group made a 1.3 s stall)."""
    from ._layers import add_layer, show_colorbar

    pending, added = list(layers), []

    def add_next() -> None:
        if pending:
            added.append(add_layer(viewer, pending.pop(0), legend=False))
        elif added:
            show_colorbar(viewer, added)
            added.clear()
        elif then is not None:
            then()
            return
        else:
            return
        # not 0: a window repaints on a 5 ms timer (QWindow.requestUpdate), after zero-delay calls; with 0 two layers
        # went in before napari drew the first (measured: 1.1-1.4 s stalls with 16 layers)
        QTimer.singleShot(LAYER_INTERVAL_MS, add_next)

    QTimer.singleShot(0, add_next)


#: modules napari imports lazily on the GUI thread when a result's first layer goes in, imported by each job's worker
#: first (if not yet): pandas, for the features table of the first labels/points/shapes layer (0.59 s of the 1.4 s
#: the ensemble's first labels layer took to add, profiled).
WORKER_IMPORTS = ("pandas",)


def _import_for_the_gui() -> None:
    import importlib

    for name in WORKER_IMPORTS:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:  # napari then imports it itself, or does without
                pass


def _with_worker_imports(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (a function or a generator function, which napari runs differently), importing `WORKER_IMPORTS` first."""
    import functools
    import inspect

    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def generator(*args: Any, **kwargs: Any):
            _import_for_the_gui()
            return (yield from func(*args, **kwargs))

        return generator

    @functools.wraps(func)
    def function(*args: Any, **kwargs: Any):
        _import_for_the_gui()
        return func(*args, **kwargs)

    return function


def status_label(text: str, *, fixed_lines: int | None = None) -> QLabel:
    """A dock's word-wrapped status line whose text never resizes the dock sideways: its width follows the dock
    (horizontal size policy Ignored), because a wider dock makes napari resize and redraw its canvas (0.15-0.4 s with
    software OpenGL; measured in the middle of a MedSAM2 run when a long progress message widened the dock from 376
    to 599 px). With `fixed_lines` its height is fixed too (docks that report progress while a job runs); the full
    text of an error also goes to napari's notifications."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    if fixed_lines:
        label.setFixedHeight(fixed_lines * label.fontMetrics().lineSpacing() + 4)
    return label


def set_enabled(widgets: Iterable[QWidget], enabled: bool) -> None:
    """Enable or disable every widget (inputs are disabled while a worker runs)."""
    for w in widgets:
        w.setEnabled(enabled)


def start_worker(
    func: Callable[..., Any],
    *args: Any,
    inputs: Iterable[QWidget] = (),
    on_returned: Callable[[Any], None] | None = None,
    on_yielded: Callable[[Any], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    description: str | None = None,
    release_gc: bool = True,
    **kwargs: Any,
):
    """Run ``func(*args, **kwargs)`` in a napari worker thread.

    Parameters
    ----------
    func : callable
        Plain function, or generator function that yields progress (it can then be stopped between yields
        with ``worker.quit()``).
    inputs : iterable of QWidget
        Disabled while the worker runs, re-enabled on ``finished`` (also after an error or a cancel).
    on_returned, on_yielded : callable, optional
        Connected to the worker's ``returned``/``yielded`` signals (run on the GUI thread).
    on_error : callable, optional
        Called with the message of an exception raised in the worker; `napari.utils.notifications.show_error`
        by default. The exception never reaches the Qt event loop.
    on_finished : callable, optional
        Called last, after the inputs were re-enabled.
    description : str, optional
        Text of napari's activity progress bar.
    release_gc : bool
        Whether ``finished`` ends `hold_old_objects_from_gc`; False: the caller calls `release_old_objects_to_gc`
        (`_jobs.DockJob` does once the result's layers are in).

    Returns
    -------
    WorkerBase
        The started worker.
    """
    inputs = list(inputs)
    report = on_error or show_error

    def _errored(exc: BaseException) -> None:
        if not isinstance(exc, SegUncError):
            log.error("worker %s failed", getattr(func, "__name__", func), exc_info=exc)
        report(error_message(exc))

    def _finished() -> None:
        if release_gc:
            release_old_objects_to_gc()
        set_enabled(inputs, True)
        if on_finished is not None:
            on_finished()

    worker = create_worker(
        _with_worker_imports(func),
        *args,
        _start_thread=False,
        _ignore_errors=True,
        _progress={"desc": description} if description else None,
        **kwargs,
    )
    worker.errored.connect(_errored)
    if on_returned is not None:
        worker.returned.connect(on_returned)
    if on_yielded is not None and hasattr(worker, "yielded"):
        worker.yielded.connect(on_yielded)
    worker.finished.connect(_finished)
    set_enabled(inputs, False)
    hold_old_objects_from_gc()
    worker.start()
    return worker
