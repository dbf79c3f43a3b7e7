"""Numpy work over many arrays, spread over the machine's cores.

numpy releases the GIL inside its loops (abs, sum, take, compress), so a few threads run the large
arrays of a pass side by side: a model's weights are scored and sliced in about half the time on
two cores. Small arrays stay on the calling thread, where handing them over (tens of microseconds)
would cost more than the work. GRAPHPRUNE_THREADS=1 turns it off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

LARGE = 1 << 16  # elements: arrays from this size go to the pool
_PREFIX = "graphprune-worker"
_pool: ThreadPoolExecutor | None = None


def threads() -> int:
    env = os.environ.get("GRAPHPRUNE_THREADS", "")
    if env.strip():
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"GRAPHPRUNE_THREADS={env!r}: expected a whole number of threads (1 = none)") from None
    return min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)


def map_arrays(fn: Callable[[T], R], items: Sequence[T], size: Callable[[T], int]) -> list[R]:
    """[fn(item) for item in items], the items of `size` >= LARGE elements on worker threads. `fn`
    must only read shared state (it runs concurrently with itself)."""
    global _pool
    large = [i for i, item in enumerate(items) if size(item) >= LARGE]
    n = threads()
    # on a worker already (a nested call): inline, a worker waiting on its own pool could deadlock it
    if n < 2 or len(large) < 2 or threading.current_thread().name.startswith(_PREFIX):
        return [fn(item) for item in items]
    if _pool is None or _pool._max_workers != n:  # noqa: SLF001 (GRAPHPRUNE_THREADS changed)
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(n, thread_name_prefix=_PREFIX)
    futures = {i: _pool.submit(fn, items[i]) for i in large}
    # the small items run here while the pool works on the large ones
    out: list = [None if i in futures else fn(item) for i, item in enumerate(items)]
    for i, f in futures.items():
        out[i] = f.result()
    return out
