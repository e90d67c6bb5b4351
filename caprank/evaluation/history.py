"""Metric history across registry versions, and per-segment trends.

Each version's figures are those its own evaluate stage registered with it (the
``caprank.metric.*`` tags of ``caprank.registry.register_version``), read back, never
recomputed: each version was tested on the test queries of the dataset it was trained
with, so a trend mixes model and data changes. The per-segment trend is the primary
metric per segment, registered as ``segment.<label>.<metric>`` (versions registered
before the segments were kept show none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from caprank.registry import TAG_PREFIX, RegisteredVersion, mlflow_key

SEGMENT = "segment."


@dataclass(frozen=True)
class VersionRow:
    """One registered version's metrics and its primary metric per segment."""

    version: str
    aliases: tuple[str, ...]
    metrics: dict[str, float]
    segments: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def segment_metrics(segments: Mapping[str, Mapping[str, float]], metric: str) -> dict[str, float]:
    """The per-segment figures evaluate registers: ``segment.<label>.<metric>``."""
    return {f"{SEGMENT}{label}.{metric}": row[metric] for label, row in segments.items()}


def history_rows(
    versions: Sequence[RegisteredVersion],
    metrics: Sequence[str],
    primary: str,
    labels: Iterable[str] = (),
) -> list[VersionRow]:
    """``metrics`` (those registered) and the per-segment ``primary`` of each version, in
    the given order; ``labels`` name segments whose registry key lost characters."""
    named = {mlflow_key(label): label for label in labels}
    prefix, suffix = f"{TAG_PREFIX}metric.{SEGMENT}", f".{mlflow_key(primary)}"
    rows = []
    for v in versions:
        found = {m: value for m in metrics if (value := v.metric(m)) is not None}
        segments = {
            named.get(key, key): float(value)
            for tag, value in sorted(v.tags.items())
            if tag.startswith(prefix)
            and tag.endswith(suffix)
            and (key := tag[len(prefix) : -len(suffix)])
        }
        rows.append(VersionRow(v.version, v.aliases, found, segments))
    return rows
