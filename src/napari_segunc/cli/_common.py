"""What several ``segunc`` subcommands share: the progress printer, option helpers and small checks of values."""

from __future__ import annotations

import argparse
import math
import sys

from ..errors import InvalidInput

__all__ = [
    "add_dask_options",
    "add_device",
    "add_labels",
    "add_overwrite",
    "add_quiet",
    "add_read_policy",
    "add_trust_pickle",
    "check_quantile",
    "check_table_suffix",
    "parse_window",
    "print_progress",
]


def print_progress(report) -> None:
    """Draw a `Progress` report as a bar on stderr (redrawn in place on a terminal, one line each otherwise)."""
    width = 30
    filled = int(width * report.fraction)
    end = "\n" if report.step >= report.total or not sys.stderr.isatty() else "\r"
    bar = f"[{'#' * filled}{'.' * (width - filled)}]"
    print(f"{bar} {report.step}/{report.total} {report.message}", file=sys.stderr, end=end, flush=True)


def add_overwrite(p: argparse.ArgumentParser, text: str = "replace existing output files") -> None:
    """Add ``--overwrite`` (replace outputs that exist; without it they are refused)."""
    p.add_argument("--overwrite", action="store_true", help=text)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """Add ``-q/--quiet`` (no progress bar)."""
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_device(p: argparse.ArgumentParser) -> None:
    """Add ``--device`` (the torch device of a network, ``auto`` by default)."""
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")


def add_dask_options(p: argparse.ArgumentParser, *, workers_default: int | None, workers_help: str) -> None:
    """Add ``--scheduler`` and ``--workers`` (where a batch job runs: a Dask cluster, a LocalCluster or serially)."""
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=workers_default, help=workers_help)


def add_labels(p: argparse.ArgumentParser, text: str, *, required: bool = False) -> None:
    """Add ``--labels`` (a label table, read by `napari_segunc.labels.parse_labels`)."""
    p.add_argument("--labels", required=required, help=text)


def add_trust_pickle(p: argparse.ArgumentParser) -> None:
    """Add ``--trust-pickle`` (read nnU-Net .pkl geometry files, whose unpickling can run code)."""
    p.add_argument("--trust-pickle", action="store_true", help="read nnU-Net .pkl geometry (unpickling runs code)")


def add_read_policy(p: argparse.ArgumentParser) -> None:
    """Add the readers' explicit exceptions, ``--replace-nonfinite`` and ``--accept-dicom-gaps`` (every subcommand)."""
    p.add_argument("--replace-nonfinite", action="store_true", help="read NaN/±Inf image voxels as 0 (warns)")
    p.add_argument(
        "--accept-dicom-gaps",
        action="store_true",
        help="read DICOM series with missing, duplicate or unevenly spaced slices (warns)",
    )


def check_quantile(q: float) -> None:
    """Refuse a ``--top-q`` outside the open interval (0, 1)."""
    if not 0 < q < 1:
        raise InvalidInput(f"--top-q must lie strictly between 0 and 1 (e.g. 0.99), got {q:g}.")


def check_table_suffix(out: str) -> None:
    """Refuse a results file that is neither .csv nor .json."""
    if not str(out).lower().endswith((".csv", ".json")):
        raise InvalidInput(f"{out}: the results file must end in .csv or .json.")


def parse_window(text: str | None) -> tuple[float, float] | None:
    """``LOW,HIGH`` as an intensity window (None when not given), refusing LOW ≥ HIGH and non-finite values."""
    if not text:
        return None
    try:
        window = tuple(float(v) for v in text.split(","))
    except ValueError:
        window = ()
    if len(window) != 2 or not all(map(math.isfinite, window)) or window[0] >= window[1]:
        raise InvalidInput(f"--window expects LOW,HIGH with LOW < HIGH (e.g. -160,240), got '{text}'.")
    return window
