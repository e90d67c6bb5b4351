"""PII scrubbing, retention and opt-out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from caprank.config import PrivacyConfig
from caprank.data.schemas import INTERACTIONS
from caprank.privacy import apply_policy, scrub_pii


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+x@example.co.uk please", "mail me at [EMAIL] please"),
        ("call +1 415-555-0132 now", "call [PHONE] now"),
        ("call (020) 7946 0958", "call [PHONE]"),
        ("card 4111 1111 1111 1111 expires", "card [CARD] expires"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("account 12345678901", "account [ACCOUNT]"),
        ("iban DE89 3704 0044 0532 0130 00 ok", "iban [ACCOUNT] ok"),
        ("from 192.168.10.254 today", "from [IP] today"),
        ("from 2001:db8:85a3:0:0:8a2e:370:7334", "from [IP]"),
        ("book a table for 4 on 2026-11-23 at 19:30", "book a table for 4 on 2026-11-23 at 19:30"),
        ("recipes with beef and 2 eggs", "recipes with beef and 2 eggs"),
        ("weather in Paris tomorrow", "weather in Paris tomorrow"),
    ],
)
def test_scrub_pii(text, expected):
    assert scrub_pii(text) == expected


def _events(now: datetime) -> pa.Table:
    rows = []
    for i, (age_days, user) in enumerate([(1, "u1"), (400, "u2"), (3, "u3"), (2, None)]):
        rows.append(
            {
                "event_id": f"e{i}",
                "timestamp": now - timedelta(days=age_days),
                "session_id": "s",
                "user_id": user,
                "intent_id": None,
                "intent_text": f"contact me at user{i}@mail.com",
                "context_tools": [],
                "candidate_ids": ["c1"],
                "selected_capability": "c1",
                "rank": 1,
                "outcome": "success",
                "execution_time_ms": 10.0,
                "feedback": None,
                "propensity": 1.0,
                "model_version": None,
            }
        )
    return pa.Table.from_pylist(rows, schema=INTERACTIONS)


def test_apply_policy_retention_optout_scrub():
    now = datetime(2026, 11, 23, tzinfo=UTC)
    policy = PrivacyConfig(retention_days=365, opt_out_users=["u3"], scrub_pii=True)
    out = apply_policy(_events(now), policy, now)
    assert out["event_id"].to_pylist() == ["e0", "e3"]
    assert set(out["intent_text"].to_pylist()) == {"contact me at [EMAIL]"}


def test_apply_policy_switches_off():
    now = datetime(2026, 11, 23, tzinfo=UTC)
    policy = PrivacyConfig(retention_days=1000, opt_out_users=[], scrub_pii=False)
    out = apply_policy(_events(now), policy, now)
    assert out.num_rows == 4
    assert "user0@mail.com" in out["intent_text"][0].as_py()
