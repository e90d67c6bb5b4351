"""Experiences (seed 002 §2.1) from the two training data settings, as parallel arrays.

(a) labeled intents: each (intent, relevant capability) pair is a successful single-step
    episode; ``negatives`` sampled other capabilities are failed ones.
(b) interaction logs: every logged event is a step of its session, in time order, with
    the reward its outcome earned; successes (and partials, at their reward) are ranking
    positives, and TD(lambda) targets run along the session. With ``ips_clip`` each
    positive's ranking weight is also multiplied by its clipped inverse propensity
    (``caprank.learning.propensity``), so the logging policy's choices and the position
    bias are not learned as relevance.

Intents are indices into an intent table (texts and their vectors live with the caller);
capabilities are indices into the training catalog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from caprank.config import RewardConfig, TDConfig
from caprank.errors import DataError
from caprank.learning.propensity import ips_weights
from caprank.learning.rewards import outcome_values, rewards
from caprank.learning.td import td_lambda_targets

LABELS, LOGS = 0, 1
NO_TIME = np.iinfo(np.int64).min  # a label's time: it has none, so it is the oldest


@dataclass
class Experiences:
    intent: np.ndarray  # (N,) index into the intent table
    capability: np.ndarray  # (N,) index into the catalog
    reward: np.ndarray  # (N,) float64
    positive: np.ndarray  # (N,) weight in the ranking loss; 0: not a positive
    session_end: np.ndarray  # (N,) bool: last step of its session
    source: np.ndarray  # (N,) LABELS or LOGS
    time: np.ndarray  # (N,) int64 microseconds since the epoch (UTC); labels: NO_TIME

    def __len__(self) -> int:
        return len(self.intent)

    def most_recent(self, n: int) -> np.ndarray:
        """Rows of the ``n`` most recent experiences by time, oldest first (what a replay
        buffer of capacity ``n`` holds). Ties go to the later row, so the rows of one
        session stay in order; labels, which have no time, are dropped first. When all
        fit, every row in row order."""
        if n >= len(self):
            return np.arange(len(self))
        order = np.lexsort((np.arange(len(self)), self.time))
        return order[max(0, len(order) - n) :]

    def td_targets(self, next_values: np.ndarray, td: TDConfig) -> np.ndarray:
        """Lambda-returns; ``next_values[t]`` estimates event t+1 (sessions are contiguous)."""
        return td_lambda_targets(self.reward, next_values, self.session_end, td.gamma, td.lam)

    @staticmethod
    def concat(parts: Sequence[Experiences]) -> Experiences:
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty()
        return Experiences(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS)  # type: ignore[arg-type]
        )


_FIELDS = ("intent", "capability", "reward", "positive", "session_end", "source", "time")


def empty() -> Experiences:
    z = np.zeros(0, dtype=np.int64)
    return Experiences(z, z, z.astype(float), z.astype(float), z.astype(bool), z, z)


def from_labels(
    intent_ids: Sequence[str],
    capability_ids: Sequence[str],
    intent_index: Mapping[str, int],
    capability_index: Mapping[str, int],
    reward_cfg: RewardConfig,
    negatives: int,
    rng: np.random.Generator,
    source: str = "labels.parquet",
) -> Experiences:
    """Setting (a): one success per label, plus ``negatives`` sampled failures each."""
    n_caps = len(capability_index)
    ints, caps = [], []
    for row, (q, c) in enumerate(zip(intent_ids, capability_ids, strict=True)):
        if q not in intent_index:
            raise DataError(source, f"unknown intent {q!r}", row=row, field="intent_id")
        if c not in capability_index:
            raise DataError(source, f"unknown capability {c!r}", row=row, field="capability_id")
        ints.append(intent_index[q])
        caps.append(capability_index[c])
    i = np.asarray(ints, dtype=np.int64)
    c = np.asarray(caps, dtype=np.int64)
    pos = Experiences(
        i,
        c,
        np.full(len(i), reward_cfg.success),
        np.ones(len(i)),
        np.ones(len(i), dtype=bool),
        np.full(len(i), LABELS),
        np.full(len(i), NO_TIME),
    )
    if negatives <= 0 or n_caps < 2:
        return pos
    relevant = set(zip(i.tolist(), c.tolist(), strict=True))
    ni = np.repeat(i, negatives)
    nc = rng.integers(0, n_caps, size=len(ni))
    keep = np.array(
        [(a, b) not in relevant for a, b in zip(ni.tolist(), nc.tolist(), strict=True)], dtype=bool
    )
    ni, nc = ni[keep], nc[keep]
    neg = Experiences(
        ni,
        nc,
        np.full(len(ni), reward_cfg.failure),
        np.zeros(len(ni)),
        np.ones(len(ni), dtype=bool),
        np.full(len(ni), LABELS),
        np.full(len(ni), NO_TIME),
    )
    return Experiences.concat([pos, neg])


def from_interactions(
    events: pa.Table,
    intent_index: Mapping[str, int],
    capability_index: Mapping[str, int],
    reward_cfg: RewardConfig,
    source: str = "interactions.parquet",
    ips_clip: float | None = None,
) -> Experiences:
    """Setting (b): events grouped by session, in time order; intents keyed by their text.

    ``ips_clip``: weight positives by 1 / max(propensity * examination(rank), ips_clip),
    rescaled to mean 1 over the positives; None: unweighted."""
    if events.num_rows == 0:
        return empty()
    sessions = np.asarray(events["session_id"].to_pylist(), dtype=object)
    stamps = events["timestamp"].cast(pa.int64()).to_numpy()
    order = np.lexsort((np.arange(len(stamps)), stamps, sessions.astype(str)))
    texts = events["intent_text"].to_pylist()
    caps = events["selected_capability"].to_pylist()
    outcomes = events["outcome"].to_pylist()
    r = rewards(
        outcomes,
        events["execution_time_ms"].to_numpy(zero_copy_only=False),
        events["feedback"].to_pylist(),
        reward_cfg,
        source,
    )
    try:
        ii = np.array([intent_index[texts[k]] for k in order], dtype=np.int64)
    except KeyError as exc:
        raise DataError(
            source, f"intent text not in the intent table: {exc}", field="intent_text"
        ) from exc
    missing = [k for k in order if caps[k] not in capability_index]
    if missing:
        raise DataError(
            source,
            f"unknown capability {caps[missing[0]]!r}",
            row=int(missing[0]),
            field="selected_capability",
        )
    cc = np.array([capability_index[caps[k]] for k in order], dtype=np.int64)
    values = outcome_values(reward_cfg)
    top = max(values["success"], 1e-9)
    positive = np.array([max(0.0, values[outcomes[k]]) / top for k in order])
    positive[positive <= max(0.0, values["failure"]) / top] = 0.0
    if ips_clip is not None:
        w = ips_weights(
            events["propensity"].to_numpy(zero_copy_only=False),
            events["rank"].to_numpy(zero_copy_only=False),
            ips_clip,
        )[order]
        hit = positive > 0
        if hit.any():
            positive = positive * w / w[hit].mean()
    s = sessions[order]
    end = np.ones(len(order), dtype=bool)
    end[:-1] = s[:-1] != s[1:]
    return Experiences(
        ii, cc, r[order], positive, end, np.full(len(order), LOGS), stamps[order].astype(np.int64)
    )
