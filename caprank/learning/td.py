"""TD(lambda) targets over session sequences (seed 002 §2.3).

A session is a time-ordered list of events; event t's action value Q(s_t, a_t) is
bootstrapped from the next event's estimate. The lambda-return, computed backwards:

    G_T = r_T                                        (last event of the session)
    G_t = r_t + gamma * ((1 - lambda) * V_{t+1} + lambda * G_{t+1})

lambda = 0 gives one-step TD targets, lambda = 1 the discounted Monte-Carlo return.
"""

from __future__ import annotations

import numpy as np


def td_lambda_targets(
    rewards: np.ndarray,
    next_values: np.ndarray,
    session_end: np.ndarray,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """Lambda-returns for events laid out session after session, in time order.

    ``next_values[t]`` is the current estimate for event t+1 (ignored where
    ``session_end[t]``, the last event of its session).
    """
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(next_values, dtype=np.float64)
    end = np.asarray(session_end, dtype=bool)
    if not (r.shape == v.shape == end.shape):
        raise ValueError("rewards, next_values and session_end must have one entry per event")
    if r.size and not end[-1]:
        raise ValueError("the last event must end its session")
    g = np.empty_like(r)
    following = 0.0
    for t in range(r.size - 1, -1, -1):
        if end[t]:
            g[t] = r[t]
        else:
            g[t] = r[t] + gamma * ((1.0 - lam) * v[t] + lam * following)
        following = g[t]
    return g


def td_errors(targets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """delta = target - current estimate (its absolute value becomes a PER priority)."""
    return np.asarray(targets, dtype=np.float64) - np.asarray(values, dtype=np.float64)
