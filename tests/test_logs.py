"""--log-level on every job: the flag exists, and the level it names is the one the project's loggers use."""
from __future__ import annotations

import logging

import pytest

from refine_ray.cli import parser_for
from refine_ray.logs import configure_logging, current_level
from refine_ray.training.config import TrainConfig


def test_every_generated_parser_takes_log_level_and_it_sets_the_level():
    args = parser_for(TrainConfig, "train", None).parse_args(["--log-level", "warning"])
    assert args.log_level == "warning"
    before = logging.getLogger("refine_ray").level
    try:
        configure_logging(args.log_level)
        assert current_level() == logging.WARNING
        assert not logging.getLogger("refine_ray.training.loop").isEnabledFor(logging.INFO)
        configure_logging("debug")
        assert logging.getLogger("refine_ray.data").isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger("refine_ray").setLevel(before)
    with pytest.raises(SystemExit):
        parser_for(TrainConfig, "train", None).parse_args(["--log-level", "loud"])
    with pytest.raises(ValueError, match="loud"):
        configure_logging("loud")
