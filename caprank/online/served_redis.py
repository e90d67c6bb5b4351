"""Served rankings shared by every replica through Redis (``serving.feedback.served_store:
redis``, docs/serving.md).

Behind a load balancer the feedback for a ranking may reach another replica than the one
that served it. Each ranking is kept in this process (as ``RequestStore`` does) and
written to Redis under ``serving.feedback.served_key_prefix`` + request id with the
retention ``serving.feedback.request_store_ttl_s`` as the key's expiry, before the answer
leaves; a lookup this process cannot answer asks Redis. So feedback to any replica within
the retention is accepted, and a replica restart loses nothing.

Failures: Redis unreachable while ranking logs the error and still answers (only that
ranking's feedback must then reach the replica that served it, counted in
``put_errors``); while looking up feedback it is HTTP 503, never a misleading 404.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from caprank.online.request import StoreUnavailable
from caprank.online.served import RequestStore, ServedRanking

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 2.0


class RedisRequestStore(RequestStore):
    """A ``RequestStore`` that also writes each ranking to Redis and reads misses from it."""

    def __init__(
        self,
        url: str,
        prefix: str,
        size: int,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        scrub: Callable[[str], str] | None = None,
    ):
        super().__init__(size, ttl_s, clock)
        self.url = url
        self.prefix = prefix
        self._scrub = scrub
        self._client = None
        self.put_errors = 0

    def open(self) -> RedisRequestStore:
        """Connect (fails here when Redis does not answer: a replica must not start
        without the store its feedback depends on)."""
        import redis

        self._client = redis.Redis.from_url(
            self.url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
        )
        self._client.ping()
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def key(self, request_id: str) -> str:
        return self.prefix + request_id

    def put(self, served: ServedRanking) -> None:
        """Keep ``served`` here and in Redis (expiring after the retention)."""
        import redis

        if self._scrub is not None:
            served = replace(served, intent_text=self._scrub(served.intent_text))
        stamp = self._clock()
        with self._lock:
            self._insert(stamp, served)
        record = json.dumps(served.to_record(stamp), separators=(",", ":"))
        try:
            self._client.set(self.key(served.request_id), record, px=int(self.ttl_s * 1000))
        except redis.RedisError:
            self.put_errors += 1
            log.exception("keeping ranking %s in Redis failed", served.request_id)

    def get(self, request_id: str) -> ServedRanking | None:
        """This process's copy, else Redis's (None when unknown or past retention)."""
        import redis

        held = super().get(request_id)
        if held is not None:
            return held
        try:
            raw = self._client.get(self.key(request_id))
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"the served-ranking store (Redis) did not answer ({type(exc).__name__}); "
                "retry the feedback"
            ) from exc
        if raw is None:
            return None
        rec = json.loads(raw)
        if self._clock() - rec["stamp"] > self.ttl_s:
            return None
        served = ServedRanking.from_record(rec)
        with self._lock:
            self._insert(rec["stamp"], served)
        return served
