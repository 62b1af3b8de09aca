"""`start_worker` keeps the objects that existed before a job out of full garbage collections while it runs.

Why: a full collection started in the worker walks every object of the napari session with the GIL held (0.13-0.55 s
measured at the ensemble's member boundaries, traced with ``gc.callbacks``), and the window cannot repaint meanwhile.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from napari_segunc._qt._worker import (
    NO_AUTOMATIC_FULL_COLLECTION,
    hold_old_objects_from_gc,
    release_old_objects_to_gc,
    start_worker,
)


class _Marker:
    """A container object (tracked by the collector), so that ``gc.get_objects()`` can find it."""


@pytest.fixture(autouse=True)
def _no_freeze_left():
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def _tracked(obj) -> bool:
    """Whether the collector's generations (what a collection walks) hold `obj`: frozen objects are not in them."""
    return any(o is obj for o in gc.get_objects())


def test_hold_and_release_nest_and_free_cycles_afterwards():
    old = _Marker()
    hold_old_objects_from_gc()
    assert gc.get_freeze_count() > 0 and not _tracked(old)
    hold_old_objects_from_gc()  # a second job starts
    release_old_objects_to_gc()  # ... and ends: the first one still runs
    assert not _tracked(old)
    # a cycle among old objects that becomes garbage during the job is freed at the first collection after it
    alive = weakref.ref(old)
    old.self = old
    del old
    gc.collect()
    assert alive() is not None
    release_old_objects_to_gc()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None


def test_automatic_full_collections_wait_for_the_end_of_the_job():
    """Objects made during a job: the young generations are collected, the full collection waits (its trigger would
    otherwise shrink to the few unfrozen objects and fire over the whole session right after the job)."""
    before = gc.get_threshold()
    full = []

    def count(phase, info):
        if phase == "start":
            full.append(info["generation"])

    gc.collect()
    # enough survivors to make a full collection due: more than a quarter of what the last one saw
    n = len(gc.get_objects()) * 2 // 5 + 100_000

    def allocate() -> list:
        return [[i] for i in range(n)]

    gc.callbacks.append(count)
    try:
        kept = [allocate()]
        plain = full.count(2)
        full.clear()
        hold_old_objects_from_gc()
        hold_old_objects_from_gc()
        release_old_objects_to_gc()
        assert gc.get_threshold() == (*before[:2], NO_AUTOMATIC_FULL_COLLECTION)
        kept.append(allocate())
        held, young = full.count(2), full.count(0) + full.count(1)
        release_old_objects_to_gc()
    finally:
        gc.callbacks.remove(count)
    assert gc.get_threshold() == before
    assert plain >= 1 and held == 0 and young > 100, (plain, held, young)


def test_a_freeze_made_by_someone_else_is_left_in_place():
    theirs = _Marker()
    gc.freeze()
    hold_old_objects_from_gc()
    release_old_objects_to_gc()
    assert gc.get_freeze_count() > 0 and not _tracked(theirs)


def test_full_collection_in_a_thread_walks_only_new_objects():
    """The effect itself: a full collection in another thread takes a fraction of the time once the objects that
    exist are frozen (timed against the same collection unfrozen, in the same run)."""
    ballast = [[i] for i in range(1_000_000)]  # a session's worth of container objects (lists are always tracked)

    def collect_in_thread() -> float:
        took = []

        def run():
            t0 = time.perf_counter()
            gc.collect()
            took.append(time.perf_counter() - t0)

        t = threading.Thread(target=run)
        t.start()
        t.join()
        return took[0]

    plain = min(collect_in_thread() for _ in range(2))
    hold_old_objects_from_gc()
    try:
        frozen = min(collect_in_thread() for _ in range(2))
    finally:
        release_old_objects_to_gc()
    assert len(ballast) == 1_000_000
    assert frozen < plain / 5, f"full collection {frozen * 1000:.1f} ms frozen vs {plain * 1000:.1f} ms plain"


@pytest.mark.parametrize("fails", [False, True])
def test_start_worker_freezes_for_the_job_only(qtbot, fails):
    seen = {}

    def job():
        seen["frozen"] = gc.get_freeze_count() > 0
        if fails:
            raise ValueError("bad input")
        return 1

    errors: list[str] = []
    finished: list[int] = []
    start_worker(job, on_error=errors.append, on_finished=lambda: finished.append(gc.get_freeze_count()))
    qtbot.waitUntil(lambda: len(finished) > 0, timeout=10_000)
    assert finished == [0]  # thawed before the dock's own end-of-job handler
    assert seen["frozen"] is True
    assert gc.get_freeze_count() == 0
    assert errors == (["ValueError: bad input"] if fails else [])
