"""Fault injection for the project's own tests, kept out of every user-facing config.

The tests set REFINE_RAY_TEST_HOOKS to a JSON object, e.g.
  {"fail_at_step": 7, "debug_dump_params": true, "kill_once_marker": "/tmp/killed-once"}
It is read here only, on the driver, when a job starts; the values then travel to the Ray workers
with the job's own arguments (workers of an already running Ray never see a later environment).
  fail_at_step       training: worker 0 exits hard once at this global step (proves resume)
  debug_dump_params  training: every worker saves its weights at checkpoints (proves DDP sync)
  kill_once_marker   refinement: the first actor that finds this path absent creates it and exits
                     hard in the middle of a work unit (proves exactly-once output)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

ENV = "REFINE_RAY_TEST_HOOKS"


@dataclass(frozen=True)
class TestHooks:
    __test__ = False  # not a pytest test class

    fail_at_step: int | None = None
    debug_dump_params: bool = False
    kill_once_marker: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def read_test_hooks() -> TestHooks:
    """The hooks in REFINE_RAY_TEST_HOOKS (none when unset); a malformed value is a clear error."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return TestHooks()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV}: not a JSON object ({exc})") from None
    known = {f.name for f in fields(TestHooks)}
    if not isinstance(data, dict) or set(data) - known:
        raise ValueError(f"{ENV}: expected a JSON object with keys among {sorted(known)}, got {raw!r}")
    return TestHooks(**data)
