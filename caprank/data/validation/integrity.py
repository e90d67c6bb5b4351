"""Checks no Great Expectations expectation fits, computed with pyarrow.

List columns (a capability's tools, an event's candidates) and references between
tables: every id a table names must exist in the table it points to.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from caprank.data.schemas import TABLES
from caprank.data.validation.report import CheckResult
from caprank.data.validation.structure import LoadedTable

ENGINE = "pyarrow"


@dataclass(frozen=True)
class Reference:
    """``table.column`` (a string or a list of strings) must name rows of ``target.key``."""

    table: str
    column: str
    target: str
    key: str


REFERENCES = (
    Reference("capabilities", "tool_ids", "tools", "tool_id"),
    Reference("labels", "intent_id", "intents", "intent_id"),
    Reference("labels", "capability_id", "capabilities", "capability_id"),
    Reference("interactions", "intent_id", "intents", "intent_id"),
    Reference("interactions", "selected_capability", "capabilities", "capability_id"),
    Reference("interactions", "candidate_ids", "capabilities", "capability_id"),
)
# List columns that must hold at least one item.
MIN_ONE_ITEM = {("capabilities", "tool_ids")}


def list_checks(name: str, loaded: LoadedTable, max_examples: int) -> list[CheckResult]:
    """Required list columns are present in every row; some must hold >= 1 item."""
    checks = []
    table = loaded.table
    for fld in TABLES[name].schema:
        if not pa.types.is_list(fld.type):
            continue
        # One contiguous array: pyarrow 25 crashes in indices_nonzero on an empty
        # ChunkedArray, and every check here reads whole columns anyway.
        col = table.column(fld.name).combine_chunks()
        if not fld.nullable:
            bad = pc.indices_nonzero(pc.is_null(col)).to_pylist()
            checks.append(
                _result(
                    loaded,
                    fld.name,
                    "not_null",
                    "no missing lists",
                    bad,
                    [None] * len(bad),
                    max_examples,
                )
            )
        if (name, fld.name) == ("tools", "categories"):
            checks.append(_main_category(loaded, col, max_examples))
        if (name, fld.name) in MIN_ONE_ITEM:
            short = pc.less(pc.list_value_length(col), 1)
            bad = pc.indices_nonzero(pc.fill_null(short, False)).to_pylist()
            values = [col[i].as_py() for i in bad[:max_examples]]
            checks.append(
                _result(
                    loaded,
                    fld.name,
                    "min_items",
                    f"{fld.name} holds at least 1 item",
                    bad,
                    values,
                    max_examples,
                )
            )
    return checks


def _main_category(loaded: LoadedTable, col: pa.Array, max_examples: int) -> CheckResult:
    """A tool's ``categories``, when given, hold its main ``category``."""
    main = loaded.table.column("category").to_pylist()
    bad = [
        i
        for i, cats in enumerate(col.to_pylist())
        if cats is not None and main[i] is not None and main[i] not in cats
    ]
    values = [{"category": main[i], "categories": col[i].as_py()} for i in bad[:max_examples]]
    what = "categories, when given, include category"
    return _result(loaded, "categories", "contains_main", what, bad, values, max_examples)


def reference_checks(tables: dict[str, LoadedTable], max_examples: int) -> list[CheckResult]:
    """Every id must exist in the table it references; skipped when either is unreadable."""
    checks = []
    for ref in REFERENCES:
        what = f"every id in {ref.column} exists in {ref.target}.{ref.key}"
        source = tables.get(ref.table)
        if source is None:
            continue  # the table itself failed its structural read, which is reported
        target = tables.get(ref.target)
        if target is None:
            checks.append(
                CheckResult(
                    table=ref.table,
                    file=source.file,
                    column=ref.column,
                    check="references",
                    description=what,
                    engine=ENGINE,
                    passed=True,
                    skipped=True,
                    unexpected_count=None,
                    note=f"table '{ref.target}' could not be read",
                )
            )
            continue
        known = pc.unique(target.table.column(ref.key).combine_chunks().drop_null())
        col = source.table.column(ref.column).combine_chunks()
        if pa.types.is_list(col.type):
            items = col.flatten()
            parents = pc.list_parent_indices(col)
            unknown = pc.invert(pc.fill_null(pc.is_in(items, value_set=known), False))
            bad_parents = pc.filter(parents, unknown)
            bad = pc.unique(bad_parents).to_pylist()  # parents ascend, so rows stay in order
            # Only the example rows are gathered in Python: their unknown ids.
            shown = pc.is_in(bad_parents, value_set=pa.array(bad[:max_examples], pa.int64()))
            per_row: dict[int, list] = {row: [] for row in bad[:max_examples]}
            for row, item in zip(
                pc.filter(bad_parents, shown).to_pylist(),
                pc.filter(pc.filter(items, unknown), shown).to_pylist(),
                strict=True,
            ):
                per_row[row].append(item)
            values = list(per_row.values())
        else:
            present = pc.is_valid(col)
            unknown = pc.and_(present, pc.invert(pc.is_in(col, value_set=known)))
            bad = pc.indices_nonzero(unknown).to_pylist()
            values = [col[i].as_py() for i in bad[:max_examples]]
        checks.append(_result(source, ref.column, "references", what, bad, values, max_examples))
    return checks


def _result(
    loaded: LoadedTable,
    column: str,
    check: str,
    description: str,
    bad: list[int],
    values: list,
    max_examples: int,
) -> CheckResult:
    examples = [loaded.example(i, v) for i, v in zip(bad[:max_examples], values, strict=False)]
    return CheckResult(
        table=loaded.name,
        file=examples[0].file if examples else loaded.file,
        column=column,
        check=check,
        description=description,
        engine=ENGINE,
        passed=not bad,
        unexpected_count=len(bad),
        element_count=loaded.table.num_rows,
        examples=examples,
    )
