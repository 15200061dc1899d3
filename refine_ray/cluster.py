"""One way to reach Ray: the cluster this process was started in, else a local one.

`ray job submit` and RAY_ADDRESS make `ray.init()` connect to the running cluster; otherwise it
starts Ray on this machine. Only the store's non-secret settings (endpoint, region) travel in the
runtime env (credentials go with the tasks' arguments, see storage.WorkerCredentials). Workers'
output reaches the driver's console, so progress shows there.
"""
from __future__ import annotations

from typing import Any

from refine_ray import storage


def ensure_ray(**overrides: Any) -> None:
    """`ray.init` once per process, in the one shape every job uses; `overrides` (e.g. num_cpus for a
    benchmark, log_to_driver=False when its figures are the output) go to `ray.init` unchanged."""
    import ray  # heavy; the light modules that import this one must not pay for it

    if ray.is_initialized():
        return
    options: dict[str, Any] = {"runtime_env": storage.driver_runtime_env(),
                               "configure_logging": False, "log_to_driver": True}
    ray.init(**{**options, **overrides})


def torch_threads_for_reserved_cpus() -> None:
    """In a Ray actor or task: torch's threads = the CPUs Ray reserved for it (at least 1). Otherwise they
    follow the node's OMP_NUM_THREADS or core count, and several actors on one node run more threads than
    it has cores."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(round(cpus))))


def actor_pool(least: int, most: int | None, work_items: int) -> int | tuple[int, int]:
    """Ray Data's `concurrency` for an actor pool that scales between `least` and `most` actors.

    `most` None: one actor per work item. Neither bound exceeds the work there is (an idle actor
    holds a CPU or GPU for nothing); equal bounds give a fixed pool.
    """
    top = max(1, min(most or work_items, work_items))
    bottom = max(1, min(least, top))
    return top if bottom == top else (bottom, top)


def actor_pool_strategy(least: int, most: int | None, work_items: int):
    """Ray Data's `compute=` for that pool (`actor_pool`'s bounds)."""
    import ray.data

    bounds = actor_pool(least, most, work_items)
    low, high = bounds if isinstance(bounds, tuple) else (bounds, bounds)
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)
