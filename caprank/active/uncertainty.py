"""Which served intents are the ranker least certain about.

Three signals, each in [0, 1] (1: most uncertain), combined with ``active.*_weight``:

* margin: 1 - tanh((s1 - s2) / 2) of the top two scores (a near tie between the first
  two capabilities);
* probability: 1 - the calibrated success probability of the top capability (the value
  head through the bundle's calibration);
* disagreement: the share of baselines (BM25, dense cosine) whose top-1 differs from the
  ranker's.

``select`` then fills the batch. With ``active.evidence`` (the default) it is greedy:
each intent's priority is its uncertainty to the power ``active.uncertainty_power``
times its novelty, the expected share of a label it would add to a capability, sum over
capabilities c of p(c) / (1 + n(c)), where n(c) counts c's training labels plus the
probability mass of the intents already queued: a label for a capability the model has
been taught many times, or a near-duplicate of an intent already in the batch, adds
little. p, which capability the intent belongs to, is a softmax over
``active.novelty_source``: the text prior (cosine of the intent and capability text
vectors) by default, because the ranker's learned residual is gated by the very
evidence n(c) and so leans towards capabilities that were taught; its temperature
(``active.temperature``) is by default the one under which the train labels are most
likely (``fit_temperature``). Without ``active.evidence``: the most uncertain intents,
at most one per top-1 capability while others remain (``active.diverse``). What each
choice measured: docs/online-learning.md.

Served traffic comes from the serving request log (``<feedback_dir>/served/``) or the
dataset's interactions; each distinct intent text counts once, with its request count.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from caprank.config import ActiveConfig
from caprank.errors import DataError
from caprank.model.index import RankIndex

Encoder = Callable[[list[str]], np.ndarray]


@dataclass
class Uncertain:
    """One intent's uncertainty and its top candidates (capability id, score)."""

    text: str
    requests: int
    margin: float
    probability: float
    disagreement: float
    uncertainty: float
    candidates: list[tuple[str, float]] = field(default_factory=list)
    likely: dict[str, float] = field(default_factory=dict)  # softmax of scores, >= MIN_MASS


MIN_MASS = 1e-3  # softmax mass below this is dropped from ``Uncertain.likely``


def served_texts(source: str | Path | pa.Table) -> Counter[str]:
    """Request count per intent text: an interactions table, or a serving request log
    directory (its ``served/seg-*.log`` files, or the folder holding ``served/``)."""
    if isinstance(source, pa.Table):
        return Counter(source["intent_text"].to_pylist())
    from caprank.online.journal import read_records
    from caprank.online.served import SERVED_DIR

    root = Path(source)
    if (root / SERVED_DIR).is_dir():
        root = root / SERVED_DIR
    files = sorted(root.glob("seg-*.log"))
    if not files:
        raise DataError(str(root), "no served-ranking log segments (seg-*.log) here")
    counts: Counter[str] = Counter()
    for path in files:
        for rec in read_records(path):
            text = rec.get("intent_text")
            if isinstance(text, str) and text:
                counts[text] += 1
    return counts


def signals(
    scores: np.ndarray,
    top_probability: np.ndarray,
    baselines: Mapping[str, np.ndarray],
    cfg: ActiveConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(margin, probability, disagreement, combined) per row of ``scores`` (B, C)."""
    if scores.shape[1] < 2:
        raise ValueError("uncertainty needs at least two capabilities")
    top2 = -np.sort(-scores, axis=1)[:, :2]
    margin = 1.0 - np.tanh((top2[:, 0] - top2[:, 1]) / 2.0)
    prob = 1.0 - np.clip(top_probability, 0.0, 1.0)
    best = np.argmax(scores, axis=1)
    if baselines:
        disagree = np.mean([np.argmax(b, axis=1) != best for b in baselines.values()], axis=0)
    else:
        disagree = np.zeros(len(scores))
    w = np.array([cfg.margin_weight, cfg.probability_weight, cfg.disagreement_weight])
    if not baselines:
        w[2] = 0.0
    if w.sum() <= 0:
        raise ValueError("active.*_weight: at least one signal needs a positive weight")
    combined = (w[0] * margin + w[1] * prob + w[2] * disagree) / w.sum()
    return margin, prob, disagree.astype(float), combined


def rank_uncertain(
    index: RankIndex,
    texts: Sequence[str],
    dense: np.ndarray,
    baselines: Mapping[str, np.ndarray],
    cfg: ActiveConfig,
    requests: Sequence[int] | None = None,
    likely: np.ndarray | None = None,
) -> list[Uncertain]:
    """Every intent with its signals and top ``cfg.top_candidates``, most uncertain first
    (ties: more requests, then text); ``likely`` (B, C): each intent's distribution over
    capabilities for novelty (default: the softmax of the ranker's scores)."""
    scores = index.scores(dense, list(texts))
    best = np.argmax(scores, axis=1)
    top_p = np.array(
        [
            float(index.success_probability(dense[i], texts[i], best[i : i + 1])[0])
            for i in range(len(texts))
        ]
    )
    margin, prob, disagree, combined = signals(scores, top_p, baselines, cfg)
    k = min(cfg.top_candidates, scores.shape[1])
    mass = softmax(scores) if likely is None else likely
    counts = list(requests) if requests is not None else [1] * len(texts)
    out = []
    for i, text in enumerate(texts):
        top = np.argsort(-scores[i], kind="stable")[:k]
        out.append(
            Uncertain(
                text,
                int(counts[i]),
                round(float(margin[i]), 6),
                round(float(prob[i]), 6),
                round(float(disagree[i]), 6),
                round(float(combined[i]), 6),
                [(index.capability_ids[j], round(float(scores[i, j]), 6)) for j in top],
                {
                    index.capability_ids[j]: float(mass[i, j])
                    for j in np.flatnonzero(mass[i] >= MIN_MASS)
                },
            )
        )
    out.sort(key=lambda u: (-u.uncertainty, -u.requests, u.text))
    return out


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row softmax of ``scores / temperature`` (1: the scale of the margin term)."""
    z = np.exp((scores - scores.max(axis=1, keepdims=True)) / temperature)
    return z / z.sum(axis=1, keepdims=True)


TEMPERATURES = np.geomspace(0.005, 2.0, 61)  # the grid ``fit_temperature`` searches
NO_LABEL_TEMPERATURE = 0.05  # without train labels to fit on: the cosine prior's scale


def fit_temperature(scores: np.ndarray, columns: np.ndarray) -> float:
    """The grid temperature under which ``softmax(scores / T)`` gives row i's labeled
    capability ``columns[i]`` the highest mean log-likelihood (no labels: the fallback):
    a distribution as sharp as the labels say the scores deserve."""
    if len(columns) == 0:
        return NO_LABEL_TEMPERATURE
    s = np.asarray(scores, dtype=np.float64)
    s = s - s.max(axis=1, keepdims=True)
    picked = s[np.arange(len(columns)), np.asarray(columns)]
    nll = [float(np.mean(np.log(np.exp(s / t).sum(axis=1)) - picked / t)) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def novelty(likely: Mapping[str, float], evidence: Mapping[str, float]) -> float:
    """Expected share of a new label: sum of p(c) / (1 + n(c)) over likely capabilities."""
    return float(sum(p / (1.0 + evidence.get(c, 0.0)) for c, p in likely.items()))


def select(
    items: Sequence[Uncertain],
    budget: int,
    diverse: bool = True,
    evidence: Mapping[str, float] | None = None,
    power: float = 1.0,
) -> list[Uncertain]:
    """The batch of ``budget`` intents from ``items`` (most uncertain first).

    ``evidence`` (training labels per capability): greedy by uncertainty^``power`` x
    novelty, each pick adding its ``likely`` mass to the evidence, so near-duplicates of
    a queued intent and intents of well-labeled capabilities wait (see the module doc).
    Without it, ``diverse``: at most one per top-1 capability while others remain, then
    the rest in order; neither: the ``budget`` first."""
    if evidence is not None:
        return _greedy(items, budget, dict(evidence), power)
    if not diverse:
        return list(items[:budget])
    seen: set[str] = set()
    first, rest = [], []
    for u in items:
        top = u.candidates[0][0] if u.candidates else None
        (rest if top in seen else first).append(u)
        seen.add(top)
    return (first + rest)[:budget]


def _greedy(
    items: Sequence[Uncertain], budget: int, counts: dict[str, float], power: float
) -> list[Uncertain]:
    """Lazy greedy: a priority only falls as evidence grows, so a stale heap entry that
    still tops the heap after its refresh is the true maximum (ties: ``items`` order)."""
    weight = [u.uncertainty**power for u in items]
    heap = [(-weight[i] * novelty(u.likely, counts), i) for i, u in enumerate(items)]
    heapq.heapify(heap)
    out: list[Uncertain] = []
    while heap and len(out) < budget:
        _, i = heapq.heappop(heap)
        fresh = -weight[i] * novelty(items[i].likely, counts)
        if heap and (fresh, i) > heap[0]:
            heapq.heappush(heap, (fresh, i))
            continue
        out.append(items[i])
        for c, p in items[i].likely.items():
            counts[c] = counts.get(c, 0.0) + p
    return out
