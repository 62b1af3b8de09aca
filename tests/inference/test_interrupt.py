"""Ctrl-C during ``segunc predict``: the running member stops at its next tile, its thread is joined, exit code 130.

Without the join the interpreter exits while a torch thread still runs, and dies with SIGABRT ("terminate called
without an active exception") instead of printing "interrupted".
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from napari_segunc.cli import main

pytest.importorskip("torch")
pytest.importorskip("nnunetv2")


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_during_predict_exits_130_without_a_traceback(tmp_path):
    assert main(["phantom", str(tmp_path / "study")]) == 0
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "napari_segunc.cli",
            "predict",
            str(tmp_path / "study" / "image.nii.gz"),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env,
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if "sliding-window tile" in line:  # a member is running in its worker thread
                proc.send_signal(signal.SIGINT)
                break
        else:
            pytest.fail("no sliding-window tile was reported within 120 s")
        assert any("sliding-window tile" in s for s in seen), "".join(seen)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    while not lines.empty():
        line = lines.get_nowait()
        seen.append(line or "")
    err = "".join(seen)
    assert proc.returncode == 130, err
    assert "segunc predict: interrupted" in err
    assert "Traceback" not in err and "terminate called" not in err, err
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert written == [], written
