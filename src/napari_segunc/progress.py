"""Progress reports of long jobs. Long work is a generator that yields `Progress` and returns its result;
the CLI prints the reports, the widgets run the generator in a napari worker (ARCHITECTURE.md convention 2)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import Any, TypeVar

__all__ = ["Progress", "run_job"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Progress:
    """Step `step` of `total` (1-based) done; `message` says what."""

    step: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


def run_job(job: Generator[Progress, Any, T], on_progress: Callable[[Progress], object] | None = None) -> T:
    """Drive a job generator to the end, passing each report to `on_progress`; returns the job's result."""
    while True:
        try:
            report = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(report)
