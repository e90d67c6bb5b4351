"""Checksummed JSON lines: the record format of the server's append-only logs.

Both the feedback write-ahead log and the served-ranking log append one record per line
as ``<crc32 hex> <json>\\n``. A line torn by a crash (no newline, or a checksum that does
not match) decodes to None, and a reader stops there: what follows was never written
whole, so it was never acknowledged.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson


def encode_line(data: dict[str, Any]) -> bytes:
    """One record line; orjson writes it (a served ranking is logged on every request, and
    it is several times faster than ``json``; ``decode_line`` reads either's lines)."""
    body = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of a complete line, or None for a torn or corrupt one."""
    if not line.endswith(b"\n") or len(line) < 10:
        return None
    crc, _, body = line[:-1].partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every intact record of a log file, in order (stops at the first torn line)."""
    with open(path, "rb") as fh:
        for line in fh:
            data = decode_line(line)
            if data is None:
                return
            yield data
