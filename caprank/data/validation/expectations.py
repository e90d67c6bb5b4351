"""Content checks that Great Expectations computes: one expectation suite per table.

Each table gets an ephemeral GX context's pandas data source, a dataframe asset, a suite,
a validation definition and a checkpoint. Time limits (future skew, freshness) are suite
parameters filled in at run time, so the suites themselves do not depend on the clock.
List columns stay out of the pandas frame; ``integrity`` checks them with pyarrow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import DataConfig
from caprank.data.schemas import OUTCOMES, SPLITS, TABLES, TIMESTAMP
from caprank.data.validation.report import CheckResult, RowExample
from caprank.data.validation.structure import LoadedTable

ENGINE = "great_expectations"
LATEST = "latest_allowed_timestamp"
OLDEST = "oldest_allowed_newest_event"


@dataclass(frozen=True)
class Rule:
    """A planned expectation: which check it is, on which column, and how GX spells it."""

    check: str
    column: str | None
    description: str
    expectation: str
    kwargs: dict[str, Any]


# Value rules beyond "required" and "unique", keyed by (table, column).
_BETWEEN: dict[tuple[str, str], tuple[dict[str, Any], str]] = {
    ("labels", "grade"): ({"min_value": 1}, "grade >= 1"),
    ("interactions", "rank"): ({"min_value": 1}, "rank >= 1"),
    ("interactions", "execution_time_ms"): ({"min_value": 0}, "execution_time_ms >= 0"),
    ("interactions", "feedback"): (
        {"min_value": 1, "max_value": 5},
        "feedback between 1 and 5 (or empty)",
    ),
    ("interactions", "propensity"): (
        {"min_value": 0, "max_value": 1, "strict_min": True},
        "propensity in (0, 1]",
    ),
}
_IN_SET: dict[tuple[str, str], tuple[str, ...]] = {
    ("labels", "split"): SPLITS,
    ("interactions", "outcome"): OUTCOMES,
}
FRESHNESS = ("interactions", "timestamp")


def table_rules(name: str) -> list[Rule]:
    """Every GX expectation a table's suite holds, in report order."""
    spec = TABLES[name]
    rules: list[Rule] = []
    for fld in spec.schema:
        if not pa.types.is_list(fld.type):  # list columns: ``integrity`` checks them
            rules += _column_rules(name, fld)
    rules.append(_unique_rule(spec.key))
    return rules


def _column_rules(name: str, fld: pa.Field) -> list[Rule]:
    """A column's rules: required, range, allowed values, not in the future, freshness."""
    col = fld.name
    rules: list[Rule] = []
    if not fld.nullable:
        floating = pa.types.is_floating(fld.type)
        rules.append(
            Rule(
                "not_null_or_nan" if floating else "not_null",
                col,
                "no missing or NaN values" if floating else "no missing values",
                "expect_column_values_to_not_be_null",
                {"column": col},
            )
        )
    if (name, col) in _BETWEEN:
        bounds, text = _BETWEEN[(name, col)]
        rules.append(
            Rule(
                "range", col, text, "expect_column_values_to_be_between", {"column": col, **bounds}
            )
        )
    if (name, col) in _IN_SET:
        allowed = list(_IN_SET[(name, col)])
        rules.append(
            Rule(
                "allowed_values",
                col,
                f"{col} in {allowed}",
                "expect_column_values_to_be_in_set",
                {"column": col, "value_set": allowed},
            )
        )
    if fld.type.equals(TIMESTAMP):
        rules.append(
            Rule(
                "not_in_future",
                col,
                "not later than now + data.max_future_skew_s",
                "expect_column_values_to_be_between",
                {"column": col, "max_value": {"$PARAMETER": LATEST}},
            )
        )
    if (name, col) == FRESHNESS:
        rules.append(
            Rule(
                "freshness",
                col,
                "newest event younger than data.max_age_days",
                "expect_column_max_to_be_between",
                {"column": col, "min_value": {"$PARAMETER": OLDEST}},
            )
        )
    return rules


def _unique_rule(key: tuple[str, ...]) -> Rule:
    """The primary key is unique: one column, or a compound key."""
    if len(key) == 1:
        (col,) = key
        return Rule(
            "unique",
            col,
            f"{col} values are unique",
            "expect_column_values_to_be_unique",
            {"column": col},
        )
    cols = list(key)
    return Rule(
        "unique",
        ", ".join(cols),
        f"({', '.join(cols)}) pairs are unique",
        "expect_compound_columns_to_be_unique",
        {"column_list": cols},
    )


def run_expectations(
    tables: dict[str, LoadedTable], cfg: DataConfig, now: datetime
) -> list[CheckResult]:
    """Run each table's suite through a GX checkpoint and record every result."""
    # Imported here: GX takes seconds to import, and the CLI should start fast.
    import great_expectations as gx

    context = _ephemeral_context(gx)
    source = context.data_sources.add_pandas("caprank")
    params = {
        LATEST: now + timedelta(seconds=cfg.max_future_skew_s),
        OLDEST: now - timedelta(days=cfg.max_age_days),
    }
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": cfg.max_examples}
    checks: list[CheckResult] = []
    for name, loaded in tables.items():
        rules = table_rules(name)
        no_events = name == FRESHNESS[0] and loaded.table.num_rows == 0
        active = [r for r in rules if not (no_events and r.check == "freshness")]
        expectations = [
            _expectation_class(gx, rule.expectation)(**rule.kwargs, meta={"caprank_rule": i})
            for i, rule in enumerate(active)
        ]
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        asset = source.add_dataframe_asset(name)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=name, data=asset.add_batch_definition_whole_dataframe(name), suite=suite
            )
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=name, validation_definitions=[definition], result_format=result_format
            )
        )
        # Only the columns a rule reads go to pandas (list columns never do).
        used = {c for r in rules for c in r.kwargs.get("column_list", [r.kwargs.get("column")])}
        frame = loaded.table.select([c for c in loaded.table.column_names if c in used]).to_pandas()
        outcome = checkpoint.run(
            batch_parameters={"dataframe": frame}, expectation_parameters=params
        )
        by_rule = {}
        for run in outcome.run_results.values():
            for res in run.results:
                by_rule[res.expectation_config.meta["caprank_rule"]] = res
        for i, rule in enumerate(active):
            checks.append(_record(name, loaded, rule, by_rule.get(i), params))
        checks += [_skipped(name, loaded, rule) for rule in rules if rule not in active]
    return checks


def _ephemeral_context(gx: Any) -> Any:
    """An in-memory GX context: no files, no analytics, no progress bars."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return gx.get_context(
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
        mode="ephemeral",
    )


def _skipped(name: str, loaded: LoadedTable, rule: Rule) -> CheckResult:
    """A freshness rule on an empty log: reported as skipped, not as passed silently."""
    return CheckResult(
        table=name,
        file=loaded.file,
        column=rule.column,
        check=rule.check,
        description=rule.description,
        engine=ENGINE,
        passed=True,
        expectation=rule.expectation,
        skipped=True,
        element_count=0,
        note="no interactions: freshness not checked",
    )


def _expectation_class(gx: Any, snake: str) -> type:
    camel = "".join(part.capitalize() for part in snake.split("_"))
    return getattr(gx.expectations, camel)


def _record(
    name: str, loaded: LoadedTable, rule: Rule, res: Any, params: dict[str, datetime]
) -> CheckResult:
    """Turn one GX expectation result into the report's record, rows located in files."""
    result = dict(res.result or {}) if res is not None else {}
    error = "no result returned" if res is None else _exception_message(res.exception_info)
    success = res is not None and bool(res.success) and not error
    indices = result.get("partial_unexpected_index_list") or []
    values = result.get("partial_unexpected_list") or []
    examples = [loaded.example(int(i), v) for i, v in zip(indices, values, strict=False)]
    unexpected = result.get("unexpected_count")
    note = ""
    if rule.check == "freshness":
        newest = result.get("observed_value")
        shown = newest.isoformat() if hasattr(newest, "isoformat") else newest
        note = f"newest event {shown}, limit {params[OLDEST].isoformat()}"
        unexpected = None
        if not success:
            examples = _newest_rows(loaded, rule.column)
    if rule.check == "not_in_future" and not success:
        note = f"limit {params[LATEST].isoformat()}"
    if error:
        note = f"expectation raised: {error}"
    file = examples[0].file if examples else loaded.file
    return CheckResult(
        table=name,
        file=file,
        column=rule.column,
        check=rule.check,
        description=rule.description,
        engine=ENGINE,
        passed=success,
        unexpected_count=unexpected,
        element_count=result.get("element_count", loaded.table.num_rows),
        examples=examples,
        expectation=rule.expectation,
        note=note,
    )


def _newest_rows(loaded: LoadedTable, column: str | None) -> list[RowExample]:
    col = loaded.table.column(column).combine_chunks()
    newest = pc.max(col)
    if not newest.is_valid:
        return []
    index = pc.index(col, newest).as_py()
    return [loaded.example(index, newest.as_py())]


def _exception_message(info: Any) -> str:
    """GX reports a crashed expectation in ``exception_info``, flat or keyed by metric."""
    if not isinstance(info, dict):
        return ""
    if "raised_exception" in info:
        return str(info.get("exception_message") or "") if info["raised_exception"] else ""
    for sub in info.values():
        message = _exception_message(sub)
        if message:
            return message
    return ""
