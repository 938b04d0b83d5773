"""Run a GIL-releasing kernel over contiguous chunks of a range on several threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba

_POOL: ThreadPoolExecutor | None = None


def split(kernel: Callable[[int, int], None], n: int) -> None:
    """Call ``kernel(start, stop)`` on ``numba.get_num_threads()`` chunks covering ``range(n)``.

    The chunks write disjoint outputs, so the result never depends on the thread count.
    One thread (e.g. inside ``train_students`` workers) calls ``kernel(0, n)`` directly.
    """
    global _POOL
    k = max(1, min(numba.get_num_threads(), n))
    if k == 1:
        kernel(0, n)
        return
    if _POOL is None or _POOL._max_workers < k - 1:
        _POOL = ThreadPoolExecutor(max_workers=k - 1, thread_name_prefix="ec-flow")
    bounds = [n * i // k for i in range(k + 1)]
    futures = [_POOL.submit(kernel, bounds[i], bounds[i + 1]) for i in range(1, k)]
    kernel(bounds[0], bounds[1])
    for f in futures:
        f.result()
