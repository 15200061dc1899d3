"""Logging for the jobs and the Ray processes they start: one format, one --log-level flag.

Jobs call `add_log_level_argument` and `configure_logging` first thing; the level travels to Ray
workers (training workers get it in their loop config) so that their `log.info` lines reach the
driver's console through Ray's log forwarding.
"""
from __future__ import annotations

import argparse
import logging
import os

LEVELS = ("debug", "info", "warning", "error")
ENV_VAR = "REFINE_RAY_LOG_LEVEL"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LEVELS, default=os.environ.get(ENV_VAR, "info").lower(),
                        help=f"messages shown on the console (default info, or ${ENV_VAR})")


def configure_logging(level: str | int = "info") -> int:
    """Show this project's messages at `level` and above on stderr; returns the numeric level.

    Only the `refine_ray` logger's level is set (Ray's and other libraries' stay as they are); a handler
    is added to the root logger only when none exists (a job started under pytest or Ray keeps theirs).
    """
    numeric = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    logging.getLogger("refine_ray").setLevel(numeric)
    return numeric


def current_level() -> int:
    """The effective level of this project's loggers, to hand to Ray workers."""
    return logging.getLogger("refine_ray").getEffectiveLevel()
