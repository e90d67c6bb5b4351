"""PII scrubbing of free text: e-mails, phone numbers, card and account numbers, IPs.

Each value is replaced whole by a typed placeholder (``[EMAIL]``, ``[PHONE]``,
``[CARD]``, ``[ACCOUNT]``, ``[IP]``) so the text stays readable and no fragment of the
value survives. Recall and precision per class are measured on the labelled corpus in
``tests/data/pii_corpus.jsonl`` (figures in docs/security.md).

Numbers are found as whole *spans* (digits and parenthesised digit groups joined by single
space, dash, dot or slash separators, optionally after a ``+``) and the span is classified
as a whole, so an international phone number is never cut in two. Dates and clock times are
matched first and left alone. No dependency is needed: the rules are plain regular
expressions, Luhn for cards and :mod:`ipaddress` for IPv6 validation.
"""

from __future__ import annotations

import ipaddress
import re

# Local part: anything but whitespace and the delimiters around an address, so unicode
# (EAI, RFC 6532) local parts match; domain labels likewise, with an alphabetic or
# punycode top-level label.
_EMAIL = re.compile(
    r"""(?<![^\s<>()\[\]\\,;:"'`])"""
    r"""[^\s@<>()\[\]\\,;:"'`][^\s@<>()\[\]\\,;:"`]{0,63}@"""
    r"""(?:[^\s@<>()\[\]\\,;:"'`./!?]{1,63}\.)+"""
    r"""(?:xn--[a-z0-9-]{2,59}|[^\W\d_][^\s@<>()\[\]\\,;:"'`./!?\d]{1,62})"""
    r"""(?![^\s<>()\[\]\\,;:"'`.!?])""",
    re.IGNORECASE,
)
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
)
# Candidates for IPv6 in every form (full, compressed, IPv4-mapped, with a zone id);
# ipaddress decides, so clock times such as 10:15:30 are left alone.
_IPV6 = re.compile(
    r"(?<![\w:.%])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})"
    r"(?:%[0-9A-Za-z_\-]+(?:\.[0-9A-Za-z_\-]+)*)?(?![\w:%])"
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")

_DATE = (
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?"
    r"|\d{1,2}[-./]\d{1,2}[-./](?:\d{4}|\d{2})"
)
_TIME = r"\d{1,2}:\d{2}(?::\d{2})?"
_GROUP = r"(?:\(\d{1,5}\)|\d+)"
_NUMBER = re.compile(
    rf"(?<![\w.+\-/])(?:(?P<date>(?:{_DATE}))(?![\w]|[-./]\d)"
    rf"|(?P<time>{_TIME})(?![\w])"
    rf"|(?P<num>\+?{_GROUP}(?:[ \-./]?{_GROUP})*)(?![\w]))"
)
_GROUPS = re.compile(r"\d+")


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


def _card_grouping(span: str, groups: list[str]) -> bool:
    """Card numbers are written ungrouped, in fours, or as Amex/Diners 4-6-5 / 4-6-4."""
    seps = set(re.sub(r"\d", "", span))
    if len(groups) == 1:
        return True
    if len(seps) != 1 or seps & {"/", "(", ")"}:
        return False
    lengths = [len(g) for g in groups]
    if lengths in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4


def _thousands(span: str, groups: list[str]) -> bool:
    """A quantity grouped in thousands (``8 336 817``, ``1.250.000``), not a phone."""
    return (
        len(groups) > 1
        and not span.startswith(("+", "0", "("))
        and len(groups[0]) <= 3
        and all(len(g) == 3 for g in groups[1:])
        and len(set(re.sub(r"\d", "", span))) == 1
    )


_YEAR_RANGE = re.compile(r"(?:19|20)\d\d-(?:19|20)\d\d")


def _phone(span: str, groups: list[str], digits: str) -> bool:
    if span.startswith("+"):
        return 8 <= len(digits) <= 15
    if span.startswith("00") and len(groups) > 1:
        return 8 <= len(digits) - 2 <= 15  # the international call prefix written as 00
    if _YEAR_RANGE.fullmatch(span):
        return False
    if len(groups) == 1:
        # A national number written without separators: trunk prefix 0, 10-11 digits.
        return digits.startswith("0") and 10 <= len(digits) <= 11
    if not 7 <= len(digits) <= 13 or _thousands(span, groups):
        return False
    if [len(g) for g in groups] == [5, 4] and "-" in span:
        return False  # a US ZIP+4 code
    if len(groups[0]) == 1 and "(" not in span and len(digits) < 10:
        return False
    return all(len(g) >= 2 for g in groups[1:])


def _classify(span: str) -> str | None:
    groups = _GROUPS.findall(span)
    digits = "".join(groups)
    if not span.startswith("+") and 13 <= len(digits) <= 19 and _card_grouping(span, groups):
        return "[CARD]" if _luhn_ok(digits) else "[ACCOUNT]"
    if _phone(span, groups, digits):
        return "[PHONE]"
    if len(groups) == 1 and 8 <= len(digits) <= 19 and not span.startswith("+"):
        return "[ACCOUNT]"
    return None


def _replace_number(match: re.Match) -> str:
    span = match.group("num")
    if span is None:
        return match.group(0)  # a date or a clock time
    label = _classify(span)
    return label if label else span


def _replace_ipv6(match: re.Match) -> str:
    text = match.group(0)
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return text
    return "[IP]"


# Every pattern above needs an "@" (e-mail), two ":" (IPv6) or a digit (the rest): a text
# with none of them is returned as it is after one search instead of five substitutions.
_MAY_HOLD_PII = re.compile(r"[\d@:]")


def scrub_pii(text: str) -> str:
    """Replace personal data in ``text`` with placeholders such as ``[EMAIL]``."""
    return text if _MAY_HOLD_PII.search(text) is None else _scrub_every_pattern(text)


def _scrub_every_pattern(text: str) -> str:
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IPV6.sub(_replace_ipv6, text)
    text = _IPV4.sub("[IP]", text)
    text = _IBAN.sub("[ACCOUNT]", text)
    return _NUMBER.sub(_replace_number, text)


def contains_pii(text: str) -> bool:
    """Whether ``scrub_pii`` would change ``text`` (used to screen identifiers)."""
    return scrub_pii(text) != text
