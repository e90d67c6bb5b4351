"""Privacy policy applied wherever interaction events enter the system.

PII scrubbing replaces emails, phone numbers, card and account numbers and IP addresses
in free text with typed placeholders; retention and opt-out drop events entirely.
The serving feedback path and the pipeline's ingest both use these functions.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import PrivacyConfig

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6 = re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
# Runs of 8-19 digits, optionally split by spaces or dashes: card and account numbers.
_DIGIT_RUN = re.compile(r"(?<![\w.])\d(?:[ -]?\d){7,18}(?![\w.])")
_PHONE = re.compile(
    r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w.])"
)

_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _replace_number(match: re.Match) -> str:
    if _DATE.fullmatch(match.group(0)):
        return match.group(0)
    digits = _digits(match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return "[CARD]"
    return "[ACCOUNT]"


def _replace_phone(match: re.Match) -> str:
    text = match.group(0)
    if _DATE.fullmatch(text):
        return text
    digits = _digits(text)
    # A phone number has 7-15 digits and some separator or a leading '+'.
    if 7 <= len(digits) <= 15 and (text.startswith("+") or re.search(r"[ .()-]", text)):
        return "[PHONE]"
    return text


def scrub_pii(text: str) -> str:
    """Replace personal data in ``text`` with placeholders such as ``[EMAIL]``."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IPV4.sub("[IP]", text)
    text = _IPV6.sub("[IP]", text)
    text = _IBAN.sub("[ACCOUNT]", text)
    text = _PHONE.sub(_replace_phone, text)
    text = _DIGIT_RUN.sub(_replace_number, text)
    return text


def apply_policy(interactions: pa.Table, policy: PrivacyConfig, now: datetime) -> pa.Table:
    """Drop events past retention or from opted-out users; scrub intent text if enabled."""
    table = interactions
    if table.num_rows == 0:
        return table
    cutoff = pa.scalar(now - timedelta(days=policy.retention_days), type=table["timestamp"].type)
    keep = pc.greater_equal(table["timestamp"], cutoff)
    if policy.opt_out_users:
        opted = pc.is_in(table["user_id"], value_set=pa.array(policy.opt_out_users, pa.string()))
        keep = pc.and_(keep, pc.invert(pc.fill_null(opted, False)))
    table = table.filter(keep)
    if policy.scrub_pii and table.num_rows:
        texts = table["intent_text"].to_pylist()
        scrubbed = pa.array([scrub_pii(t) for t in texts], pa.string())
        table = table.set_column(
            table.schema.get_field_index("intent_text"), "intent_text", scrubbed
        )
    return table
