"""The ``segunc`` command line. Headless: it never imports Qt or napari (``segunc demo`` loads them lazily).

Every user error ends with one sentence on stderr naming the file and the problem, and exit code 2 (`EXIT_ERROR`);
``--debug`` adds the traceback. Each command group is a module with an ``add_commands(sub)`` (`io`, `uncertainty`,
`metrics`, `inference`, `prompts`, `study`, `demo`); what they share is in `_common`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import SegUncError
from . import demo, inference, io, metrics, prompts, study, uncertainty
from ._common import add_read_policy

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "build_parser", "main"]

#: The command did what was asked.
EXIT_OK = 0
#: An input was refused (a `SegUncError`): one sentence on stderr says which and why.
EXIT_ERROR = 2
#: Interrupted (Ctrl+C), as a shell reports SIGINT.
EXIT_INTERRUPTED = 130
#: The reader of stdout left (``segunc info … | head``), as a shell reports SIGPIPE.
EXIT_BROKEN_PIPE = 141

log = logging.getLogger("napari_segunc")

#: The command groups, in the order of ``segunc --help``.
_GROUPS = (io, uncertainty, metrics, inference, prompts, study, demo)


class _OneLineEach(argparse.HelpFormatter):
    """``segunc --help`` lists each command on one line in an 80-column terminal (help texts stay ≤ 56 characters).

    argparse measures the commands at the group's indent (2) but prints them at 4, so the longest one
    (``export-dicom-seg``) would push its help to the next line: start the measured width at the printed one.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=22)
        self._action_max_length = 20  # "    export-dicom-seg"


def build_parser() -> argparse.ArgumentParser:
    """The ``segunc`` argument parser: the global options, then every command group's subcommands."""
    parser = argparse.ArgumentParser(
        prog="segunc",
        description="Review medical image segmentation with its uncertainty (napari-segunc).",
        formatter_class=_OneLineEach,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is read and written")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in _GROUPS:
        group.add_commands(sub)
    for p in sub.choices.values():  # the readers' explicit exceptions, on every subcommand
        add_read_policy(p)
    return parser


class _Formatter(logging.Formatter):
    """Warnings read ``segunc CMD: warning: …`` like the errors; --verbose/--debug records keep their logger name."""

    def __init__(self, command: str) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.WARNING:
            return f"segunc {self.command}: warning: {record.getMessage()}"
        return super().format(record)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segunc`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = logging.StreamHandler()  # on the package's logger, replacing an earlier call's (tests call main often)
    handler.setFormatter(_Formatter(args.command))
    for old in [h for h in log.handlers if isinstance(h.formatter, _Formatter)]:
        log.removeHandler(old)
    log.addHandler(handler)
    log.setLevel(level)
    from ..io import read_policy

    try:
        with read_policy(replace_nonfinite=args.replace_nonfinite, accept_dicom_gaps=args.accept_dicom_gaps):
            return int(args.func(args) or EXIT_OK)
    except SegUncError as exc:
        if args.debug:
            raise
        print(f"segunc {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"segunc {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `segunc info … | head`: the reader left; say nothing more
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return EXIT_BROKEN_PIPE
