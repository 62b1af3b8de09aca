"""The Dask cluster option shared by the batch jobs (`segunc evaluate-cohort`, `segunc atlas-prompts`)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

__all__ = ["dask_client"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[object]:
    """A `distributed.Client` on `scheduler` (an address), else on a local cluster of `workers` single-threaded
    processes that is shut down on exit (also when the caller stops early)."""
    from distributed import Client, LocalCluster

    cluster = None
    start = time.perf_counter()
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        )
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            log.info("dask: %s (%.1f s to start)", client, time.perf_counter() - start)
            yield client
    finally:
        if cluster is not None:
            cluster.close()
