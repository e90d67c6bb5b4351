"""The bounded queue in front of the worker pool, so heavy requests cannot stall cheap ones.

Requests whose intents must be encoded (cache misses) run in a fixed pool of threads;
at most ``serving.max_queued_requests`` of them wait for or run in it, and each has a
deadline (``serving.request_timeout_s``): past it the caller gets 503 and the job stops
before its next instance (a job not yet started never starts). Requests whose intents
are all cached do not enter this queue (the server answers them at once).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from caprank.errors import CaprankError


class Overloaded(CaprankError):
    """The server will not do this work now (HTTP 503 with ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: int = 1):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class DeadlinePassed(Overloaded):
    """A queued or running request outlived ``serving.request_timeout_s``."""


class Admission:
    """A thread pool with a bounded queue and per-job deadlines."""

    def __init__(self, workers: int, max_queued: int, timeout_s: float, name: str = "rank"):
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self._pending = 0
        self._lock = threading.Lock()
        self.rejected = 0
        self.timed_out = 0

    @property
    def pending(self) -> int:
        return self._pending

    def _done(self, _future) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(deadline, *args)`` in the pool; ``Overloaded`` when the queue is full or
        ``DeadlinePassed`` when the answer is not there in time."""
        with self._lock:
            if self._pending >= self.max_queued:
                self.rejected += 1
                raise Overloaded(
                    f"server busy: {self._pending} requests with uncached intents queued "
                    f"(serving.max_queued_requests); retry shortly"
                )
            self._pending += 1
        deadline = time.monotonic() + self.timeout_s
        future = self.pool.submit(fn, deadline, *args)
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            self.timed_out += 1
            future.cancel()
            raise DeadlinePassed(
                f"request not answered within serving.request_timeout_s ({self.timeout_s:g}s)"
            ) from None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
