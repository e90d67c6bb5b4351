"""The pipeline's evaluate stage: score, compare with production, gate, register, report.

The candidate is scored exactly as the server would score it: its model directory is
loaded with ``caprank.online.models.load_model_dir`` over the catalog built from the
dataset, each test intent is encoded with the ranker's text model and ranked over the
whole catalog. The production model (registry alias ``production``), when there is one,
is scored on the same queries, and the gate (``caprank.evaluation.gate.decide``) decides
with a paired bootstrap on the primary metric plus the guardrails. The candidate is then
registered with lineage and alias ``challenger``; the report goes to ``out_dir`` and
into the training run. This stage alone computes test metrics: the report sets the
candidate beside production and the three baselines of ``caprank.evaluation.baselines``
(BM25, dense cosine, logistic regression), and shows the drift verdict the monitor stage
wrote (its ``drift_report``), never a drift recomputed here. It also holds the
candidate's feature and channel importance on the test queries
(``caprank.evaluation.importance``) and the metric history of the registry's versions
with per-segment trends (``caprank.evaluation.history``): the candidate registers its
primary metric per segment for the next report's trend.

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
from caprank.evaluation.counterfactual import CounterfactualEstimate
from caprank.evaluation.gate import GateDecision, decide
from caprank.evaluation.heldout import HeldOut, held_out, policy_value
from caprank.evaluation.history import VersionRow, history_rows, segment_metrics
from caprank.evaluation.importance import ImportanceReport, importance
from caprank.evaluation.metrics import OfflineMetrics, evaluate_scores, segment_means
from caprank.evaluation.queries import QuerySet
from caprank.evaluation.report import (
    KEY_METRICS,
    ModelSummary,
    ReportInputs,
    summarize_model,
    write_report,
)
from caprank.files import atomic_write_json
from caprank.monitoring import read_drift_report
from caprank.monitoring.drift import DriftResult
from caprank.online.catalog import Catalog, catalog_from_tables
from caprank.online.features import FeatureSnapshot, read_snapshot
from caprank.online.models import LoadedModel, load_model_dir, resolve_model_ref
from caprank.registry import log_to_ended_run, metric_history

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
    test_source: str = "test labels"  # or the temporal split of a log without labels
    counterfactual: CounterfactualEstimate | None = None  # logs only: IPS/SNIPS
    importance: ImportanceReport | None = None
    history: list[VersionRow] = field(default_factory=list)

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
            "test_source": self.test_source,
            "counterfactual": (
                None if self.counterfactual is None else self.counterfactual.to_dict()
            ),
            "importance": None if self.importance is None else self.importance.to_dict(),
            "history": [r.to_dict() for r in self.history],
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
    k = min(max(cfg.evaluation.cutoffs), c)
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


BASELINE_LABELS = {"bm25": "bm25", "dense": "dense cosine", "logreg": "logistic regression"}


def _labeled_pairs(ds: Dataset, item_ids: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """Texts and capability rows of every non-test label (what logreg learns from)."""
    rows = {c: i for i, c in enumerate(item_ids)}
    text = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    pairs = [
        (text[q], rows[c])
        for q, c, split in zip(
            ds.labels["intent_id"].to_pylist(),
            ds.labels["capability_id"].to_pylist(),
            ds.labels["split"].to_pylist(),
            strict=True,
        )
        if split != "test" and q in text and c in rows
    ]
    return [t for t, _ in pairs], np.array([r for _, r in pairs], dtype=np.int64)


def default_baselines(ds: Dataset, cfg: CaprankConfig, text_model: str) -> dict[str, Baseline]:
    """The ``training.baselines`` of ``caprank.evaluation.baselines`` on the test queries:
    BM25 over the capability texts the catalog serves, dense cosine and logistic
    regression (fit on the non-test labels; left out below two labeled capabilities)
    over ``text_model``'s embeddings, the candidate's, through the embedding cache. The
    catalog a baseline is called with is in the dataset's capability order."""
    from caprank.evaluation.baselines import bm25_scores, dense_scores, logistic_scores

    wanted = cfg.training.baselines
    out: dict[str, Baseline] = {}
    if "bm25" in wanted:
        out["bm25"] = lambda q, cat: bm25_scores(list(cat.texts), [str(t) for t in q.texts])
    if "dense" in wanted:

        def dense(queries: QuerySet, catalog: Catalog) -> np.ndarray:
            vecs = encode_intents([str(t) for t in queries.texts], text_model, cfg)
            return dense_scores(vecs, encode_intents(list(catalog.texts), text_model, cfg))

        out["dense"] = dense
    texts, rows = _labeled_pairs(ds, tuple(ds.capabilities["capability_id"].to_pylist()))
    if "logreg" in wanted and len(np.unique(rows)) >= 2:

        def logreg(queries: QuerySet, catalog: Catalog) -> np.ndarray:
            return logistic_scores(
                encode_intents(texts, text_model, cfg),
                rows,
                encode_intents([str(t) for t in queries.texts], text_model, cfg),
                len(catalog),
                seed=cfg.training.seed,
            )

        out["logreg"] = logreg
    return out


# --------------------------------------------------------------------------- segments


def query_segments(
    ds: Dataset,
    queries: QuerySet,
    per_query: Mapping[str, np.ndarray],
    trained: set[str] | None = None,
):
    """Metric means by the relevant capability's size (tools) and by warm/cold (whether
    it had training positives: ``trained``, by default the capabilities of non-test
    labels; a cold capability was never seen in training)."""
    sizes = {
        c: f"size {min(len(t or ()), 3)}{'+' if len(t or ()) >= 3 else ''}"
        for c, t in zip(
            ds.capabilities["capability_id"].to_pylist(),
            ds.capabilities["tool_ids"].to_pylist(),
            strict=True,
        )
    }
    if trained is None:
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
    more than one point, ``eval.*`` aside; at most ``MAX_CURVES`` of them, by name)."""
    by_step: dict[int, dict[str, float]] = {}
    for name, points in metric_history(cfg, run_id, skip_prefix="eval.", limit=MAX_CURVES).items():
        for step, value in points:
            by_step.setdefault(step, {})[name] = value
    return sorted(by_step.items())


def log_to_run(cfg: CaprankConfig, run_id: str, result: EvaluationResult, out_dir: Path) -> None:
    """Evaluation metrics (``eval.*``) and the report files into the training run."""
    key = registry.mlflow_key
    values = {f"eval.{key(k)}": v for k, v in result.metrics.items()}
    values["eval.improved"] = float(result.improved)
    values["eval.scoring_p99_ms"] = result.scoring_p99_ms
    if result.production_metrics is not None:
        for k, v in result.production_metrics.items():
            values[f"eval.production.{key(k)}"] = v
    for name, row in result.baselines.items():
        for k, v in row.items():
            values[f"eval.baseline.{key(name)}.{key(k)}"] = v
    for item in [] if result.importance is None else result.importance.items:
        values[f"eval.importance.{item.kind}.{key(item.name)}"] = item.drop.estimate
    tags = {
        "caprank.eval.version": result.version,
        "caprank.eval.improved": str(result.improved).lower(),
    }
    log_to_ended_run(cfg, run_id, values, tags, out_dir, "evaluation")


# --------------------------------------------------------------------------- the stage


def _production(
    cfg: CaprankConfig, catalog: Catalog, features: FeatureSnapshot | None
) -> LoadedModel | None:
    prod = registry.production_version(cfg)
    if prod is None:
        return None
    local, version = resolve_model_ref(cfg, prod.version)
    return load_model_dir(local, cfg, catalog, features, version=version, source="production")


@dataclass
class _Scored:
    """Every model's metrics on the test queries, and the report's rows."""

    challenger: OfflineMetrics
    challenger_scored: ScoredModel
    production: LoadedModel | None
    production_metrics: OfflineMetrics | None
    baselines: dict[str, dict[str, float]]
    models: list[ModelSummary]


def _score_everything(
    cfg: CaprankConfig,
    ds: Dataset,
    queries: QuerySet,
    catalog: Catalog,
    candidate: LoadedModel,
    features: FeatureSnapshot | None,
    baselines: Mapping[str, Baseline] | None,
) -> _Scored:
    """The candidate, production (when there is one) and the baselines, same queries."""
    ev = cfg.evaluation
    ch_scored = score_model(candidate, queries, cfg, "challenger")
    ch = offline_metrics(ch_scored, queries, cfg)
    models: list[ModelSummary] = [summarize_model("candidate", "challenger", ch, ev)]
    production = _production(cfg, catalog, features)
    pr = None
    if production is not None:
        pr = offline_metrics(score_model(production, queries, cfg, "production"), queries, cfg)
        models.append(summarize_model(f"v{production.version}", "production", pr, ev))
    rows: dict[str, dict[str, float]] = {}
    if baselines is None:
        baselines = default_baselines(ds, cfg, candidate.ranker.text_model)
    for name, base in baselines.items():
        scores = base(queries, catalog) if callable(base) else np.asarray(base)
        bm = evaluate_scores(scores, queries.relevance, ev)
        rows[name] = bm.summary()
        models.append(summarize_model(BASELINE_LABELS.get(name, name), "baseline", bm, ev))
    return _Scored(ch, ch_scored, production, pr, rows, models)


def _register(
    cfg: CaprankConfig,
    run_id: str,
    model_dir: str | Path,
    hashes: Mapping[str, str],
    pipeline_run_id: str,
    sc: _Scored,
    decision: GateDecision,
    segments: Mapping[str, Mapping[str, float]],
):
    """Log the model directory into the run when training did not, then register it as
    the ``challenger`` version with lineage, metrics (the primary one per segment too,
    for the history's trends) and the gate's verdict."""
    if registry.logged_model_source(cfg, run_id) is None:
        registry.log_model_dir(cfg, run_id, model_dir)
    return registry.register_version(
        cfg,
        run_id,
        lineage=registry.make_lineage(cfg, dict(hashes), pipeline_run_id),
        metrics={
            **sc.challenger.summary(),
            "scoring_p99_ms": sc.challenger_scored.p99_ms,
            **segment_metrics(segments, cfg.evaluation.primary_metric),
        },
        extra_tags={
            f"{registry.TAG_PREFIX}improved": str(decision.improved).lower(),
            f"{registry.TAG_PREFIX}gate_reason": decision.reason[:4000],
        },
        description=decision.reason[:4000],
    )


def _report_metadata(
    version, sc: _Scored, run_id: str, pipeline_run_id: str, queries: QuerySet, hashes
) -> dict[str, str]:
    production = sc.production
    ch = sc.challenger_scored
    return {
        "registered version": f"{version.name} v{version.version} (alias challenger)",
        "production": "none yet"
        if production is None
        else f"v{production.version} (alias production)",
        "training run": run_id,
        "pipeline run": pipeline_run_id or "none (local call)",
        "git revision": version.tags.get(f"{registry.TAG_PREFIX}lineage.git_revision", ""),
        "test queries": f"{len(queries):,} over {queries.n_items:,} capabilities",
        "scoring latency": f"p50 {ch.p50_ms:.2f} ms, p99 {ch.p99_ms:.2f} ms",
        **{f"data hash ({k})": v[:16] for k, v in sorted(hashes.items())},
    }


def _result(version, decision: GateDecision, sc: _Scored, queries: QuerySet, segments):
    pr = sc.production_metrics
    return EvaluationResult(
        improved=decision.improved,
        model_name=version.name,
        version=version.version,
        decision=decision,
        metrics=sc.challenger.summary(),
        production_version=None if sc.production is None else sc.production.version,
        production_metrics=None if pr is None else pr.summary(),
        baselines=sc.baselines,
        scoring_p50_ms=sc.challenger_scored.p50_ms,
        scoring_p99_ms=sc.challenger_scored.p99_ms,
        n_queries=len(queries),
        n_items=queries.n_items,
        segments=segments,
    )


def _resolve_drift(drift: DriftResult | str | Path | Mapping | None) -> DriftResult | None:
    if drift is None or isinstance(drift, DriftResult):
        return drift
    return read_drift_report(drift)


def _logged_value(
    candidate: LoadedModel, test: HeldOut, cfg: CaprankConfig
) -> CounterfactualEstimate | None:
    """Logs only: the candidate's IPS/SNIPS value on the test period's logged slates."""
    if test.events is None:
        return None
    model = candidate.ranker.text_model
    return policy_value(
        candidate.ranker,
        tuple(candidate.catalog.ids),
        test.events,
        cfg,
        lambda texts: encode_intents(list(texts), model, cfg),
    )


def _importance(
    candidate: LoadedModel, queries: QuerySet, cfg: CaprankConfig
) -> ImportanceReport | None:
    """The candidate's feature and channel importance (none when the config turns it off)."""
    if cfg.evaluation.importance_repeats == 0:
        return None
    vecs = encode_intents([str(t) for t in queries.texts], candidate.ranker.text_model, cfg)
    return importance(candidate, queries, vecs, cfg.evaluation)


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
    drift: DriftResult | str | Path | Mapping[str, Any] | None = None,
    features: FeatureSnapshot | None = None,
) -> EvaluationResult:
    """Evaluate the candidate in ``model_dir`` (trained in MLflow run ``run_id``) on the
    test labels of ``dataset_dir``; gate, register as ``challenger``, write the report.
    A dataset without labels is tested on the latest period of its log's temporal split
    (``caprank.evaluation.heldout``), with the candidate's IPS/SNIPS value in the report.

    ``baselines`` default to ``default_baselines``; ``data_hashes`` to the dataset's
    content hash (the component adds the embeddings'). ``drift`` is the monitor stage's
    verdict, shown in the report as judged there (never recomputed here): its
    ``drift_report`` artifact (folder, ``monitor.json`` or that file's dict, read by
    ``caprank.monitoring.read_drift_report``) or a ``DriftResult``. ``features`` default
    to the online store's snapshot, as the server reads them.
    """
    out = Path(out_dir)
    drift = _resolve_drift(drift)
    ds = load_dataset(dataset_dir)
    test = held_out(ds, cfg)
    queries = test.queries
    catalog = catalog_from_tables(ds.tools, ds.capabilities, str(Path(dataset_dir)))
    if tuple(catalog.ids) != queries.item_ids:
        raise DataError(str(dataset_dir), "catalog and label columns disagree on capability order")
    ev = cfg.evaluation
    m = ev.primary_metric

    if features is None:  # what serving does: the capability features of the online store
        features = read_snapshot(cfg, catalog.ids)
    candidate = load_model_dir(model_dir, cfg, catalog, features, source="candidate")
    sc = _score_everything(cfg, ds, queries, catalog, candidate, features, baselines)
    ch, pr = sc.challenger, sc.production_metrics
    decision = decide(
        ch.ranking.per_query[m],
        None if pr is None else pr.ranking.per_query[m],
        ece=ch.calibration.ece if ch.calibration is not None else None,
        scoring_p99_ms=sc.challenger_scored.p99_ms,
        cfg=ev,
    )
    hashes = dict(data_hashes or {})
    hashes.setdefault("dataset", dataset_hash(dataset_dir))
    segments = query_segments(ds, queries, ch.ranking.per_query, test.trained)
    version = _register(cfg, run_id, model_dir, hashes, pipeline_run_id, sc, decision, segments)
    result = _result(version, decision, sc, queries, segments)
    result.test_source = test.describe()
    result.counterfactual = _logged_value(candidate, test, cfg)
    result.importance = _importance(candidate, queries, cfg)
    result.history = history_rows(
        registry.versions(cfg, ev.history_versions),
        [m, *KEY_METRICS, "scoring_p99_ms"],
        m,
        segments,
    )
    protocol = test.protocol(ch.summary())
    inputs = ReportInputs(
        title=f"caprank evaluation: {version.name} v{version.version}",
        primary_metric=m,
        models=sc.models,
        decision=decision,
        calibration=ch.calibration,
        learning_curve=learning_curve(cfg, run_id),
        segments=segments,
        drift=drift,
        protocols=[] if protocol is None else [protocol],
        counterfactual=result.counterfactual,
        importance=result.importance,
        history=result.history,
        metadata={
            **_report_metadata(version, sc, run_id, pipeline_run_id, queries, hashes),
            "tested on": result.test_source,
        },
    )
    result.paths = write_report(inputs, out)
    result.paths["json"] = atomic_write_json(out / RESULT_FILE, result.to_dict())
    log_to_run(cfg, run_id, result, out)
    return result


def result_json(result: EvaluationResult) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str)
