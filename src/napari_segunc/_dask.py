"""The Dask cluster option shared by the batch jobs (`segunc evaluate-cohort`, `segunc atlas-prompts`).

Dask starts and stops quietly: its ``distributed`` loggers say only errors while the job runs and nothing while the
cluster shuts down (where it logs closed connections, with tracebacks, at INFO), unless napari-segunc itself logs at
INFO or DEBUG (``--verbose``, ``--debug``). The local workers ignore Ctrl-C: it reaches every process of the terminal,
and the workers would each print a traceback; the command stops them itself.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator

__all__ = ["dask_client"]

log = logging.getLogger(__name__)

#: loggers Dask talks through while it runs, and also while it shuts down (its tornado and asyncio event loops)
_RUN_LOGGERS = ("distributed", "bokeh")
_CLOSE_LOGGERS = (*_RUN_LOGGERS, "tornado", "asyncio")
_CLOSE_TIMEOUT_S = 10


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None, *, gpus: bool = False) -> Iterator[object]:
    """A `distributed.Client` on `scheduler` (an address), else on a local cluster of `workers` single-threaded
    processes that is shut down on exit (also when the caller stops early or on Ctrl-C). With `gpus`, one worker
    per GPU: dask-cuda's `LocalCUDACluster` when it is installed (each worker sees its own GPU as ``cuda:0``),
    otherwise `workers` plain workers that pick their GPU by their index (`napari_segunc.study.runner.worker_device`).
    """
    from distributed import Client, LocalCluster

    verbose = logging.getLogger("napari_segunc").getEffectiveLevel() <= logging.INFO
    start = time.perf_counter()
    with _quiet(None if verbose else logging.ERROR, _RUN_LOGGERS):
        cluster = client = None
        try:
            if scheduler is None:
                # an ignored signal is inherited by the spawned worker processes (a handler is not): Ctrl-C then
                # interrupts this process only, which stops them; it is ignored here too while they start (1-3 s)
                with _ignore_ctrl_c():
                    # silence_logs: what the worker processes log; a case's error comes back through its future,
                    # and what they log at ERROR is otherwise the shutdown's lost connections (with tracebacks)
                    options = dict(
                        threads_per_worker=1,
                        dashboard_address=None,
                        silence_logs=False if verbose else logging.CRITICAL,
                    )
                    cuda = _cuda_cluster() if gpus else None
                    if cuda is not None:
                        cluster = cuda(**options)
                    else:
                        cluster = LocalCluster(n_workers=workers, processes=True, **options)
            client = Client(cluster if cluster is not None else scheduler)
            log.info("dask: %s (%.1f s to start)", client, time.perf_counter() - start)
            yield client
        finally:
            _shut_down(client, cluster, verbose)


def _cuda_cluster():
    """dask-cuda's `LocalCUDACluster`, or None when it is not installed."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        return None
    return LocalCUDACluster


def _shut_down(client, cluster, verbose: bool) -> None:
    """Close the client, then the cluster it used (its scheduler, nannies and workers), saying nothing.

    A second Ctrl-C while this runs (a second or two) is ignored, so the workers are never left half-stopped.
    """
    with _quiet(None if verbose else logging.CRITICAL, _CLOSE_LOGGERS), _ignore_ctrl_c():
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=_CLOSE_TIMEOUT_S)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=_CLOSE_TIMEOUT_S)


@contextlib.contextmanager
def _quiet(level: int | None, roots: tuple[str, ...]) -> Iterator[None]:
    """Raise the `roots` loggers (and their children with a level of their own) to at least `level`, then restore.

    ``None`` changes nothing (the user asked for Dask's INFO logging with ``--verbose`` or ``--debug``).
    """
    if level is None:
        yield
        return
    manager = logging.Logger.manager
    names = {
        name
        for name, obj in list(manager.loggerDict.items())
        if isinstance(obj, logging.Logger) and obj.level != logging.NOTSET and name.split(".")[0] in roots
    } | set(roots)
    saved = {name: logging.getLogger(name).level for name in names}
    for name, old in saved.items():
        if old < level:
            logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


@contextlib.contextmanager
def _ignore_ctrl_c() -> Iterator[None]:
    """SIGINT ignored in this process meanwhile (from the main thread only: signal handlers belong to it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
