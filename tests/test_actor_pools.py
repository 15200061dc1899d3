"""Preprocessing and refinement actor pools scale between a minimum and a maximum (Ray Data's
`concurrency=(min, max)`), set from config fields that are also flags; bounds never exceed the work."""
from __future__ import annotations

import pytest

from refine_ray import cli
from refine_ray.cluster import actor_pool
from refine_ray.data.settings import PreprocessSettings
from refine_ray.inference.config import RefineConfig


@pytest.mark.parametrize("least, most, work, expected", [
    (1, None, 40, (1, 40)),      # unbounded: one actor per work item at most
    (2, 8, 40, (2, 8)),
    (1, 8, 3, (1, 3)),           # never more actors than work items
    (4, 8, 3, 3),                # min above the work: a fixed pool of the work's size
    (3, 3, 40, 3),               # equal bounds: a fixed pool
    (1, None, 1, 1),
])
def test_pool_bounds(least, most, work, expected):
    assert actor_pool(least, most, work) == expected


def test_bounds_are_flags_with_autoscaling_defaults():
    refine = {name: key for name, key, _ in cli.model_flags(RefineConfig)}
    assert refine["--min-actors"] == "min_actors" and refine["--num-actors"] == "num_actors"
    prep = {name: key for name, key, _ in cli.model_flags(PreprocessSettings)}
    assert prep["--min-workers"] == "min_workers" and prep["--num-workers"] == "num_workers"
    assert (RefineConfig().min_actors, RefineConfig().num_actors) == (1, None)
    assert (PreprocessSettings().min_workers, PreprocessSettings().num_workers) == (1, None)
    # the pool size does not change what preprocessing writes, so a resumed run may use another one
    assert PreprocessSettings(min_workers=3).fingerprint() == PreprocessSettings().fingerprint()
