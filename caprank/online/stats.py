"""Per-model-version request outcomes over a sliding window (canary guardrails).

The local rollout backend reads the canary's request count, error rate and p99 latency
from here; Prometheus gets the same events through the server's metrics.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

MAX_EVENTS = 200_000


class VersionStats:
    def __init__(self, clock: Callable[[], float] = time.time, max_events: int = MAX_EVENTS):
        self._clock = clock
        self._events: dict[str, deque[tuple[float, float, bool]]] = {}
        self._max = max_events
        self._lock = threading.Lock()

    def record(self, version: str, latency_ms: float, error: bool) -> None:
        with self._lock:
            q = self._events.get(version)
            if q is None:
                q = self._events[version] = deque(maxlen=self._max)
            q.append((self._clock(), latency_ms, error))

    def count(self, version: str) -> int:
        """Requests of ``version`` held (answered or failed)."""
        with self._lock:
            return len(self._events.get(version, ()))

    def window(self, version: str, window_s: float) -> tuple[int, float | None, float | None]:
        """(requests, error rate, p99 latency ms) of ``version`` in the last ``window_s``."""
        since = self._clock() - window_s
        with self._lock:
            rows = [e for e in self._events.get(version, ()) if e[0] >= since]
        if not rows:
            return 0, None, None
        errors = sum(1 for e in rows if e[2])
        lat = np.array([e[1] for e in rows if not e[2]], dtype=np.float64)
        p99 = float(np.percentile(lat, 99)) if len(lat) else None
        return len(rows), errors / len(rows), p99
