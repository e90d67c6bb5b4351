"""``validate_dataset``: the ingest gate that decides whether a dataset may go downstream.

Order: the structural read of every table (failures become checks, never tracebacks),
then the Great Expectations suites and the pyarrow checks on the tables that were
readable. A table that failed its structural read gets no content checks, and checks
that reference it are reported as skipped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from caprank.config import CaprankConfig
from caprank.data.dataset import contract_files
from caprank.data.schemas import TABLES
from caprank.data.storage import locate
from caprank.data.validation.expectations import run_expectations
from caprank.data.validation.integrity import list_checks, reference_checks
from caprank.data.validation.report import CheckResult, ValidationReport
from caprank.data.validation.structure import LoadedTable, read_structure


def validate_dataset(
    root: str | Path, cfg: CaprankConfig, now: datetime | None = None
) -> ValidationReport:
    """Check every table of the dataset in ``root`` (a local directory or an ``s3://``
    URI, read as ``load_dataset`` reads it); ``now`` (UTC) anchors the time checks.

    A naive ``now`` is taken as UTC. The report lists every check; ``report.ok`` is False
    when any failed, and ``report.raise_for_errors()`` turns that into a ``DataError``.
    """
    root = locate(root)
    now = datetime.now(UTC) if now is None else _as_utc(now)
    limit = cfg.data.max_examples
    if not root.is_dir():
        missing = CheckResult(
            table="dataset",
            file=str(root),
            column=None,
            check="structure",
            description="dataset directory exists",
            engine="pyarrow",
            passed=False,
            unexpected_count=None,
            note=root.missing_reason(),
        )
        return ValidationReport(str(root), now.isoformat(), [missing])

    checks: list[CheckResult] = []
    loaded: dict[str, LoadedTable] = {}
    for name in TABLES:
        found, table = read_structure(root, name, limit)
        checks += found
        if table is not None:
            loaded[name] = table
    checks += run_expectations(loaded, cfg.data, now)
    for name, table in loaded.items():
        checks += list_checks(name, table, limit)
    checks += reference_checks(loaded, limit)
    checks.sort(key=lambda c: list(TABLES).index(c.table))  # stable: per table, in run order
    return ValidationReport(
        root=str(root),
        checked_at=now.isoformat(),
        checks=checks,
        rows={name: (loaded[name].table.num_rows if name in loaded else None) for name in TABLES},
        files={name: [str(f) for f in contract_files(root, name)] for name in TABLES},
    )


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
