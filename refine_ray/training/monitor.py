"""The driver's view of a training run: its resource plan, its progress on the console, and a stall
watchdog — whatever Ray does with the workers' own output (log_to_driver may be off, `ray job
submit` may be following another process).

The workers' rank 0 rewrites `<run>/metrics.jsonl` at every log line (training/loop.py); the
driver polls it, prints stage, iteration, samples/s and validation MAE, and counts a new record as
progress. No new record for `workers.stall_timeout_s` stops the run with a diagnosis of the
resources it asked for and those the cluster has, instead of waiting forever.
"""
from __future__ import annotations

import _thread
import json
import sys
import threading
import time
from typing import Any, Callable, TextIO

from refine_ray import storage


class TrainingStalled(ValueError):
    """The run made no progress for the configured time; the message says what it waits for."""


class ResourcePlanError(ValueError):
    """No worker CPU share can work on this cluster; the message says what to change."""


DATA_CPUS = 1.0   # Ray Data's read and decode tasks ask for one CPU each


def plan_cpus_per_worker(requested: float | None, num_workers: int, cluster_cpus: float,
                         log: Callable[[str], None] = print) -> float:
    """The CPU share of each training worker.

    Unset: 1, or less when the workers would otherwise take every CPU and leave Ray Data none (then
    the job would wait forever for its input); refused only when no share can leave it one. Set:
    honoured, with a warning when this cluster cannot give it now (an autoscaler may add nodes).
    A cluster showing no CPUs at all (a head node that only schedules) is left to its autoscaler.
    """
    if requested is not None:
        if cluster_cpus and num_workers * requested + DATA_CPUS > cluster_cpus:
            log(f"[train] warning: {num_workers} worker(s) × {requested:g} CPU leave Ray Data less than "
                f"{DATA_CPUS:g} CPU of this cluster's {cluster_cpus:g}; the run waits until more CPUs join "
                "(leave workers.cpus_per_worker unset to size it for this cluster)")
        return requested
    if not cluster_cpus or num_workers + DATA_CPUS <= cluster_cpus:
        return 1.0
    share = (cluster_cpus - DATA_CPUS) / num_workers
    if share < 0.01:
        raise ResourcePlanError(
            f"this Ray cluster has {cluster_cpus:g} CPU(s): training needs {DATA_CPUS:g} for Ray Data plus a share "
            f"for each of its {num_workers} worker(s); give Ray more CPUs (ray start --num-cpus) or join a cluster")
    share = float(f"{share:.3g}")
    log(f"[train] {num_workers} worker(s) × {share:g} CPU, leaving Ray Data {cluster_cpus - num_workers * share:g} "
        f"of this cluster's {cluster_cpus:g} CPUs")
    return share


def describe_resources(num_workers: int, per_worker: dict[str, float]) -> str:
    """Requested vs available resources, in one line (for a stalled run)."""
    import ray

    def fmt(res: dict[str, float]) -> str:
        keys = [k for k in ("CPU", "GPU") if k in res or k in per_worker]
        return "{" + ", ".join(f"{k}: {res.get(k, 0):g}" for k in keys) + "}"

    return (f"it asks for {num_workers} worker(s) × {fmt(per_worker)} plus {DATA_CPUS:g} CPU for Ray Data; "
            f"the cluster has {fmt(ray.cluster_resources())} in all, {fmt(ray.available_resources())} free now")


def _line(rec: dict[str, Any], rate: float | None, val: dict[str, Any] | None) -> str | None:
    kind = rec.get("kind")
    where = f"stage {rec.get('stage')} ({rec.get('resolution')}x{rec.get('resolution')})"
    if kind == "train":
        parts = [f"[train] {where} it {rec.get('iteration')}"]
        if rate:
            parts.append(f"{rate:.1f} samples/s")
        if val:
            parts.append(f"last val mae_norm {val.get('mae_norm', float('nan')):.4f}")
        return ", ".join(parts)
    if kind == "val":
        return (f"[train] {where} validation: mae_norm {rec.get('mae_norm', float('nan')):.4f} "
                f"(coarse {rec.get('coarse_mae_norm', float('nan')):.4f}), mae_mm {rec.get('mae_mm', float('nan')):.3f}")
    if kind == "stage_end":
        return f"[train] {where} done: {rec.get('samples_per_s', 0.0):.1f} samples/s"
    if kind == "resume":
        return f"[train] resumed at stage {rec.get('stage')} iteration {rec.get('iteration')}"
    return None


class RunMonitor:
    """Polls a run's metrics.jsonl in a thread: prints new records, and on a stall interrupts the
    main thread (trainer.fit) after recording the diagnosis in `stalled`."""

    def __init__(self, metrics_uri: str, samples_per_step: int, stall_timeout_s: float,
                 diagnose: Callable[[], str], poll_s: float = 5.0, out: TextIO | None = None):
        self.uri, self.samples_per_step = metrics_uri, samples_per_step
        self.stall_timeout_s, self.diagnose, self.poll_s = stall_timeout_s, diagnose, poll_s
        self.out = out or sys.stderr
        self.stalled: str | None = None
        self._stop = threading.Event()
        self._seen = {self._key(r) for r in self._records()}   # a resumed run's earlier records
        self._thread = threading.Thread(target=self._run, name="train-monitor", daemon=True)
        self._last: tuple[float, int] | None = None            # (worker time, step) of the last train record
        self._val: dict[str, Any] | None = None

    @staticmethod
    def _key(rec: dict[str, Any]) -> tuple:
        return rec.get("kind"), rec.get("step"), rec.get("stage")

    def _records(self) -> list[dict[str, Any]]:
        try:
            text = storage.read_text(self.uri)
        except (FileNotFoundError, OSError):
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def __enter__(self) -> "RunMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.poll_s + 5)
        self.poll()   # the last lines of a finished run

    def poll(self) -> bool:
        """Print records not seen yet; True when there were any (progress)."""
        fresh = [r for r in self._records() if self._key(r) not in self._seen]
        for rec in fresh:
            self._seen.add(self._key(rec))
            rate = None
            if rec.get("kind") == "train" and isinstance(rec.get("time"), (int, float)):
                when, step = float(rec["time"]), int(rec.get("step") or 0)   # the worker's clock
                if self._last and step > self._last[1] and when > self._last[0]:
                    rate = (step - self._last[1]) * self.samples_per_step / (when - self._last[0])
                self._last = (when, step)
            elif rec.get("kind") == "val":
                self._val = rec
            line = _line(rec, rate, self._val if rec.get("kind") == "train" else None)
            if line:
                print(line, file=self.out, flush=True)
        return bool(fresh)

    def _run(self) -> None:
        last_progress = time.monotonic()
        while not self._stop.wait(self.poll_s):
            if self.poll():
                last_progress = time.monotonic()
            elif self.stall_timeout_s and time.monotonic() - last_progress > self.stall_timeout_s:
                try:
                    why = self.diagnose()
                except Exception as exc:  # noqa: BLE001 - the diagnosis must not hide the stall
                    why = f"(no diagnosis: {type(exc).__name__}: {exc})"
                self.stalled = (f"training made no progress for {self.stall_timeout_s:g} s: {why}; lower "
                                "--num-workers or --cpus-per-worker, add nodes, or raise workers.stall_timeout_s "
                                "if the run is only slow")
                _thread.interrupt_main()
                return
