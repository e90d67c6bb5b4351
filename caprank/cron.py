"""KFP's cron dialect: six fields, seconds first (robfig/cron), checked before submission.

Kubeflow's scheduler rejects a bad expression only when the recurring run is created on
the cluster; checking it here turns a late server error into a message that names the
field. A classic five-field crontab is the usual mistake, so it gets its own hint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from caprank.errors import CaprankError

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    question_mark: bool = False


FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31, question_mark=True),
    _Field("month", 1, 12, names=tuple(_MONTHS)),
    _Field("day of week", 0, 6, names=tuple(_DAYS), question_mark=True),
)

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EVERY = re.compile(r"^@every\s+(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


class CronError(CaprankError):
    """A cron expression KFP's scheduler would reject."""


def _value(text: str, fld: _Field, expr: str) -> int:
    upper = text.upper()
    if fld.names and upper in fld.names:
        # month names are 1-based, day names 0-based (SUN = 0)
        return fld.names.index(upper) + (1 if fld.name == "month" else 0)
    if not text.isdigit():
        raise CronError(f"cron '{expr}': {fld.name} field has '{text}', which is not a number")
    value = int(text)
    if not fld.low <= value <= fld.high:
        raise CronError(
            f"cron '{expr}': {fld.name} value {value} is out of range {fld.low}-{fld.high}"
        )
    return value


def _check_field(part: str, fld: _Field, expr: str) -> None:
    for item in part.split(","):
        if item == "":
            raise CronError(f"cron '{expr}': {fld.name} field has an empty list item")
        if item == "?":
            if not fld.question_mark:
                raise CronError(f"cron '{expr}': '?' is only allowed in day of month/week")
            continue
        base, slash, step = item.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            raise CronError(f"cron '{expr}': {fld.name} step '{step}' must be a positive integer")
        if base == "*":
            continue
        low, dash, high = base.partition("-")
        first = _value(low, fld, expr)
        if dash:
            last = _value(high, fld, expr)
            if last < first:
                raise CronError(f"cron '{expr}': {fld.name} range {base} runs backwards")


def validate_kfp_cron(expr: str) -> str:
    """Return the expression stripped if KFP's scheduler accepts it, else raise CronError."""
    text = " ".join(str(expr).split())
    if not text:
        raise CronError("cron expression is empty")
    if text.startswith("@"):
        if text.lower() in DESCRIPTORS or _EVERY.match(text):
            return text
        raise CronError(
            f"cron '{text}': unknown descriptor (use one of {', '.join(DESCRIPTORS)} "
            "or '@every <duration>')"
        )
    parts = text.split(" ")
    if len(parts) == 5:
        raise CronError(
            f"cron '{text}' has 5 fields; KFP cron has 6, seconds first (did you mean '0 {text}'?)"
        )
    if len(parts) != 6:
        raise CronError(
            f"cron '{text}' has {len(parts)} fields; KFP cron has 6: "
            "second minute hour day-of-month month day-of-week"
        )
    for part, fld in zip(parts, FIELDS, strict=True):
        _check_field(part, fld, text)
    return text
