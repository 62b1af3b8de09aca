"""``segunc demo``: the phantom study in napari (a screenshot PNG when there is no display)."""

from __future__ import annotations

import argparse

from ..demo import add_demo_arguments, run_demo

__all__ = ["add_commands"]


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(out_dir=args.out_dir, screenshot=args.screenshot, seed=args.seed)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``segunc`` subparsers."""
    p = sub.add_parser("demo", help="the phantom study in napari (a PNG without a display)")
    add_demo_arguments(p)
    p.set_defaults(func=_cmd_demo)
