"""Overlap a unit's reading and writing with the model: a read-ahead thread and an ordered writer thread.

While the model runs on batch k, a thread reads and decodes batch k+1 (Parquet reading, zstd and
numpy release the GIL for most of their time) and another scores and writes batch k−1. Both queues
are bounded (`depth` items), so memory stays at a few batches, and both re-raise a failure in the
caller's thread, so a unit either commits all of its batches or none (units.process_unit).
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

_DONE = object()


def read_ahead(items: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """Yield `items`, produced by a background thread up to `depth` ahead; depth 0 = in this thread."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_DONE, exc))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class OrderedWriter:
    """Runs `submit`ted calls one at a time, in order, on one thread, at most `depth` pending.

    `submit` blocks while `depth` calls are pending and raises the first failure of an earlier call;
    `drain` waits for all and returns their results in order. depth 0 = run in the caller's thread."""

    def __init__(self, depth: int = 1):
        self.depth = depth
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="writer") if depth > 0 else None
        self.pending: list[Future] = []
        self.results: list[Any] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.pool is None:
            self.results.append(fn(*args))
            return
        while len(self.pending) >= self.depth:
            self.results.append(self.pending.pop(0).result())
        self.pending.append(self.pool.submit(fn, *args))

    def drain(self) -> list[Any]:
        while self.pending:
            self.results.append(self.pending.pop(0).result())
        return self.results

    def close(self) -> None:
        """Wait for every pending call (never leave a writer thread touching files about to be committed
        or discarded); keep the results of those that succeeded (a failure was already raised, or is
        being raised, in the caller)."""
        if self.pool is not None:
            for f in self.pending:
                if f.exception() is None:
                    self.results.append(f.result())
            self.pool.shutdown(wait=True)
            self.pending = []

    def __enter__(self) -> "OrderedWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
