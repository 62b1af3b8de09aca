"""`segunc study` on the demo study (a phantom cohort run by the shipped demo ensemble): every level of seed 000's
Table 1, the committed cases, a resumed rerun, a failed case reported while the others finish, and a worker
killed mid-study on a 2-worker cluster finishing with every row equal to the serial run."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import threading
import time

import numpy as np
import pytest

from napari_segunc.cli import main
from napari_segunc.errors import InvalidInput
from napari_segunc.study import case_folder, read_study, run_study, table1
from napari_segunc.study.demo import write_demo_study

N_CASES = 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(study file, serial run's output folder, its rows): the demo study of N_CASES phantoms, run serially."""
    root = tmp_path_factory.mktemp("study")
    study = write_demo_study(root / "inputs", cases=N_CASES)
    out = root / "serial"
    assert main(["study", str(study), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return study, out, rows


def _key(r):
    return (r["level"], r["group"], r["case"], r["organ"], r["metric"], r["rater"])


def _values(rows):
    return {_key(r): float(r["value"]) if r["value"] not in ("", None) else math.nan for r in rows}


def test_every_level_of_table_1_from_one_command(demo):
    study, out, rows = demo
    spec = read_study(study)
    assert len(spec.cases) == N_CASES and len(spec.members) == 6 and spec.groups == ["rater1", "rater2", "rater3"]
    levels = {}
    for r in rows:
        levels.setdefault(r["level"], set()).add((r["group"], r["case"]))
    assert len(levels["model"]) == 6 * N_CASES  # every member on every case, evaluated as it streamed by
    assert len(levels["group"]) == 3 * N_CASES and len(levels["ensemble"]) == N_CASES
    assert not [r for r in rows if r["metric"] == "error"]
    # the general ensemble segments the unseen phantoms
    dice = [float(r["value"]) for r in rows if r["level"] == "ensemble" and r["metric"] == "dice_consensus"]
    assert len(dice) == 5 * N_CASES and np.mean(dice) > 0.8
    # Table 1: seed 000's rows and columns, with the numbers of the tidy table
    md = (out / "table1.md").read_text(encoding="utf-8").splitlines()
    assert md[0] == "| | DSC (%) | Confidence (%) | ECE (×10⁻³) | CRPS (cm³) | n |"
    assert [line.split("|")[1].strip() for line in md[2:]] == [
        "Individual models",
        "Per-group ensembles",
        "General ensemble",
    ]
    t1 = {r["level"]: r for r in table1(rows)}
    per_case = []
    for case in {r["case"] for r in rows}:
        organs = [
            float(r["value"])
            for r in rows
            if r["level"] == "ensemble"
            and r["case"] == case
            and r["metric"] == "dice_consensus"
            and r["rater"] == "consensus"
        ]
        per_case.append(np.mean(organs))
    assert t1["General ensemble"]["DSC (%)"] == pytest.approx(100 * np.mean(per_case))
    assert t1["Individual models"]["n"] == 6 * N_CASES
    # each case committed whole: its groups' maps in the image's geometry, and its rows
    folder = case_folder(out, spec.cases[0].name)
    assert sorted(p.name for p in folder.iterdir()) == ["all", "rater1", "rater2", "rater3", "rows.json"]
    assert sorted(p.name for p in (folder / "all").iterdir()) == [
        "entropy.nii.gz",
        "mutual_information.nii.gz",
        "segmentation.nii.gz",
    ]
    assert not list((out / "cases").glob(".*"))  # no staging folder left
    # the written maps are rounded to multiples of 2⁻¹² nats; the metrics used the exact ones
    from napari_segunc.io import read_volume
    from napari_segunc.study.spec import MAP_STEP

    written = read_volume(folder / "all" / "entropy.nii.gz", kind="float_map").data.astype(np.float64)
    np.testing.assert_allclose(written / MAP_STEP, np.round(written / MAP_STEP), atol=1e-6)
    exact = next(
        float(r["value"])
        for r in rows
        if r["level"] == "ensemble" and r["case"] == spec.cases[0].name and r["metric"] == "qc_entropy_image"
    )
    assert abs(written.sum() - exact) <= written.size * MAP_STEP / 2 and written.sum() != exact
    assert (out / "compare" / "mannwhitney_dice_consensus.csv").is_file()
    assert (out / "qc" / "qc.csv").is_file()


def test_a_rerun_skips_finished_cases_and_a_failed_case_does_not_stop_the_others(demo, tmp_path, capsys):
    study, out, rows = demo
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("rows.json")}
    t0 = time.perf_counter()
    assert main(["study", str(study), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert time.perf_counter() - t0 < 20  # nothing run again
    assert {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("rows.json")} == stamps
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        assert _values(list(csv.DictReader(fh))) == pytest.approx(_values(rows), nan_ok=True)
    # a case whose rater lies on another grid: one error row naming it, the others finish
    import yaml

    from napari_segunc.io import read_volume, write_volume
    from napari_segunc.volume import Volume, VolumeKind

    spec = yaml.safe_load(study.read_text())
    spec["cases_folder"] = str(study.parent / "cases")
    bad = tmp_path / "bad"
    bad.mkdir()
    first = read_study(study).cases[0]
    image = read_volume(first.image)
    write_volume(image, bad / "image.nii.gz")
    other = Volume(np.zeros((10, 20, 30), np.uint8), spacing=(3.0, 2.0, 2.0), kind=VolumeKind.LABELS)
    write_volume(other, bad / "rater_1.nii.gz")
    spec["cases"] = [{"name": "broken", "image": str(bad / "image.nii.gz"), "raters": [str(bad / "rater_1.nii.gz")]}]
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["study", str(mixed), "--out", str(out), "--workers", "0", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "case broken failed" in err and "GeometryMismatch" in err
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        again = list(csv.DictReader(fh))
    assert [r for r in again if r["metric"] == "error"][0]["case"] == "broken"
    assert _values([r for r in again if r["case"] != "broken"]) == pytest.approx(_values(rows), nan_ok=True)
    assert not case_folder(out, "broken").exists()  # nothing committed for it


def test_a_killed_worker_is_retried_and_the_study_equals_the_serial_run(demo, tmp_path):
    from distributed import Client, LocalCluster

    study, _serial, rows = demo
    spec = read_study(study)
    out = tmp_path / "two_workers"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
        done: dict = {}
        runner = threading.Thread(
            target=lambda: done.setdefault("rows", run_study(spec, out, scheduler=cluster.scheduler_address)),
        )
        runner.start()
        deadline = time.time() + 120
        while time.time() < deadline and not list((out / "cases").glob(".*partial*")):
            time.sleep(0.2)  # a case is being written: its worker is busy with it
        time.sleep(0.5)
        assert runner.is_alive() and len(list((out / "cases").glob("*/rows.json"))) < N_CASES  # mid-study
        os.kill(pids[0], signal.SIGKILL)  # a worker process dies mid-study
        runner.join(timeout=900)
        with pytest.raises(ProcessLookupError):
            os.kill(pids[0], 0)  # it is gone; the nanny started another
    assert not runner.is_alive()
    got = done["rows"]
    assert not [r for r in got if r["metric"] == "error"], [r for r in got if r["metric"] == "error"]
    serial = _values(rows)
    assert set(_values(got)) == set(serial)  # every row
    for key, value in _values(got).items():
        assert value == pytest.approx(serial[key], rel=1e-5, abs=1e-6, nan_ok=True), key
    assert len(list((out / "cases").glob("*/rows.json"))) == N_CASES
    # a rerun finds every case finished, and clears what the killed worker left half-written
    assert _values(run_study(spec, out, workers=0)) == pytest.approx(_values(got), nan_ok=True)
    assert not list((out / "cases").glob(".*"))


def test_study_files_are_checked(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read the study file"):
        read_study(tmp_path / "missing.yaml")
    bad = tmp_path / "s.yaml"
    bad.write_text("cases: [unclosed\n")
    with pytest.raises(InvalidInput, match="s.yaml: cannot read the study file"):
        read_study(bad)
    bad.write_text("cases: []\n")
    with pytest.raises(InvalidInput, match="no case"):
        read_study(bad)
    bad.write_text(json.dumps({"cases": [{"image": "nope.nii.gz", "raters": ["r.nii.gz"]}], "members": []}))
    with pytest.raises(InvalidInput, match="nope.nii.gz does not exist"):
        read_study(bad)
    (tmp_path / "a.nii.gz").write_bytes(b"")
    twice = [{"name": "x", "image": "a.nii.gz", "raters": ["a.nii.gz"]}] * 2
    bad.write_text(json.dumps({"cases": twice}))
    with pytest.raises(InvalidInput, match="x appear more than once"):
        read_study(bad)
    bad.write_text(json.dumps({"cases": twice[:1]}))
    with pytest.raises(InvalidInput, match="no member"):
        read_study(bad)
    assert main(["study", str(bad), "--out", str(tmp_path / "o")]) == 2


def test_each_worker_of_a_local_cluster_takes_its_own_gpu(monkeypatch):
    """No GPU here: the choice is checked with a pretend device count and worker names (dask-cuda's workers each
    see one GPU, so they keep the study's device)."""
    import types

    import distributed
    import torch

    from napari_segunc.study.runner import worker_device

    assert worker_device("cpu") is None and worker_device("auto") is None  # no CUDA on this machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert worker_device("auto") is None  # not inside a worker
    for name, want in ((0, "cuda:0"), (4, "cuda:1"), ("tcp-worker", None)):
        monkeypatch.setattr(distributed, "get_worker", lambda name=name: types.SimpleNamespace(name=name))
        assert worker_device("cuda") == want
    assert worker_device("cuda:2") is None  # a device the study names itself
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_device("auto") is None
