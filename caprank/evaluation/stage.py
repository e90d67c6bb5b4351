"""The pipeline's evaluate stage: score, compare with production, gate, register, report.

The candidate is scored exactly as the server would score it: its model directory is
loaded with ``caprank.online.models.load_model_dir`` over the catalog built from the
dataset, each test intent is encoded with the ranker's text model and ranked over the
whole catalog. The production model (registry alias ``production``), when there is one,
is scored on the same queries, and the gate (``caprank.evaluation.gate.decide``) decides
with a paired bootstrap on the primary metric plus the guardrails. The candidate is then
registered with lineage and alias ``challenger``; the report goes to ``out_dir`` and
into the training run.

Scoring latency is the time of ``ranker.query`` + ``ranker.score`` over the whole
catalog for one intent, in this process; the intent encoding is excluded (the server
caches it, and it does not depend on the model being gated).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caprank import registry
from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset, dataset_hash, load_dataset
from caprank.errors import DataError
from caprank.evaluation.gate import GateDecision, decide
from caprank.evaluation.metrics import OfflineMetrics, evaluate_scores, segment_means
from caprank.evaluation.queries import QuerySet, queries_from_labels
from caprank.evaluation.report import ModelSummary, ReportInputs, summarize_model, write_report
from caprank.files import atomic_write_json
from caprank.monitoring.drift import DriftResult
from caprank.online.catalog import Catalog, catalog_from_tables
from caprank.online.features import FeatureSnapshot, read_snapshot
from caprank.online.models import LoadedModel, load_model_dir, resolve_model_ref

# A baseline is a score matrix over (test queries x catalog), or a function making one.
Baseline = np.ndarray | Callable[[QuerySet, Catalog], np.ndarray]
RESULT_FILE = "evaluation.json"
MAX_CURVES = 9  # learning-curve panels in the report


@dataclass
class ScoredModel:
    """One model's scores on the test queries, with what the report and gate need."""

    name: str
    version: str
    scores: np.ndarray  # (queries, catalog)
    latencies_ms: np.ndarray  # per query: query + score
    probabilities: np.ndarray | None = None  # success probability of each top-k item
    outcomes: np.ndarray | None = None  # 1 where that item is relevant

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 99))

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))


@dataclass
class EvaluationResult:
    """What evaluate decided and where everything went."""

    improved: bool
    model_name: str
    version: str  # the registered challenger version
    decision: GateDecision
    metrics: dict[str, float]  # challenger summary
    production_version: str | None
    production_metrics: dict[str, float] | None
    baselines: dict[str, dict[str, float]]
    scoring_p50_ms: float
    scoring_p99_ms: float
    n_queries: int
    n_items: int
    segments: dict[str, dict[str, float]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "improved": self.improved,
            "model_name": self.model_name,
            "version": self.version,
            "decision": self.decision.to_dict(),
            "metrics": self.metrics,
            "production_version": self.production_version,
            "production_metrics": self.production_metrics,
            "baselines": self.baselines,
            "scoring_p50_ms": self.scoring_p50_ms,
            "scoring_p99_ms": self.scoring_p99_ms,
            "n_queries": self.n_queries,
            "n_items": self.n_items,
            "segments": self.segments,
            "paths": {k: str(v) for k, v in self.paths.items()},
        }


# --------------------------------------------------------------------------- scoring


def encode_intents(texts: list[str], text_model: str, cfg: CaprankConfig) -> np.ndarray:
    """Intent embeddings through the on-disk cache (what serving encodes per request)."""
    from caprank.embeddings.cache import embed_texts

    return np.asarray(embed_texts(texts, cfg, text_model=text_model)[0], dtype=np.float32)


def score_model(
    model: LoadedModel, queries: QuerySet, cfg: CaprankConfig, name: str = "challenger"
) -> ScoredModel:
    """Rank every catalog capability for every query through the model's ranker."""
    ranker = model.ranker
    texts = [str(t) for t in queries.texts]
    vecs = encode_intents(texts, ranker.text_model, cfg)
    n, c = len(texts), len(model.catalog)
    scores = np.empty((n, c), dtype=np.float64)
    latencies = np.empty(n, dtype=np.float64)
    k = min(max(cfg.evaluation.ks), c)
    probs = np.empty((n, k)) if ranker.has_value_head else None
    for i, (vec, text) in enumerate(zip(vecs, texts, strict=True)):
        t0 = time.perf_counter()
        row = ranker.score(ranker.query(vec, text), None)
        latencies[i] = (time.perf_counter() - t0) * 1000.0
        scores[i] = row
        if probs is not None:
            top = np.argsort(-row, kind="stable")[:k]
            probs[i] = np.clip(ranker.success_probability(vec, text, top), 0.0, 1.0)
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad.size:
        raise DataError(f"model {model.version}", "non-finite scores", row=int(bad[0]))
    outcomes = None
    if probs is not None:
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        outcomes = (np.take_along_axis(queries.relevance.toarray(), top, 1) > 0).astype(float)
    return ScoredModel(name, model.version, scores, latencies, probs, outcomes)


def offline_metrics(scored: ScoredModel, queries: QuerySet, cfg: CaprankConfig) -> OfflineMetrics:
    probs = None if scored.probabilities is None else scored.probabilities.ravel()
    outs = None if scored.outcomes is None else scored.outcomes.ravel()
    return evaluate_scores(
        scored.scores, queries.relevance, cfg.evaluation, probabilities=probs, outcomes=outs
    )


def default_baselines(ds: Dataset) -> dict[str, Baseline]:
    """BM25 over the capability texts the catalog serves (the simulator's logging policy).

    The training stage's baselines (dense cosine, logistic regression) are passed in by
    the caller when it has them.
    """
    from caprank.data.world import bm25_scores

    def bm25(queries: QuerySet, catalog: Catalog) -> np.ndarray:
        return bm25_scores(list(catalog.texts), [str(t) for t in queries.texts])

    return {"bm25": bm25}


# --------------------------------------------------------------------------- segments


def query_segments(ds: Dataset, queries: QuerySet, per_query: Mapping[str, np.ndarray]):
    """Metric means by the relevant capability's size (tools) and by warm/cold (whether
    any non-test label uses it: a cold capability was never seen in training)."""
    sizes = {
        c: f"size {min(len(t or ()), 3)}{'+' if len(t or ()) >= 3 else ''}"
        for c, t in zip(
            ds.capabilities["capability_id"].to_pylist(),
            ds.capabilities["tool_ids"].to_pylist(),
            strict=True,
        )
    }
    trained = {
        c
        for c, s in zip(
            ds.labels["capability_id"].to_pylist(), ds.labels["split"].to_pylist(), strict=True
        )
        if s != "test"
    }
    warm = {c: ("warm" if c in trained else "cold") for c in queries.item_ids}
    out: dict[str, dict[str, float]] = {}
    for labels in (sizes, warm):
        out.update(segment_means(per_query, queries.segments(labels)))
    return out


# --------------------------------------------------------------------------- MLflow


def learning_curve(cfg: CaprankConfig, run_id: str) -> list[tuple[int, dict[str, float]]]:
    """The training run's metric histories as ``[(step, {name: value})]`` (metrics with
    more than one point; at most ``MAX_CURVES`` of them, by name)."""
    c = registry.client(cfg)
    names = sorted(k for k in c.get_run(run_id).data.metrics if not k.startswith("eval."))
    by_step: dict[int, dict[str, float]] = {}
    kept = 0
    for name in names:
        history = c.get_metric_history(run_id, name)
        if len(history) < 2:
            continue
        for m in history:
            by_step.setdefault(int(m.step), {})[name] = float(m.value)
        kept += 1
        if kept == MAX_CURVES:
            break
    return sorted(by_step.items())


def log_to_run(cfg: CaprankConfig, run_id: str, result: EvaluationResult, out_dir: Path) -> None:
    """Evaluation metrics (``eval.*``) and the report files into the training run."""
    from mlflow.entities import Metric

    c = registry.client(cfg)
    now = int(time.time() * 1000)
    values = {f"eval.{registry.mlflow_key(k)}": v for k, v in result.metrics.items()}
    values["eval.improved"] = float(result.improved)
    values["eval.scoring_p99_ms"] = result.scoring_p99_ms
    if result.production_metrics is not None:
        for k, v in result.production_metrics.items():
            values[f"eval.production.{registry.mlflow_key(k)}"] = v
    for name, row in result.baselines.items():
        for k, v in row.items():
            values[f"eval.baseline.{registry.mlflow_key(name)}.{registry.mlflow_key(k)}"] = v
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if np.isfinite(v)]
    for start in range(0, len(metrics), 500):
        c.log_batch(run_id, metrics=metrics[start : start + 500])
    c.set_tag(run_id, "caprank.eval.version", result.version)
    c.set_tag(run_id, "caprank.eval.improved", str(result.improved).lower())
    c.log_artifacts(run_id, str(out_dir), "evaluation")


# --------------------------------------------------------------------------- the stage


def _production(
    cfg: CaprankConfig, catalog: Catalog, features: FeatureSnapshot | None
) -> LoadedModel | None:
    prod = registry.production_version(cfg)
    if prod is None:
        return None
    local, version = resolve_model_ref(cfg, prod.version)
    return load_model_dir(local, cfg, catalog, features, version=version, source="production")


def evaluate(
    cfg: CaprankConfig,
    dataset_dir: str | Path,
    model_dir: str | Path,
    run_id: str,
    out_dir: str | Path,
    *,
    pipeline_run_id: str = "",
    data_hashes: Mapping[str, str] | None = None,
    baselines: Mapping[str, Baseline] | None = None,
    drift: DriftResult | None = None,
    features: FeatureSnapshot | None = None,
) -> EvaluationResult:
    """Evaluate the candidate in ``model_dir`` (trained in MLflow run ``run_id``) on the
    test labels of ``dataset_dir``; gate, register as ``challenger``, write the report.

    ``baselines`` default to ``default_baselines``; ``data_hashes`` to the dataset's
    content hash (the component adds the embeddings'). ``drift`` is shown in the report.
    ``features`` default to the online store's snapshot, as the server reads them.
    """
    out = Path(out_dir)
    ds = load_dataset(dataset_dir)
    queries = queries_from_labels(ds, "test")
    catalog = catalog_from_tables(ds.tools, ds.capabilities, str(Path(dataset_dir)))
    if tuple(catalog.ids) != queries.item_ids:
        raise DataError(str(dataset_dir), "catalog and label columns disagree on capability order")
    ev = cfg.evaluation
    m = ev.primary_metric

    if features is None:  # what serving does: the capability features of the online store
        features = read_snapshot(cfg, catalog.ids)
    candidate = load_model_dir(model_dir, cfg, catalog, features, source="candidate")
    ch_scored = score_model(candidate, queries, cfg, "challenger")
    ch = offline_metrics(ch_scored, queries, cfg)
    models: list[ModelSummary] = [summarize_model("candidate", "challenger", ch, ev)]

    production = _production(cfg, catalog, features)
    pr = None
    if production is not None:
        pr = offline_metrics(score_model(production, queries, cfg, "production"), queries, cfg)
        models.append(summarize_model(f"v{production.version}", "production", pr, ev))

    baseline_rows: dict[str, dict[str, float]] = {}
    chosen = default_baselines(ds) if baselines is None else baselines
    for name, base in chosen.items():
        scores = base(queries, catalog) if callable(base) else np.asarray(base)
        bm = evaluate_scores(scores, queries.relevance, ev)
        baseline_rows[name] = bm.summary()
        models.append(summarize_model(name, "baseline", bm, ev))

    ece = ch.calibration.ece if ch.calibration is not None else None
    decision = decide(
        ch.ranking.per_query[m],
        None if pr is None else pr.ranking.per_query[m],
        ece=ece,
        scoring_p99_ms=ch_scored.p99_ms,
        cfg=ev,
    )
    hashes = dict(data_hashes or {})
    hashes.setdefault("dataset", dataset_hash(dataset_dir))
    if registry.logged_model_source(cfg, run_id) is None:
        registry.log_model_dir(cfg, run_id, model_dir)
    summary = ch.summary()
    version = registry.register_version(
        cfg,
        run_id,
        lineage=registry.make_lineage(cfg, hashes, pipeline_run_id),
        metrics={**summary, "scoring_p99_ms": ch_scored.p99_ms},
        extra_tags={
            f"{registry.TAG_PREFIX}improved": str(decision.improved).lower(),
            f"{registry.TAG_PREFIX}gate_reason": decision.reason[:4000],
        },
        description=decision.reason[:4000],
    )
    segments = query_segments(ds, queries, ch.ranking.per_query)
    result = EvaluationResult(
        improved=decision.improved,
        model_name=version.name,
        version=version.version,
        decision=decision,
        metrics=summary,
        production_version=None if production is None else production.version,
        production_metrics=None if pr is None else pr.summary(),
        baselines=baseline_rows,
        scoring_p50_ms=ch_scored.p50_ms,
        scoring_p99_ms=ch_scored.p99_ms,
        n_queries=len(queries),
        n_items=queries.n_items,
        segments=segments,
    )
    inputs = ReportInputs(
        title=f"caprank evaluation: {version.name} v{version.version}",
        primary_metric=m,
        models=models,
        decision=decision,
        calibration=ch.calibration,
        learning_curve=learning_curve(cfg, run_id),
        segments=segments,
        drift=drift,
        metadata={
            "registered version": f"{version.name} v{version.version} (alias challenger)",
            "production": "none yet"
            if production is None
            else f"v{production.version} (alias production)",
            "training run": run_id,
            "pipeline run": pipeline_run_id or "none (local call)",
            "git revision": version.tags.get(f"{registry.TAG_PREFIX}lineage.git_revision", ""),
            "test queries": f"{len(queries):,} over {queries.n_items:,} capabilities",
            "scoring latency": f"p50 {ch_scored.p50_ms:.2f} ms, p99 {ch_scored.p99_ms:.2f} ms",
            **{f"data hash ({k})": v[:16] for k, v in sorted(hashes.items())},
        },
    )
    result.paths = write_report(inputs, out)
    result.paths["json"] = atomic_write_json(out / RESULT_FILE, result.to_dict())
    log_to_run(cfg, run_id, result, out)
    return result


def result_json(result: EvaluationResult) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str)
