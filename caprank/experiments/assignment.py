"""Sticky assignment: a unit (user, else session) always lands in the same arm.

The arm is a pure function of (experiment id, unit id, share): SHA-256 of the two, salted
by the experiment id so one user's arms in two experiments are independent, read as a
uniform number in [0, 1); below ``share`` is the treatment. No table of assignments is
kept, so every replica and every restart agrees.
"""

from __future__ import annotations

import hashlib

CONTROL, TREATMENT = "control", "treatment"
ARMS = (CONTROL, TREATMENT)


def unit_hash(experiment_id: str, unit_id: str) -> float:
    """A uniform number in [0, 1) for ``unit_id`` within ``experiment_id``."""
    digest = hashlib.sha256(f"{experiment_id}\x00{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(experiment_id: str, unit_id: str, share: float) -> str:
    """``treatment`` for a ``share`` of units, ``control`` for the rest, always the same."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    if not unit_id:
        raise ValueError("unit id must be a non-empty string")
    return TREATMENT if unit_hash(experiment_id, unit_id) < share else CONTROL


def unit_of(user_id: str | None, session_id: str | None, unit: str = "user") -> str:
    """The id assignment hashes: the user when ``unit`` is user and one is known."""
    if unit == "user" and user_id:
        return user_id
    if session_id:
        return session_id
    raise ValueError("an event needs a user_id or a session_id to be assigned")
