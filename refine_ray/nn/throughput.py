"""How close a step runs to the machine's limit: FLOPs counted from the operators, a dense-matmul reference.

Torch only, so the benchmarks can use it on a machine that has nothing but torch (a GPU box).
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of `fn` (forward, backward and double-backward matmuls and
    convolutions, with torch.utils.flop_counter's formulas: 2 per multiply-add).

    A dispatch mode of its own rather than FlopCounterMode: that one's module tracker breaks
    torch.autograd.grad (the gradient penalty's double backward) in torch 2.x."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Counter.total += int(formula(*args, **kwargs, out_val=out))
            return out

    with Counter():
        fn()
    return Counter.total


def timed(fn: Callable[[], object], device: torch.device | str, min_seconds: float = 1.0, min_calls: int = 3,
          warmup: int = 1, max_calls: int = 10_000) -> tuple[float, int]:
    """(seconds per call, calls timed) after `warmup` calls; at least `min_calls` and `min_seconds`."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    n, t0 = 0, time.perf_counter()
    while n < min_calls or (time.perf_counter() - t0 < min_seconds and n < max_calls):
        fn()
        n += 1
        if n >= min_calls:
            synchronize(device)
    synchronize(device)
    return (time.perf_counter() - t0) / n, n


def matmul_flops_per_s(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: int = 2048,
                       min_seconds: float = 1.0) -> float:
    """FLOP/s of a dense n×n @ n×n matmul on `device` (2·n³ per product): the reference a step is held against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    seconds, _ = timed(lambda: torch.mm(a, b, out=out), device, min_seconds=min_seconds)
    return 2.0 * n ** 3 / seconds
