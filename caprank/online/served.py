"""Served rankings kept in memory so feedback can be turned into interaction events.

A feedback post names only the request id; the intent text, context, shown ranking and
model version come from here. The store is bounded
(``serving.feedback.request_store_size``) and entries expire after
``serving.feedback.request_store_ttl_s``: feedback for an unknown or expired request id is
refused with HTTP 404 rather than stored without its context.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ServedRanking:
    request_id: str
    intent_text: str
    context_tools: tuple[str, ...]
    shown: tuple[str, ...]  # capability ids in rank order
    model_version: str
    served_at: datetime
    session_id: str | None = None
    user_id: str | None = None


class RequestStore:
    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, ServedRanking]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def put(self, served: ServedRanking) -> None:
        with self._lock:
            self._data[served.request_id] = (self._clock(), served)
            self._data.move_to_end(served.request_id)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def get(self, request_id: str) -> ServedRanking | None:
        with self._lock:
            item = self._data.get(request_id)
            if item is None:
                return None
            if self._clock() - item[0] > self.ttl_s:
                del self._data[request_id]
                return None
            return item[1]
