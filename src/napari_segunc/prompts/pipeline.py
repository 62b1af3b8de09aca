"""From files to written results: the job behind ``segunc medsam2``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ..io import read_volume, write_probabilities, write_volume
from ..io.outputs import check_outputs
from ..io.writers import atomic_write
from ..progress import Progress
from ..volume import VolumeKind, check_same_grid
from .boxes import Strategy, is_result_prompts, load_prompts
from .cascade import CascadeResult, MedSAM2Session, first_pass_prompts, mask_prompts

__all__ = ["default_window", "medsam2_files_job", "simulate_clicks_files_job", "write_medsam2_outputs"]

log = logging.getLogger(__name__)

OUTPUTS = ("segmentation.nii.gz", "probabilities.nii.gz", "entropy.nii.gz", "prompts.json", "timings.json")


def default_window(volume) -> tuple[float, float]:
    """The preprocessing window: the volume's default display window (abdomen W400/L40 for CT, percentiles else)."""
    from ..display import contrast_limits, default_preset

    return contrast_limits(default_preset(volume), volume.data)


def medsam2_files_job(
    image_path: str,
    *,
    checkpoint: str | None,
    out: str | Path,
    boxes: str | None = None,
    from_mask: str | None = None,
    init_mask: str | None = None,
    labels: Mapping[str, int] | None = None,
    strategy: Strategy | str = Strategy.B,
    device: str = "auto",
    config: str = "medsam2",
    image_size: int | None = None,
    window: tuple[float, float] | None = None,
    no_enlargement: Iterable[str] | None = None,
    overwrite: bool = False,
) -> Generator[Progress, None, dict]:
    """Read the image and the prompts, run the cascade, write the results.

    The prompts come from one of: `boxes` (a ``boxes.json`` with boxes and corrections, or a result's
    ``prompts.json``, whose final pass is replayed as one pass: the same segmentation), `from_mask` (boxes placed on
    a label map) or `init_mask` (each organ started from its largest slice of a label map, `mask_prompts`).
    Outputs are checked to be writable before the model runs (existing files need `overwrite`).
    """
    from ..inference.medsam2 import load_model

    if sum(x is not None for x in (boxes, from_mask, init_mask)) != 1:
        raise InvalidInput(
            "Give the prompts one way: a prompt file (--prompts/--boxes), a label map to place boxes on (--from-mask) "
            "or a label map to start each organ from (--init-mask)."
        )
    strategy = Strategy(strategy)
    out = Path(out)
    inputs = [image_path, boxes, from_mask, init_mask, checkpoint]
    check_outputs([out / n for n in OUTPUTS], inputs=inputs, overwrite=overwrite)
    t0 = time.perf_counter()
    yield Progress(0, 1, f"reading {image_path}")
    image = read_volume(image_path)
    replay = boxes is not None and is_result_prompts(boxes)
    if boxes is not None:
        prompts = load_prompts(boxes)
        prompts.validate_for(image.shape)
        if replay:
            log.info("%s is a MedSAM2 result: its final pass is replayed as one pass", boxes)
    elif init_mask is not None:
        mask = read_volume(init_mask, kind="labels")
        check_same_grid(image, mask)
        labels = labels or {f"label_{v}": int(v) for v in np.unique(mask.data) if v != 0}
        prompts = mask_prompts(mask.data, labels, source=f"init-mask:{init_mask}")
        if not prompts.organs:
            raise InvalidInput(f"None of the organs {sorted(labels)} is present in {init_mask}: nothing to start from.")
    else:
        mask = read_volume(from_mask, kind="labels")
        check_same_grid(image, mask)
        if labels is None:
            values = [int(v) for v in np.unique(mask.data) if v != 0]
            labels = {f"label_{v}": v for v in values}
        prompts = first_pass_prompts(mask.data, labels, strategy, source=f"mask:{from_mask}")
        if not prompts.organs:
            raise InvalidInput(f"None of the organs {sorted(labels)} is present in {from_mask}: no boxes to run.")
    window = tuple(window) if window is not None else default_window(image)
    yield Progress(0, 1, f"loading the model ({config})")
    model = load_model(checkpoint, config=config, device=device, image_size=image_size)
    t_load = time.perf_counter()
    session = MedSAM2Session(model, image.data, window=window)
    if replay:  # the final pass's prompts alone give the final segmentation
        result = CascadeResult(strategy, [(yield from session.segment_job(prompts))])
    else:
        result = yield from session.cascade_job(prompts, strategy, no_enlargement=no_enlargement)
    timings = {
        "device": str(model.device),
        "config": config,
        "checkpoint": str(model.checkpoint),
        "window": list(window),
        "seconds_reading_and_loading": round(t_load - t0, 3),
        "passes": [
            {"seconds": round(p.seconds, 3), "organs": [o.name for o in p.prompts.organs], "propagated": p.recomputed}
            for p in result.passes
        ],
        "encoder_runs": session.cache.encoder_runs,
        "seconds_total": round(time.perf_counter() - t0, 3),
    }
    written = write_medsam2_outputs(result, image, out, timings=timings, overwrite=overwrite)
    return {"result": result, "written": written, "timings": timings, "notice": model.notice}


def write_medsam2_outputs(
    result: CascadeResult, grid, out: str | Path, *, timings: dict | None = None, overwrite: bool = False
) -> dict[str, Path]:
    """Segmentation, class probabilities (4D), entropy in the image's source geometry; prompts of every pass."""
    from ..io.outputs import relocate, staged_folder

    with staged_folder(out, overwrite=overwrite) as stage:
        written = _write_medsam2_files(result, grid, stage, timings=timings)
    return relocate(written, stage, out)


def _write_medsam2_files(result: CascadeResult, grid, out: Path, *, timings: dict | None) -> dict[str, Path]:
    overwrite = False
    fused = result.final.fused
    written = {
        "segmentation": write_volume(
            grid.with_data(fused.segmentation, kind=VolumeKind.LABELS, name="medsam2 segmentation"),
            out / "segmentation.nii.gz",
            overwrite=overwrite,
        ),
        "probabilities": write_probabilities(
            fused.probabilities, grid, out / "probabilities.nii.gz", overwrite=overwrite
        ),
        "entropy": write_volume(
            grid.with_data(fused.entropy, kind=VolumeKind.FLOAT_MAP, name="medsam2 entropy"),
            out / "entropy.nii.gz",
            overwrite=overwrite,
        ),
    }
    prompts = result.prompts_dict()
    prompts["channels"] = {"background": 0, **{o.name: o.label for o in result.final.prompts.organs}}
    for name, payload in (("prompts", prompts), ("timings", timings or {})):
        text = json.dumps(payload, indent=1)
        written[name] = atomic_write(out / f"{name}.json", lambda p, t=text: p.write_text(t), overwrite=overwrite)
    return written


SIMULATION_OUTPUTS = ("segmentation.nii.gz", "prompts.json", "clicks.csv", "summary.json")


def simulate_clicks_files_job(
    image_path: str,
    truth_path: str,
    *,
    checkpoint: str | None,
    out: str | Path,
    labels: Mapping[str, int] | None = None,
    n_clicks: int = 5,
    box_shift: int = 0,
    device: str = "auto",
    config: str = "medsam2",
    image_size: int | None = None,
    window: tuple[float, float] | None = None,
    overwrite: bool = False,
) -> Generator[Progress, None, dict]:
    """``segunc simulate-clicks``: the CVPR 2025 protocol (`napari_segunc.prompts.simulate`) on one image, written.

    Writes the last segmentation, ``prompts.json`` (the box and every click: ``segunc medsam2 --prompts`` replays
    it), ``clicks.csv`` (one row per step and organ: Dice, the click, seconds) and ``summary.json`` (mean Dice per
    step, DSC-AUC, final Dice, latencies, the model).
    """
    import csv
    import io as _io

    from ..inference.medsam2 import load_model
    from .simulate import simulate_clicks_job

    if n_clicks < 0 or box_shift < 0:
        raise InvalidInput(f"--clicks and --box-shift must be 0 or more, got {n_clicks} and {box_shift}.")
    out = Path(out)
    check_outputs(
        [out / n for n in SIMULATION_OUTPUTS], inputs=[image_path, truth_path, checkpoint], overwrite=overwrite
    )
    yield Progress(0, 1, f"reading {image_path}")
    image = read_volume(image_path)
    truth = read_volume(truth_path, kind="labels")
    check_same_grid(image, truth)
    if labels is None:
        labels = {f"label_{v}": int(v) for v in np.unique(truth.data) if v != 0}
    absent = [n for n, v in labels.items() if v != 0 and not (truth.data == v).any()]
    if absent:
        raise InvalidInput(f"{truth_path} holds no voxel of {', '.join(absent)}; the annotator needs every organ.")
    window = tuple(window) if window is not None else default_window(image)
    yield Progress(0, 1, f"loading the model ({config})")
    model = load_model(checkpoint, config=config, device=device, image_size=image_size)
    session = MedSAM2Session(model, image.data, window=window)
    sim = yield from simulate_clicks_job(session, truth.data, labels, n_clicks=n_clicks, box_shift=box_shift)
    summary = {
        "protocol": "CVPR 2025 interactive: box, then up to 5 clicks at the largest error's deepest voxel",
        "device": str(model.device),
        "config": config,
        "checkpoint": str(model.checkpoint),
        "window": list(window),
        "clicks": n_clicks,
        "box_shift": box_shift,
        "mean_dice_per_step": [round(s.mean_dice, 6) for s in sim.steps],
        "seconds_per_step": [round(s.seconds, 4) for s in sim.steps],
        "dice_auc": round(sim.dice_auc, 6) if n_clicks >= 2 else None,
        "final_dice": round(sim.final_dice, 6),
        "encoder_runs": session.cache.encoder_runs,
        "note": model.notice or "",
    }
    rows = sim.rows()
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "click_zyx": " ".join(map(str, r["click_zyx"])) if r["click_zyx"] else ""} for r in rows)
    from ..io.outputs import relocate, staged_folder

    with staged_folder(out, overwrite=overwrite) as stage:
        seg = image.with_data(sim.segmentation, kind=VolumeKind.LABELS, name="simulated annotator segmentation")
        written = {"segmentation": write_volume(seg, stage / "segmentation.nii.gz", overwrite=False)}
        for name, text in (
            ("prompts", json.dumps(sim.prompts.to_dict(), indent=1)),
            ("clicks", buffer.getvalue()),
            ("summary", json.dumps(summary, indent=1)),
        ):
            suffix = "csv" if name == "clicks" else "json"
            written[name] = atomic_write(
                stage / f"{name}.{suffix}", lambda p, t=text: p.write_text(t, encoding="utf-8"), overwrite=False
            )
    return {"result": sim, "summary": summary, "written": relocate(written, stage, out), "notice": model.notice}
