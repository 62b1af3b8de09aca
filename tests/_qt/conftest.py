"""Fixtures for the napari widget tests (``make_napari_viewer`` and ``qtbot`` come from napari's and pytest-qt's
pytest plugins, registered through their ``pytest11`` entry points).

These tests draw: they need an X display with OpenGL (pytest-xvfb starts Xvfb when ``DISPLAY`` is unset; see
docs/HEADLESS.md). Without one they are skipped with a reason instead of letting Qt abort the test run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_segunc.phantom import make_phantom, write_phantom


def _drawing_unavailable() -> str | None:
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":  # vispy gets no OpenGL: even add_image fails
        return "QT_QPA_PLATFORM=offscreen cannot draw napari's canvas; run under Xvfb (docs/HEADLESS.md)"
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        hint = "" if shutil.which("Xvfb") else " (Xvfb is not installed: apt-get install xvfb, see docs/HEADLESS.md)"
        return "no display for the napari canvas" + hint
    return None


def pytest_collection_modifyitems(config, items):
    reason = _drawing_unavailable()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def phantom_study():
    """The phantom with its default size and three raters (deterministic)."""
    return make_phantom(seed=0, n_raters=3)


@pytest.fixture(scope="session")
def phantom_files(phantom_study, tmp_path_factory) -> dict[str, Path]:
    """The phantom study written as files (``image``, ``truth``, ``rater_1``...)."""
    out = tmp_path_factory.mktemp("phantom_study")
    return {name: Path(p) for name, p in write_phantom(phantom_study, out).items()}


@pytest.fixture
def open_study(make_napari_viewer, qtbot):
    """Factory: ``(viewer, widget)`` with the Open study dock opened from the Plugins menu in a fresh viewer."""

    def factory(*, show: bool = False):
        from napari_segunc._qt._docks import open_dock

        viewer = make_napari_viewer(show=show)
        return viewer, open_dock(viewer, "Open study")[1]

    return factory


@pytest.fixture
def wait_idle(qtbot):
    """Wait until a widget's worker has finished (and its results reached the GUI thread)."""

    def wait(widget, timeout: int = 30_000) -> None:
        qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)
        qtbot.wait(10)

    return wait


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Messages the widget showed with napari's ``show_error``."""
    shown: list[str] = []
    monkeypatch.setattr("napari_segunc._qt._jobs.show_error", shown.append)
    return shown


def _write_dicom_series(folder: Path, data: np.ndarray, *, series_uid: str, description: str, spacing=(0.7, 0.7, 2.0)):
    """Write a (z, y, x) int16 array as an axial CT DICOM series with SimpleITK (one file per slice)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(data.shape[0]):
        sl = sitk.GetImageFromArray(data[k].astype(np.int16))
        sl.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": "CT",
            "0008|0008": "DERIVED\\SECONDARY",
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": series_uid,
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": f"-100\\-120\\{k * spacing[2]:.3f}",
            "0020|0013": str(k + 1),
            "0018|0050": str(spacing[2]),
            "0008|0018": f"{series_uid}.{k + 1}",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid[-1]}_{k:03d}.dcm"))
        writer.Execute(sl)


@pytest.fixture
def two_series_folder(tmp_path) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    """A folder holding two small CT series (different sizes): ``(folder, {series_uid: (z, y, x)})``."""
    folder = tmp_path / "dicom"
    rng = np.random.default_rng(0)
    shapes = {"1.2.826.0.1.3680043.2.1125.9.1": (4, 16, 20), "1.2.826.0.1.3680043.2.1125.9.2": (6, 12, 10)}
    for i, (uid, shape) in enumerate(shapes.items()):
        data = rng.integers(-1000, 200, size=shape)
        _write_dicom_series(folder, data, series_uid=uid, description=f"series {i + 1}")
    return folder, shapes
