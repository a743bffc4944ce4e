"""The entry point: parse the command line, set up logging, run the study, say where it is."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

from .config import build_parser, config_from_args

__all__ = ["main"]


def _logging(out: Path) -> None:
    """Stage messages to stderr and to ``out/study.log``."""
    out.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("study")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    form = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(out / "study.log")):
        handler.setFormatter(form)
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study with the command-line arguments ``argv``; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    matplotlib.use("Agg")  # files only, never a window
    from .pipeline import run_study  # after the backend choice; torch loads here
    from .processes import finish, is_main

    if is_main():  # under torchrun only rank 0 logs and reports
        _logging(Path(config.out))
    report = run_study(config)
    if is_main():
        print(f"Report written to {report}")
    finish()
    return 0
