"""A rank request as the API accepts it, parsed and validated in one place.

Every rejection is a ``RequestError`` that names the offending field (``instances[2].top_k``
once the server prefixes the instance), so a client can fix its call; the server maps it
to HTTP 400 and keeps serving.

A client's ``request_id`` is only a correlation id (``client_request_id`` in the answer):
the server issues the request id that feedback refers to, so no client can overwrite or
reuse another ranking's identity.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caprank.config import ServingConfig
from caprank.errors import CaprankError

MAX_ID_CHARS = 256
FIELDS = (
    "intent",
    "context_tools",
    "candidate_ids",
    "top_k",
    "min_score",
    "request_id",
    "session_id",
    "user_id",
)


class RequestError(CaprankError):
    """A request field is missing, of the wrong type or out of range (HTTP 400)."""

    def __init__(self, field: str, message: str, status: int = 400):
        self.field = field
        self.message = message
        self.status = status
        super().__init__(f"field '{field}': {message}")

    def within(self, prefix: str) -> RequestError:
        """The same error with the field path under ``prefix`` (e.g. an instance index)."""
        return RequestError(f"{prefix}.{self.field}", self.message, self.status)


class StoreUnavailable(CaprankError):
    """A shared store (PostgreSQL, Redis) did not answer (HTTP 503): the client retries;
    nothing was acknowledged."""

    status = 503
    retry_after_s = 1


@dataclass(frozen=True)
class RankRequest:
    intent: str
    context_tools: tuple[str, ...] | None
    candidate_ids: tuple[str, ...] | None
    top_k: int
    min_score: float | None
    client_request_id: str | None = None  # the body's ``request_id``: correlation only
    session_id: str | None = None
    user_id: str | None = None
    # rows of candidate_ids in the catalog whose position map is ``rows_of`` (the parse
    # found them while checking for duplicates; the engine uses them for that catalog)
    candidate_rows: np.ndarray | None = field(default=None, compare=False, repr=False)
    rows_of: Mapping[str, int] | None = field(default=None, compare=False, repr=False)


def candidate_rows(ids: Sequence[Any], position: Mapping[str, int]) -> np.ndarray | None:
    """The rows of ``ids`` in a catalog's ``position`` map when every id is known and
    none repeats, else None. Checking repeats on the rows hashes each id once (a set of
    1,000 fresh ids costs about what their lookups do). Any item that is not a catalog id
    (a number, a list, an empty string) finds no row, so rows found also validate ``ids``."""
    try:
        rows = np.fromiter(map(position.__getitem__, ids), dtype=np.int64, count=len(ids))
    except (KeyError, TypeError):  # TypeError: an unhashable item (a list, an object)
        return None
    rows.flags.writeable = False  # shared with the engine
    if len(position) <= 64 * len(rows):  # a bitmap over the catalog is the cheaper check
        seen = np.zeros(len(position), dtype=bool)
        seen[rows] = True
        unique = int(np.count_nonzero(seen))
    else:
        ordered = np.sort(rows)
        unique = len(rows) - int(np.count_nonzero(ordered[1:] == ordered[:-1]))
    return rows if unique == len(rows) else None


class CandidateLists:
    """The rows of recently seen candidate lists of one catalog.

    A client usually sends the same candidate list (its enabled capabilities) with every
    request; remembering a list's rows under the list joined into one string costs one
    join and one hash of it instead of a dict probe per id (parsing a 1,000-id request:
    38 us instead of 111 us; docs/serving.md). Only lists whose rows were found are kept, so a
    remembered list is valid (known, distinct, non-empty ids). Catalog ids never hold
    ``SEP``, so a joined string of as many items as a remembered list's is that very list;
    a catalog whose ids do hold it keeps no lists. At most ``max_bytes`` (a key's
    characters plus its rows' 8 bytes each; the store is emptied when full: no order to
    keep, and safe under the GIL); 0 keeps none."""

    SEP = "\x00"
    MIN_IDS = 16  # a shorter list costs less to look up than to join and hash

    def __init__(self, position: Mapping[str, int], *, max_bytes: int = 16 * 2**20):
        self.position = position
        self.max_bytes = max_bytes
        self._bytes = 0
        keep = max_bytes > 0 and not any(self.SEP in c for c in position)
        self._rows: dict[str, np.ndarray] | None = {} if keep else None

    def rows(self, ids: list) -> np.ndarray | None:
        """``candidate_rows(ids, self.position)``, remembered."""
        memo = self._rows
        if memo is None or len(ids) < self.MIN_IDS:
            return candidate_rows(ids, self.position)
        try:
            key = self.SEP.join(ids)
        except TypeError:  # an item that is not a string: no rows (validation names it)
            return None
        rows = memo.get(key)
        if rows is not None and len(rows) == len(ids):
            return rows
        rows = candidate_rows(ids, self.position)
        size = len(key) + 8 * len(ids)
        if rows is not None and size <= self.max_bytes:
            if self._bytes + size > self.max_bytes:
                memo.clear()
                self._bytes = 0
            memo[key] = rows
            self._bytes += size
        return rows


def visible(text: str) -> bool:
    """Whether ``text`` has a character that is neither white space nor an invisible
    format character (zero-width space/joiners, word joiner, byte-order mark)."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)


def _string(value: Any, field: str, max_chars: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RequestError(field, f"must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise RequestError(field, f"is {len(value)} characters long; the limit is {max_chars}")
    if not allow_empty and not visible(value):
        raise RequestError(field, "must not be empty (white space and zero-width characters only)")
    return value


def check_id(value: Any, field: str) -> str:
    """An identifier: a visible string of at most ``MAX_ID_CHARS`` with no control
    characters (a CR/LF in an id would split log lines and echoed headers)."""
    text = _string(value, field, MAX_ID_CHARS)
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise RequestError(field, "must not contain control characters (CR, LF, tab, NUL, ...)")
    return text


def _optional_id(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    return None if value is None else check_id(value, field)


def correlation_id(value: Any, field: str) -> str | None:
    """A client-chosen id that the server echoes (body ``request_id``, ``x-request-id``, a
    V2 request ``id``): printable text only, so an echo can never split a header or a log
    line (CR/LF and other control characters are refused, naming the field)."""
    if value is None:
        return None
    text = _string(value, field, MAX_ID_CHARS)
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise RequestError(field, f"must be printable text; it holds U+{ord(bad):04X}")
    return text


def _id_list(value: Any, field: str, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise RequestError(field, f"must be a list of strings, got {type(value).__name__}")
    if len(value) > limit:
        raise RequestError(field, f"has {len(value)} items; the limit is {limit}")
    try:
        "".join(value)  # every item a string (the common case, checked at C speed)
        clean = all(value)  # and none empty: a string is falsy only when empty
    except TypeError:
        clean = False
    if clean:
        return tuple(value)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise RequestError(f"{field}[{i}]", "must be a non-empty string")
    return tuple(value)


def parse_rank_request(
    body: Any, cfg: ServingConfig, lists: CandidateLists | None = None
) -> RankRequest:
    """Validate one request object; raises ``RequestError`` naming the field. With a
    catalog's ``lists`` the candidates' rows come along (unknown ids are still the
    engine's to refuse, after every field here, as without it)."""
    if not isinstance(body, Mapping):
        raise RequestError("<request>", f"must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestError(unknown[0], f"unknown field (allowed: {', '.join(FIELDS)})")
    if "intent" not in body:
        raise RequestError("intent", "is required")
    intent = _string(body["intent"], "intent", cfg.max_intent_chars)

    context = body.get("context_tools")
    context_tools = None if context is None else _id_list(context, "context_tools", 10_000)

    cands = body.get("candidate_ids")
    candidate_ids = rows = None
    if (
        lists is not None and type(cands) is list and 0 < len(cands) <= cfg.max_candidates
    ):  # the common case: rows found for every id are the whole validation (strings, known)
        rows = lists.rows(cands)
        if rows is not None:
            candidate_ids = tuple(cands)
    if cands is not None and rows is None:
        candidate_ids = _id_list(cands, "candidate_ids", cfg.max_candidates)
        if not candidate_ids:
            raise RequestError("candidate_ids", "is empty; omit it to rank every capability")
        if len(set(candidate_ids)) != len(candidate_ids):
            seen: set[str] = set()
            dups = [c for c in candidate_ids if c in seen or seen.add(c)]
            raise RequestError("candidate_ids", f"has duplicate ids: {sorted(set(dups))[:5]}")

    top_k = body.get("top_k", cfg.default_top_k)
    if top_k is None:
        top_k = cfg.default_top_k
    if isinstance(top_k, float) and math.isfinite(top_k) and abs(top_k) >= 2**63:
        # an integer past 64 bits (the JSON reader hands it over as a float)
        raise RequestError("top_k", f"is out of range; it must be between 1 and {cfg.max_top_k}")
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise RequestError("top_k", f"must be an integer, got {type(top_k).__name__}")
    if not 1 <= top_k <= cfg.max_top_k:
        shown = top_k if abs(top_k) < 10**12 else ("too large" if top_k > 0 else "too small")
        raise RequestError("top_k", f"is {shown}; it must be between 1 and {cfg.max_top_k}")

    min_score = body.get("min_score")
    if min_score is not None:
        if isinstance(min_score, bool) or not isinstance(min_score, int | float):
            raise RequestError("min_score", f"must be a number, got {type(min_score).__name__}")
        if not math.isfinite(min_score):
            raise RequestError("min_score", "must be finite")
        min_score = float(min_score)

    return RankRequest(
        intent=intent,
        context_tools=context_tools,
        candidate_ids=candidate_ids,
        top_k=top_k,
        min_score=min_score,
        client_request_id=correlation_id(body.get("request_id"), "request_id"),
        session_id=_optional_id(body, "session_id"),
        user_id=_optional_id(body, "user_id"),
        candidate_rows=rows,
        rows_of=lists.position if rows is not None else None,
    )
