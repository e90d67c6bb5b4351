"""The pipeline's first stage: bring a dataset into the run, or make the embedded default.

With a source (a local directory or an ``s3://bucket/prefix`` URI, see
``caprank.data.storage``), its tables are read through the data contract (structure
only: content checks are the validate stage's job). With none, the embedded default
dataset is synthesized and its interaction logs simulated, from the config's seed.
Either way the privacy policy (retention, opt-out, deletion requests, PII scrubbing of the
intent text and of user/session ids) is applied to the interaction logs before anything is
written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset, load_dataset, write_dataset
from caprank.data.schemas import MANIFEST_FILE
from caprank.data.storage import describe
from caprank.erasure import read_deleted
from caprank.online.sinks import event_reader
from caprank.privacy import apply_policy
from caprank.pseudonym import id_protector


@dataclass
class IngestResult:
    out: Path
    source: str
    rows: dict[str, int]
    dropped_by_privacy: int
    content_hash: str
    summary: dict = field(default_factory=dict)

    def to_markdown(self) -> str:
        lines = [f"## Ingest\n\nsource: `{self.source}`  \nwritten to: `{self.out}`\n"]
        lines.append("| table | rows |\n| --- | ---: |")
        lines += [f"| {name} | {count:,} |" for name, count in self.rows.items()]
        lines.append(
            f"\n{self.dropped_by_privacy:,} events dropped by the privacy policy "
            "(retention, opt-out, deletion).  \ncontent hash: `" + self.content_hash[:16] + "`"
        )
        return "\n".join(lines) + "\n"


def _embedded_default(cfg: CaprankConfig) -> Dataset:
    from caprank.data.simulate import simulate
    from caprank.data.synth import synthesize

    ds = synthesize(cfg)
    ds.interactions = simulate(ds, cfg)
    return ds


def read_feedback(cfg: CaprankConfig) -> pa.Table:
    """Every event the serving feedback path acknowledged, from the configured sink
    (``serving.feedback.sink``): the write-ahead log's compacted parts and segments not
    yet compacted (a running or crashed server's), or the shared PostgreSQL table; one
    row per event id."""
    return event_reader(cfg).read_events()


def merge_events(logs: pa.Table, extra: pa.Table) -> pa.Table:
    """Append ``extra`` events whose ids ``logs`` does not already hold (re-runs are safe)."""
    seen = pa.array(logs["event_id"].to_pylist(), pa.string())
    fresh = extra.filter(pc.invert(pc.is_in(extra["event_id"], value_set=seen)))
    return pa.concat_tables([logs, fresh.cast(logs.schema)])


def ingest(
    cfg: CaprankConfig, source: str | Path | None, out: str | Path, now: datetime | None = None
) -> IngestResult:
    """Read ``source`` (a directory or s3:// URI; none: synthesize the embedded default)
    and write it to the local directory ``out``."""
    now = now or datetime.now(UTC)
    if source:
        ds = load_dataset(source)
        origin = describe(source)
    else:
        ds = _embedded_default(cfg)
        origin = f"embedded default (synthetic, seed {cfg.data.seed})"
    feedback = read_feedback(cfg)
    if feedback.num_rows:
        ds.interactions = merge_events(ds.interactions, feedback)
        origin += f" + {feedback.num_rows:,} feedback events from {event_reader(cfg).where}"
    before = ds.interactions.num_rows
    deleted = read_deleted(cfg.feedback_dir())
    ds.interactions = apply_policy(ds.interactions, cfg.privacy, now, id_protector(cfg), deleted)
    dropped = before - ds.interactions.num_rows
    out = write_dataset(ds, out, ingested_from=origin, ingested_at=now.isoformat())
    manifest = json.loads((Path(out) / MANIFEST_FILE).read_text(encoding="utf-8"))
    rows = {name: table.num_rows for name, table in ds.tables().items()}
    return IngestResult(
        out=Path(out),
        source=origin,
        rows=rows,
        dropped_by_privacy=dropped,
        content_hash=manifest["content_hash"],
        summary={"rows": rows, "dropped_by_privacy": dropped},
    )
