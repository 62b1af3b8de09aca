"""``segunc demo`` headless: it re-runs itself under xvfb-run and leaves a screenshot, never overwriting files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from napari_segunc import demo
from napari_segunc.errors import InvalidInput


def test_no_display_and_no_xvfb_exits_2_with_advice(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("SEGUNC_DEMO_HEADLESS", raising=False)
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    assert demo.run_demo(out_dir=tmp_path / "data") == 2
    err = capsys.readouterr().err
    assert "xvfb" in err and "desktop" in err
    assert not (tmp_path / "data").exists()  # nothing written before giving up


def test_partial_study_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "image.nii.gz").write_bytes(b"user file")
    with pytest.raises(InvalidInput, match="never overwritten"):
        demo._study_files(out, seed=0)
    assert (out / "image.nii.gz").read_bytes() == b"user file"


def _near(rgb: np.ndarray, colour: str, tol: int = 40) -> int:
    """Pixels within `tol` (per channel) of ``#rrggbb``."""
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target) <= tol).all(axis=-1).sum())


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (docs/HEADLESS.md)")
def test_headless_demo_writes_a_screenshot_next_to_an_existing_one(tmp_path):
    import imageio.v3 as iio

    from napari_segunc.organs import RATER_COLORS

    (tmp_path / "demo_screenshot.png").write_bytes(b"user file")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SEGUNC_DEMO_HEADLESS")}
    code = "import sys; from napari_segunc.demo import run_demo; sys.exit(run_demo(out_dir='study'))"
    runs = []
    for _ in range(2):  # the second run reuses the study files and the ensemble's maps
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs.append(proc)
    assert (tmp_path / "demo_screenshot.png").read_bytes() == b"user file"
    # one line per step, and nothing else: no library noise (nnU-Net's CPU notice, ITK, Qt, napari, triton...)
    first, second = (proc.stdout.splitlines() for proc in runs)
    assert len(first) == 3 and len(second) == 3, runs[0].stdout + runs[1].stdout
    assert first[0].startswith("phantom study (seed 0) written to")
    assert first[1].startswith("demo ensemble: running its 6 nnU-Net models") and "maps written to" in first[1]
    assert first[2].startswith("screenshot of the window saved to") and first[2].endswith("demo_screenshot_v2.png")
    assert second[0].startswith("phantom study: reusing") and second[1].startswith("demo ensemble: reusing")
    assert second[2].endswith("demo_screenshot_v3.png")
    for proc in runs:
        assert "perform_everything_on_device" not in proc.stdout + proc.stderr
        assert proc.stderr.strip() == "", proc.stderr
    for name in ("segmentation", "entropy", "mutual_information"):
        assert (tmp_path / "study" / "ensemble" / f"{name}.nii.gz").is_file()

    shot = iio.imread(tmp_path / "demo_screenshot_v3.png")[..., :3].astype(int)
    height, width = shot.shape[:2]
    assert width >= 1500 and width > 1.4 * height  # the whole 1600 × 1000 window, landscape
    assert shot.std() > 10  # not blank
    for colour in RATER_COLORS[:3]:  # each rater's outline in its own colour, over the CT
        assert _near(shot, colour) > 300, colour
    docks = shot[:, int(0.78 * width) :]  # the Open study / Ensemble docks on the right: text and controls
    assert docks.std() > 10
