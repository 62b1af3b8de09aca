"""``segunc evaluate-cohort --workers 2`` starts and stops its Dask cluster quietly: no ``INFO distributed…`` lines, no
CommClosedError traceback at shutdown, and Ctrl-C prints "interrupted" only (no worker tracebacks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_segunc.io import write_probabilities
from napari_segunc.phantom import LABELS, make_phantom, write_phantom

pytest.importorskip("distributed")

N_CLASSES = max(LABELS.values()) + 1


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Two small phantom cases (probabilities: 0.9 on the truth) and their labels.json."""
    root = tmp_path_factory.mktemp("cohort")
    for seed in (0, 1):
        study = make_phantom(seed=seed, n_raters=2, shape=(16, 32, 40))
        paths = write_phantom(study, root / f"case{seed}")
        truth = np.asarray(study.truth.data)
        probs = np.full((N_CLASSES, *truth.shape), 0.1 / (N_CLASSES - 1), np.float32)
        for c in range(N_CLASSES):
            probs[c][truth == c] = 0.9
        write_probabilities(probs, study.image, root / f"case{seed}" / "model.nii.gz")
        assert {"rater_1", "rater_2"} <= set(paths)
    return root


def _manifest(root: Path, copies: int) -> Path:
    lines = ["case,group,probabilities,rater1,rater2"]
    for i in range(copies):
        for seed in (0, 1):
            lines.append(
                f"c{i}s{seed},g{seed},case{seed}/model.nii.gz,case{seed}/rater_1.nii.gz,case{seed}/rater_2.nii.gz"
            )
    path = root / f"manifest_{copies}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _command(root: Path, manifest: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "napari_segunc.cli",
        "evaluate-cohort",
        str(manifest),
        "--out",
        str(out),
        "--labels",
        str(root / "case0" / "labels.json"),
        "--workers",
        "2",
    ]


def _assert_quiet(err: str) -> None:
    noisy = [line for line in err.splitlines() if "distributed" in line or "Traceback" in line or "CommClosed" in line]
    assert noisy == [], err


def test_cohort_on_two_workers_is_quiet(cohort, tmp_path):
    out = tmp_path / "results.csv"
    proc = subprocess.run(
        _command(cohort, _manifest(cohort, 1), out), capture_output=True, text=True, encoding="utf-8", timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    assert "2/2 cases evaluated" in proc.stdout and out.is_file()
    _assert_quiet(proc.stderr)
    assert "2/2" in proc.stderr  # the progress bar stays


@pytest.mark.skipif(sys.platform == "win32", reason="a terminal's Ctrl-C (SIGINT to the process group) is POSIX")
def test_ctrl_c_stops_the_cohort_quietly(cohort, tmp_path):
    """Ctrl-C in a terminal reaches every process of the group, the Dask workers too: only "interrupted" is said."""
    out = tmp_path / "results.csv"
    proc = subprocess.Popen(
        _command(cohort, _manifest(cohort, 200), out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        start_new_session=True,  # its own process group, as a terminal gives a command
    )
    seen: list[str] = []
    running = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            seen.append(line)
            if "/400" in line:  # the first progress line: the workers are running cases
                running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(timeout=120), "".join(seen)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    err = "".join(seen)
    assert proc.returncode == 130, err
    assert "segunc evaluate-cohort: interrupted" in err
    _assert_quiet(err)
    assert not out.exists()
