"""From a dataset, its embeddings and features to the trainer's inputs.

Decides what the model learns from (``training.source``), which intents validate (the
labels' valid split, else a seeded share of train intents; without labels, the valid
period of the log's temporal split), which capabilities get an id-channel row and may be
InfoNCE negatives (those with training positives), and each one's evidence (its number
of training positives, the residual gate's n). Test labels, and the test period of a log
without labels, are never read here. numpy + pyarrow only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from caprank.config import CaprankConfig
from caprank.errors import DataError
from caprank.evaluation.temporal import log_splits, logs_only
from caprank.learning.experiences import Experiences, from_interactions, from_labels
from caprank.model.features import FeatureScaler, feature_columns, latest_rows
from caprank.model.inputs import CatalogInputs, catalog_graph
from caprank.model.lexicon import Lexicon
from caprank.training.trainer import TrainData

Encoder = Callable[[list[str]], np.ndarray]


@dataclass
class Prepared:
    data: TrainData
    inputs: CatalogInputs
    lexicon: Lexicon
    scaler: FeatureScaler
    tool_rows: dict[str, int]
    id_capabilities: list[str]
    evidence: list[float]  # training positives per id_capabilities row (residual gate)
    intent_texts: list[str]
    sources: list[str]
    n_valid: int
    summary: dict


def _labels(ds_labels: pa.Table, split: str) -> tuple[list[str], list[str]]:
    mask = np.asarray(ds_labels["split"].to_pylist(), dtype=object) == split
    ids = np.asarray(ds_labels["intent_id"].to_pylist(), dtype=object)[mask]
    caps = np.asarray(ds_labels["capability_id"].to_pylist(), dtype=object)[mask]
    return ids.tolist(), caps.tolist()


def _sources(cfg: CaprankConfig, has_labels: bool, has_logs: bool) -> list[str]:
    src = cfg.training.source
    wanted = {"auto": ["labels", "interactions"], "both": ["labels", "interactions"]}.get(
        src, [src]
    )
    out = [
        s for s in wanted if (s == "labels" and has_labels) or (s == "interactions" and has_logs)
    ]
    if not out or (src != "auto" and len(out) < len(wanted)):
        raise DataError(
            "<dataset>",
            f"training.source={src!r} but the dataset has "
            f"{'train labels' if has_labels else 'no train labels'} and "
            f"{'interactions' if has_logs else 'no interactions'}",
            field="training.source",
        )
    return out


def _capability_tools(ds, tool_ids: Sequence[str], cap_ids: list[str]) -> list[list[int]]:
    """Each capability's tool rows; its tools and its order must match the embeddings."""
    tool_pos = {t: i for i, t in enumerate(tool_ids)}
    cap_tools = []
    for row, tools in enumerate(ds.capabilities["tool_ids"].to_pylist()):
        missing = [t for t in tools or [] if t not in tool_pos]
        if missing:
            raise DataError(
                "capabilities.parquet",
                f"tools without embeddings: {missing[:5]}",
                row=row,
                field="tool_ids",
            )
        cap_tools.append([tool_pos[t] for t in tools])
    if list(ds.capabilities["capability_id"].to_pylist()) != cap_ids:
        raise DataError(
            "capability_embeddings.parquet",
            "embeddings do not cover the dataset's capabilities in order",
            field="capability_id",
        )
    return cap_tools


def _log_periods(ds, cfg: CaprankConfig) -> tuple[pa.Table, list[str], list[str]]:
    """The interactions training reads, and validation (text, capability) pairs. Without
    labels the log is cut by ``temporal_split``: the train period trains, the valid
    period's graded events validate, the test period is never read. With labels: the
    whole log trains and the labels validate."""
    if not logs_only(ds):
        return ds.interactions, [], []
    _, part = log_splits(ds, cfg.evaluation)
    ev = cfg.evaluation
    graded = {"success": ev.grade_success, "partial": ev.grade_partial}
    valid = ds.interactions.filter(pa.array(part == "valid"))
    pairs = [
        (t, c)
        for t, c, o in zip(
            valid["intent_text"].to_pylist(),
            valid["selected_capability"].to_pylist(),
            valid["outcome"].to_pylist(),
            strict=True,
        )
        if graded.get(o, 0) > 0  # what evaluate counts relevant (queries_from_interactions)
    ]
    train = ds.interactions.filter(pa.array(part == "train"))
    return train, [t for t, _ in pairs], [c for _, c in pairs]


def _carve_valid(train_q: list[str], train_c: list[str], fraction: float, rng):
    """Hold a seeded ``fraction`` of the train intents out for validation (when the
    labels have no valid split): (train_q, train_c, valid_q, valid_c)."""
    uniq = sorted(set(train_q))
    n_valid = max(1, round(fraction * len(uniq)))
    held = set(rng.permutation(uniq)[:n_valid].tolist())
    keep = [q not in held for q in train_q]
    return (
        [q for q, k in zip(train_q, keep, strict=True) if k],
        [c for c, k in zip(train_c, keep, strict=True) if k],
        [q for q, k in zip(train_q, keep, strict=True) if not k],
        [c for c, k in zip(train_c, keep, strict=True) if not k],
    )


def train_pairs(ds, cfg: CaprankConfig) -> list[tuple[str, str]]:
    """(intent text, capability id) pairs of exactly what training learns relevance from:
    the train labels less the validation share ``prepare`` carves out of them (same seed),
    and/or the graded-positive events of the log's training period (``training.source``).
    What the embed stage fine-tunes the encoder on: validation and test never enter."""
    train_q, train_c = _labels(ds.labels, "train")
    valid_q, _ = _labels(ds.labels, "valid")
    sources = _sources(cfg, bool(train_q), ds.interactions.num_rows > 0)
    if not valid_q and train_q:
        rng = np.random.default_rng(cfg.training.seed)  # prepare's first draw: same carve
        train_q, train_c, _, _ = _carve_valid(train_q, train_c, cfg.training.valid_fraction, rng)
    pairs: list[tuple[str, str]] = []
    if "labels" in sources:
        texts_by_id = dict(
            zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
        )
        pairs += [(texts_by_id[q], c) for q, c in zip(train_q, train_c, strict=True)]
    if "interactions" in sources:
        events, _, _ = _log_periods(ds, cfg)
        ev = cfg.evaluation
        graded = {"success": ev.grade_success, "partial": ev.grade_partial}
        pairs += [
            (t, c)
            for t, c, o in zip(
                events["intent_text"].to_pylist(),
                events["selected_capability"].to_pylist(),
                events["outcome"].to_pylist(),
                strict=True,
            )
            if c is not None and graded.get(o, 0) > 0
        ]
    return pairs


def _intent_table(
    labeled: Sequence[str], texts_by_id: dict[str, str], log_texts: Sequence[str]
) -> dict[str, int]:
    """Every text the model sees -> its row: labeled intents' texts, then logged texts."""
    texts: dict[str, int] = {}
    for q in labeled:
        if q not in texts_by_id:
            raise DataError("labels.parquet", f"unknown intent {q!r}", field="intent_id")
        texts.setdefault(texts_by_id[q], len(texts))
    for t in log_texts:
        texts.setdefault(t, len(texts))
    return texts


def _scaled_features(
    features: pa.Table | None, cap_ids: list[str]
) -> tuple[FeatureScaler, np.ndarray]:
    """The scaler fit on the latest feature row per capability, and the scaled rows
    (no columns without features)."""
    if features is not None and features.num_rows:
        cols = feature_columns(features)
        raw = latest_rows(features, cap_ids, cols)
        scaler = FeatureScaler.fit(cols, raw)
        return scaler, scaler.transform(raw, len(cap_ids))
    return FeatureScaler((), np.zeros(0), np.ones(0)), np.zeros((len(cap_ids), 0), np.float32)


def _validation(
    valid_q: Sequence[str],
    valid_c: Sequence[str],
    by_id: dict[str, int],
    cap_rows: dict[str, int],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Validation intent rows (sorted) and each one's relevant capability rows."""
    valid_rel: dict[int, set[int]] = {}
    for q, c in zip(valid_q, valid_c, strict=True):
        valid_rel.setdefault(by_id[q], set()).add(cap_rows[c])
    rows = np.array(sorted(valid_rel), dtype=np.int64)
    return rows, [np.array(sorted(valid_rel[r])) for r in rows]


def prepare(
    ds,
    cfg: CaprankConfig,
    tool_ids: Sequence[str],
    tool_vectors: np.ndarray,
    capability_ids: Sequence[str],
    capability_text: np.ndarray,
    features: pa.Table | None,
    encode: Encoder,
    lexicon: Lexicon | None = None,
) -> Prepared:
    """Everything ``Trainer`` needs; ``encode`` embeds intent texts (unit vectors).

    ``lexicon``: use this vocabulary as it is instead of fitting one on the training
    texts (an incremental update keeps its base model's, so no idf moves)."""
    tc = cfg.training
    rng = np.random.default_rng(tc.seed)
    cap_ids = list(capability_ids)
    cap_rows = {c: i for i, c in enumerate(cap_ids)}
    cap_tools = _capability_tools(ds, tool_ids, cap_ids)
    texts_by_id = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    train_q, train_c = _labels(ds.labels, "train")
    valid_q, valid_c = _labels(ds.labels, "valid")
    sources = _sources(cfg, bool(train_q), ds.interactions.num_rows > 0)
    if not valid_q and train_q:
        train_q, train_c, valid_q, valid_c = _carve_valid(train_q, train_c, tc.valid_fraction, rng)
    events, log_valid_q, log_valid_c = _log_periods(ds, cfg)

    log_texts = events["intent_text"].to_pylist() if "interactions" in sources else []
    texts = _intent_table(list(train_q) + list(valid_q), texts_by_id, log_texts + log_valid_q)
    intent_texts = list(texts)
    dense = encode(intent_texts).astype(np.float32)
    by_id = {q: texts[texts_by_id[q]] for q in set(train_q) | set(valid_q)}
    by_id.update({t: texts[t] for t in log_valid_q})  # logs only: no labeled intent ids
    valid_q, valid_c = list(valid_q) + log_valid_q, list(valid_c) + log_valid_c

    parts = []
    if "labels" in sources:
        parts.append(
            from_labels(train_q, train_c, by_id, cap_rows, tc.reward, tc.label_negatives, rng)
        )
    if "interactions" in sources:
        clip = tc.ips_clip if tc.log_weighting == "ips" else None
        parts.append(from_interactions(events, texts, cap_rows, tc.reward, ips_clip=clip))
    exp = Experiences.concat(parts)
    if lexicon is None:  # it learns from what training sees: its intents and the catalog
        train_texts = [intent_texts[i] for i in np.unique(exp.intent)]
        cap_texts = [t for t in ds.capabilities["description"].to_pylist()]
        lexicon = Lexicon.fit(train_texts + cap_texts, tc.lexical_min_df, tc.lexical_max_terms)
    scaler, feats = _scaled_features(features, cap_ids)

    counts = np.bincount(exp.capability[exp.positive > 0], minlength=len(cap_ids))
    positives = counts > 0
    id_caps = [c for c, p in zip(cap_ids, positives, strict=True) if p]
    evidence = [float(counts[cap_rows[c]]) for c in id_caps]
    inputs = CatalogInputs(cap_ids, list(tool_ids), cap_tools, tool_vectors, capability_text, feats)
    tool_rows = {t: i for i, t in enumerate(tool_ids)}
    graph = catalog_graph(
        inputs,
        tool_rows,
        {c: i for i, c in enumerate(id_caps)},
        dict(zip(id_caps, evidence, strict=True)),
    )
    valid_rows, valid_relevant = _validation(valid_q, valid_c, by_id, cap_rows)
    data = TrainData(
        graph=graph,
        intent_dense=dense,
        intent_bags=lexicon.bags(intent_texts),
        experiences=exp,
        rankable=positives,
        valid_intents=valid_rows,
        valid_relevant=valid_relevant,
    )
    prep = Prepared(
        data, inputs, lexicon, scaler, tool_rows, id_caps, evidence, intent_texts, sources,
        len(valid_rows), {},
    )  # fmt: skip
    prep.summary = _summary(prep)
    return prep


def _summary(prep: Prepared) -> dict:
    """What the train stage reports and tracks about its inputs."""
    exp = prep.data.experiences
    return {
        "sources": prep.sources,
        "experiences": len(exp),
        "positives": int((exp.positive > 0).sum()),
        "intents": len(prep.intent_texts),
        "valid_intents": prep.n_valid,
        "capabilities": len(prep.inputs.capability_ids),
        "capabilities_with_positives": len(prep.id_capabilities),
        "tools": len(prep.inputs.tool_ids),
        "vocab": len(prep.lexicon),
        "features": list(prep.scaler.columns),
    }
