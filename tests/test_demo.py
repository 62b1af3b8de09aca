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


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (docs/HEADLESS.md)")
def test_headless_demo_writes_a_screenshot_next_to_an_existing_one(tmp_path):
    import imageio.v3 as iio

    (tmp_path / "demo_screenshot.png").write_bytes(b"user file")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SEGUNC_DEMO_HEADLESS")}
    code = "import sys; from napari_segunc.demo import run_demo; sys.exit(run_demo(out_dir='study'))"
    for _ in range(2):  # the second run reuses the study files
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
    assert (tmp_path / "demo_screenshot.png").read_bytes() == b"user file"
    assert "screenshot saved to" in proc.stdout and "demo_screenshot_v3.png" in proc.stdout
    shot = iio.imread(tmp_path / "demo_screenshot_v2.png")
    assert shot.ndim == 3 and shot.shape[0] > 400 and shot.shape[1] > 400
    rgb = shot[..., :3].astype(int)
    assert rgb.std() > 10  # not blank
    colourful = (np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])) > 60
    assert colourful.sum() > 500  # the rater outlines are drawn in label colours over the gray CT
    # the shipped demo ensemble ran once (the second run reused its maps) and its maps are on screen
    assert proc.stdout.count("running the demo ensemble") == 0
    for name in ("segmentation", "entropy", "mutual_information"):
        assert (tmp_path / "study" / "ensemble" / f"{name}.nii.gz").is_file()
