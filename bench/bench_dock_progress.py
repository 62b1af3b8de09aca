"""Benchmark: what showing a job's progress costs napari's GUI thread, per report vs through `_jobs.DockJob`.

The MedSAM2 dock is opened from the Plugins menu in a 1600×1000 window (as users see it). A job's reports arrive
every 50 ms for 3 s (one per slice, as MedSAM2's do). Two ways of showing them are compared in the same run:

- baseline : each report sets the progress bar and the status text at once (what the docks did before `DockJob`);
- DockJob  : `DockJob.report`, at most one display every 0.3 s, the bar and the text in one repaint.

A 10 ms QTimer measures the event loop: the time it was held up beyond its 10 ms ticks (summed), and the longest gap.
Each repaint of a dock recomposes the whole window, which holds napari's OpenGL canvas: with software OpenGL (Mesa
llvmpipe under Xvfb) that costs tens of milliseconds; with a GPU driver much less.

Run: ``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python bench/bench_dock_progress.py``
"""

from __future__ import annotations

import time


def _measure(app, show, seconds: float = 3.0, every: float = 0.05) -> tuple[float, float]:
    from qtpy.QtCore import QTimer

    from napari_segunc.progress import Progress

    ticks = [time.perf_counter()]
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    n = int(seconds / every)
    t0 = time.perf_counter()
    for i in range(n):
        while time.perf_counter() < t0 + i * every:
            app.processEvents()
            time.sleep(0.002)
        show(Progress(i + 1, n, f"kidney_left: slice {i + 1} of {n}"))
    while time.perf_counter() < t0 + seconds + 0.5:  # the last delayed display
        app.processEvents()
        time.sleep(0.002)
    timer.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    return sum(max(0.0, g - 0.010) for g in gaps), max(gaps)


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_segunc._qt._docks import open_dock

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    _, widget = open_dock(viewer, "MedSAM2")
    app = QApplication.instance()
    for _ in range(100):
        app.processEvents()
        time.sleep(0.01)

    def per_report(report) -> None:
        widget.progress.setRange(0, report.total)
        widget.progress.setValue(report.step)
        widget.status.setText(report.message)

    (base_held, base_max) = _measure(app, per_report)
    (job_held, job_max) = _measure(app, widget.job.report)
    size = viewer.window._qt_window.size()
    print(f"window {size.width()}x{size.height()}, 60 reports in 3 s")
    print(f"baseline (each report painted): event loop held {base_held:.2f} s, longest gap {base_max * 1000:.0f} ms")
    every = widget.job.interval
    print(f"DockJob (<= 1 display / {every} s): held {job_held:.2f} s, longest gap {job_max * 1000:.0f} ms")
    print(f"GUI time on progress: {base_held / max(job_held, 1e-6):.1f}x less with DockJob")
    viewer.close()


if __name__ == "__main__":
    main()
