"""Worker body of the MedSAM2 widget (no Qt): load the model when its settings change, keep one session per image,
run the cascade with one core left to napari's GUI thread."""

from __future__ import annotations

import threading

from ..progress import Progress

__all__ = ["medsam2_job"]


def medsam2_job(
    holder: dict,
    image,
    prompts,
    strategy,
    *,
    checkpoint,
    config,
    device,
    image_size,
    window,
    cancel: threading.Event,
    run_all: bool = False,
):
    """Worker body: (re)load the model when its settings changed, reuse the session, run the cascade."""
    import os

    from ..inference.device import torch_threads

    # leave one core to napari's GUI thread (and the X server): on a 2-core machine a worker using both starves it
    with torch_threads(max(1, len(os.sched_getaffinity(0)) - 1)):
        return (
            yield from _medsam2_job(
                holder,
                image,
                prompts,
                strategy,
                checkpoint=checkpoint,
                config=config,
                device=device,
                image_size=image_size,
                window=window,
                cancel=cancel,
                run_all=run_all,
            )
        )


def _medsam2_job(holder, image, prompts, strategy, *, checkpoint, config, device, image_size, window, cancel, run_all):
    from ..inference.medsam2 import load_model
    from ..prompts.cascade import MedSAM2Session

    key = (str(checkpoint), config, device, image_size)
    if holder.get("model_key") != key:
        yield Progress(0, 1, "loading the model")
        holder.clear()
        holder["model"], holder["model_key"] = (
            load_model(checkpoint, config=config, device=device, image_size=image_size),
            key,
        )
    session = holder.get("session")
    if session is None or session.shape != image.shape or holder.get("image") is not image.data:
        session = holder["session"] = MedSAM2Session(holder["model"], image.data, window=window)
        holder["image"] = image.data
    session.set_window(window)
    if run_all:
        session.forget()
    if any(o.corrections for o in prompts.organs):
        job = _corrected_pass(session, prompts, strategy)  # clicks correct the one pass they were made on
    else:
        job = session.cascade_job(prompts, strategy)
    while True:
        try:
            report = next(job)
        except StopIteration as stop:
            return stop.value
        yield report
        if cancel.is_set():
            job.close()
            return None


def _corrected_pass(session, prompts, strategy):
    """One pass of prompts that hold corrections (a cascade's second pass would replace the corrected boxes)."""
    from ..prompts import Strategy
    from ..prompts.cascade import CascadeResult

    one = yield from session.segment_job(prompts)
    return CascadeResult(Strategy(strategy), [one])
