"""Checks every embedding table passes before it is stored or used (seed 002 §1.3).

Per vector column: ``finite`` (no NaN/inf), ``dimension`` (the promised width),
``normalized`` (|‖v‖ - 1| <= ``norm_tolerance`` where unit length is promised) and
``not_collapsed``; per table: ``staleness`` (computed no more than
``max_staleness_hours`` ago, and not in the future beyond the clock-skew allowance).

``not_collapsed`` compares each dimension's variance across items with the isotropic
level ``mean ‖v‖² / dim``. For unit vectors the variances sum to ``1 - ‖mean‖² <= 1``, so
a healthy spread gives about ``1/dim`` per dimension (0.0026 for 384 dims, 0.001 for
1024): a raw floor of 0.01 would reject every good high-dimensional table. Relative to
the isotropic level a healthy dimension sits near 1, and the check fails when the
*median* dimension falls below ``min_relative_variance`` (0.01: a hundred times under it), which
is what all items collapsing onto one vector, or into a narrow cone, does. The median,
not every dimension: all-MiniLM-L6-v2 itself has three near-constant coordinates
(127, 223, 319) on every text set we tried (ToolLens tools, capabilities and intents, the
test catalog), and a few rogue high-variance coordinates must not hide a collapse of the
rest either. The low dimensions are named in the error.

All failures are gathered into one ``EmbeddingValidationError`` naming the check, how
many items (or dimensions) offend, of how many, and examples by id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from caprank.config import CaprankConfig
from caprank.errors import DataError

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Failure:
    """One failed check of one column."""

    field: str
    check: str
    count: int
    total: int
    unit: str
    examples: list = field(default_factory=list)
    detail: str = ""

    def __str__(self) -> str:
        text = f"[{self.check}] {self.field}: {self.count} of {self.total} {self.unit}"
        if self.detail:
            text += f" {self.detail}"
        return text + f" (examples: {self.examples[:MAX_EXAMPLES]})"


class EmbeddingValidationError(DataError):
    """Embeddings failed validation; nothing was stored. ``failures`` lists each check."""

    def __init__(self, table: str, failures: list[Failure], outcome: str = ""):
        self.failures = failures
        self.checks = [f.check for f in failures]
        fields = {f.field for f in failures}
        head = "embedding validation failed" + (f", {outcome}" if outcome else "")
        super().__init__(
            table,
            f"{head}: " + "; ".join(map(str, failures)),
            field=fields.pop() if len(fields) == 1 else None,
        )


@dataclass
class VectorColumn:
    """A column of vectors to check: its name, content, promised width and norm."""

    field: str
    vectors: np.ndarray | Sequence[Sequence[float]]
    dim: int
    normalized: bool = True


def relative_variance(matrix: np.ndarray) -> np.ndarray:
    """Each dimension's variance across rows over the isotropic level ``mean ‖v‖² / dim``."""
    matrix = np.asarray(matrix, dtype=np.float64)
    level = float((matrix**2).sum(axis=1).mean()) / matrix.shape[1]
    var = matrix.var(axis=0)
    return var / level if level > 0 else np.zeros_like(var)


def _rows(vectors) -> list[np.ndarray]:
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        return list(vectors)
    return [np.asarray(v, dtype=np.float64).reshape(-1) for v in vectors]


def check_column(ids: Sequence[str], col: VectorColumn, cfg: CaprankConfig) -> list[Failure]:
    """Failures of ``finite``, ``dimension``, ``normalized``, ``not_collapsed`` for a column."""
    emb = cfg.embedding
    rows = _rows(col.vectors)
    n = len(rows)
    if n != len(ids):
        raise ValueError(f"{col.field}: {n} vectors for {len(ids)} ids")
    out: list[Failure] = []

    def fail(check: str, bad: list[int], detail: str = "", unit: str = "items") -> None:
        out.append(
            Failure(
                col.field, check, len(bad), n, unit, [ids[i] for i in bad[:MAX_EXAMPLES]], detail
            )
        )

    bad_dim = [i for i, v in enumerate(rows) if v.shape[0] != col.dim]
    if bad_dim:
        widths = sorted({rows[i].shape[0] for i in bad_dim})
        fail("dimension", bad_dim, f"are not {col.dim}-dimensional (found {widths[:5]})")
    bad_finite = [i for i, v in enumerate(rows) if not np.isfinite(v).all()]
    if bad_finite:
        fail("finite", bad_finite, "hold NaN or inf")
    skip = set(bad_dim) | set(bad_finite)
    good = [i for i in range(n) if i not in skip]
    if not good:
        return out
    matrix = np.stack([rows[i] for i in good]).astype(np.float64)
    if col.normalized:
        err = np.abs(np.linalg.norm(matrix, axis=1) - 1.0)
        bad = [good[i] for i in np.flatnonzero(err > emb.norm_tolerance)]
        if bad:
            fail("normalized", bad, f"have |norm - 1| > {emb.norm_tolerance} (max {err.max():.4g})")
    if len(good) >= 2:
        rel = relative_variance(matrix)
        median = float(np.median(rel))
        if median < emb.min_relative_variance:
            low = np.flatnonzero(rel < emb.min_relative_variance)
            out.append(
                Failure(
                    col.field,
                    "not_collapsed",
                    int(low.size),
                    int(rel.size),
                    "dimensions",
                    [f"dim {j}: {rel[j]:.2g}" for j in low[:MAX_EXAMPLES]],
                    f"vary less than {emb.min_relative_variance} x the isotropic level across "
                    f"{len(good)} items (median dimension {median:.2g}): collapsed",
                )
            )
    return out


def check_staleness(
    ids: Sequence[str], computed_at: Sequence[datetime], now: datetime, cfg: CaprankConfig
) -> list[Failure]:
    """Rows computed more than ``max_staleness_hours`` before ``now``, or in its future."""
    max_age = timedelta(hours=cfg.embedding.max_staleness_hours)
    skew = timedelta(seconds=cfg.data.max_future_skew_s)
    old = [i for i, t in enumerate(computed_at) if now - t > max_age]
    future = [i for i, t in enumerate(computed_at) if t - now > skew]
    out = []
    if old:
        oldest = min(computed_at[i] for i in old)
        out.append(
            Failure(
                "computed_at",
                "staleness",
                len(old),
                len(ids),
                "items",
                [ids[i] for i in old[:MAX_EXAMPLES]],
                f"were computed over {cfg.embedding.max_staleness_hours} h before "
                f"{now.isoformat()} (oldest {oldest.isoformat()})",
            )
        )
    if future:
        out.append(
            Failure(
                "computed_at",
                "staleness",
                len(future),
                len(ids),
                "items",
                [ids[i] for i in future[:MAX_EXAMPLES]],
                f"carry a time after {now.isoformat()} (beyond {skew.seconds} s of clock skew)",
            )
        )
    return out


def validate_table(
    table: str,
    ids: Sequence[str],
    columns: Sequence[VectorColumn],
    computed_at: Sequence[datetime],
    now: datetime,
    cfg: CaprankConfig,
    outcome: str = "",
) -> None:
    """Run every check on one table; raise ``EmbeddingValidationError`` listing all failures.

    ``outcome`` says in the message what the failure means for the caller ("nothing
    stored", "not loaded").
    """
    failures: list[Failure] = []
    seen: dict[str, int] = {}
    dupes = [i for i, x in enumerate(ids) if seen.setdefault(x, i) != i]
    if dupes:
        failures.append(
            Failure("id", "unique_ids", len(dupes), len(ids), "items", [ids[i] for i in dupes[:5]])
        )
    for col in columns:
        failures += check_column(ids, col, cfg)
    failures += check_staleness(ids, computed_at, now, cfg)
    if failures:
        raise EmbeddingValidationError(table, failures, outcome)
