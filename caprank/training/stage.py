"""The train stage: ``train(ds, cfg, embeddings_dir, out_dir)`` -> a bundle, tracked.

What the KFP component and ``caprank train`` call. It loads the embed stage's vectors
(and the latest capability features when given), prepares experiences, trains with
checkpoints under ``<out_dir>/checkpoints`` (a re-run with the same inputs resumes),
fits the value head's calibration on the validation intents (``calibrate``), writes
the bundle to ``<out_dir>/bundle``, scores it and the configured baselines on the
validation intents (``validation_metrics``), and records everything in MLflow. Test
labels are never read here: only the evaluate stage computes test metrics. With
``training.tuned_from`` set, a tuning run's best settings (``caprank tune``) are applied
first (``apply_tuned``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from caprank import __version__
from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset, dataset_hash
from caprank.embeddings.cache import embed_texts
from caprank.embeddings.catalog_text import capability_texts
from caprank.embeddings.stage import load_embeddings
from caprank.errors import DataError
from caprank.files import atomic_write_text, dir_hash
from caprank.model.bundle import Bundle, save_bundle
from caprank.model.calibration import Calibration, fit_calibration
from caprank.model.index import RankIndex
from caprank.model.shgat import SHGAT, ModelDims
from caprank.training.data import Prepared, prepare
from caprank.training.trainer import FitResult, Trainer

BUNDLE_DIR = "bundle"
CHECKPOINT_DIR = "checkpoints"
FINGERPRINT = "fingerprint.txt"


@dataclass
class TrainResult:
    bundle_dir: Path
    fit: FitResult
    summary: dict
    valid_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    run_id: str | None = None
    calibration: dict = field(default_factory=dict)  # see ``calibrate``

    def to_markdown(self) -> str:
        f = self.fit
        lines = [
            "## Train\n",
            f"{f.steps} steps ({'early stop' if f.stopped_early else 'step budget'}), best "
            f"validation MRR {f.best_valid_mrr:.4f} at step {f.best_step}"
            + (
                f" (weight {f.valid_without_evidence:.2f} on answers without evidence)"
                if f.valid_without_evidence
                else ""
            )
            + f"; {f.seconds:.1f} s, "
            f"{f.experiences_per_s:,.0f} experiences/s"
            + (f"; resumed from step {f.resumed_from}" if f.resumed_from else "")
            + ".  ",
            f"experiences from {', '.join(self.summary['sources'])}: "
            f"{self.summary['experiences']:,} ({self.summary['positives']:,} positives); "
            f"bundle `{self.bundle_dir}`.  ",
        ]
        c = self.calibration
        if c.get("n"):
            lines.append(
                f"value head calibration ({c['method']}) on {c['n']:,} validation top-k "
                f"items: ECE {c['valid_ece_raw']:.4f} -> {c['valid_ece']:.4f}.  "
            )
        else:
            lines.append("value head not calibrated: no validation intents.  ")
        if self.run_id:
            lines.append(f"MLflow run `{self.run_id}` (the evaluate stage registers the model).\n")
        if self.valid_metrics:
            lines.append(
                "\n| ranker (validation intents) | MRR | Hit@1 | Hit@3 | Hit@5 | Hit@10 | NDCG@10 |"
            )
            lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for name, m in self.valid_metrics.items():
                lines.append(
                    f"| {name} | {m['mrr']:.4f} | {m['hit@1']:.4f} | {m['hit@3']:.4f} | "
                    f"{m['hit@5']:.4f} | {m['hit@10']:.4f} | {m['ndcg@10']:.4f} |"
                )
        return "\n".join(lines) + "\n"


def _encoder(cfg: CaprankConfig, text_model: str | None = None):
    """Intent vectors from ``text_model`` (the embed stage's encoder, fine-tuned or not;
    default ``embedding.text_model``) through the embedding cache."""
    return lambda texts: embed_texts(list(texts), cfg, text_model=text_model)[0]


def table_fingerprint(table: pa.Table | None) -> str:
    """sha256 of a table's values (and column names and types): a checkpoint trained on
    one feature snapshot never resumes on another with as many rows. Empty: no table."""
    if table is None:
        return ""
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _fingerprint(ds: Dataset, cfg: CaprankConfig, embeddings_dir: Path, extra: str) -> str:
    """What the checkpoints in ``<out_dir>/checkpoints`` were trained on: data, vectors,
    training settings, the log's temporal split (data without labels) and ``extra``."""
    data = dataset_hash(ds.root) if ds.root is not None else "in-memory"
    ev = cfg.evaluation
    split = [
        ev.temporal_valid_fraction,
        ev.temporal_test_fraction,
        ev.grade_success,
        ev.grade_partial,
    ]
    blob = json.dumps(
        [data, dir_hash(embeddings_dir), cfg.training.model_dump(mode="json"), split, extra],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _checkpoints(out_dir: Path, fingerprint: str, resume: bool) -> Path:
    """The checkpoint folder, emptied unless it belongs to this very run's inputs."""
    ck = out_dir / CHECKPOINT_DIR
    mark = ck / FINGERPRINT
    same = mark.is_file() and mark.read_text(encoding="utf-8").strip() == fingerprint
    if ck.exists() and not (resume and same):
        shutil.rmtree(ck)
    ck.mkdir(parents=True, exist_ok=True)
    atomic_write_text(mark, fingerprint + "\n")
    return ck


def read_features(path: str | Path | None) -> pa.Table | None:
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        path = path / "capability_features.parquet"
    if not path.is_file():
        raise DataError(str(path), "capability features file not found")
    return pq.read_table(path)


def calibrate(index: RankIndex, prep: Prepared, cfg: CaprankConfig) -> tuple[Calibration, dict]:
    """Fit ``training.calibration`` on what evaluate judges, but on the validation intents:
    each one's top-k capabilities (k = max(evaluation.cutoffs)) over the whole catalog, raw
    value-head output vs whether the capability is relevant. Returns the calibration and
    the validation ECE before (raw value clipped, the identity) and after."""
    from caprank.evaluation.metrics import calibration_metrics

    d = prep.data
    rows = d.valid_intents
    method = cfg.training.calibration
    if len(rows) == 0:
        return Calibration(), {"method": "identity", "n": 0}
    texts = [prep.intent_texts[r] for r in rows]
    dense = d.intent_dense[rows]
    scores = index.scores(dense, texts)
    k = min(max(cfg.evaluation.cutoffs), scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    raw = index.values_many(dense, texts, top).astype(np.float64)
    outcome = np.array([np.isin(t, rel) for t, rel in zip(top, d.valid_relevant, strict=True)])
    outcome = outcome.astype(np.float64)
    cal = fit_calibration(raw, outcome, method)
    bins = cfg.evaluation.calibration_bins
    before = calibration_metrics(Calibration().apply(raw), outcome, bins)
    after = calibration_metrics(cal.apply(raw), outcome, bins)
    return cal, {
        "method": cal.method,
        "n": int(raw.size),
        "k": int(k),
        "valid_ece_raw": round(before.ece, 6),
        "valid_ece": round(after.ece, 6),
        "valid_brier_raw": round(before.brier, 6),
        "valid_brier": round(after.brier, 6),
        "valid_positive_rate": round(float(outcome.mean()), 6),
    }


VALID_METRICS = ("mrr", "hit@1", "hit@3", "hit@5", "hit@10", "ndcg@10")


def baseline_score_matrices(
    ds: Dataset, cfg: CaprankConfig, prep: Prepared, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """The ``training.baselines`` (``caprank.evaluation.baselines``) on the intent table's
    ``rows``; logreg is fit on the experiences' positives (skipped below two classes)."""
    from caprank.evaluation.baselines import bm25_scores, dense_scores, logistic_scores

    d, wanted = prep.data, cfg.training.baselines
    texts = [prep.intent_texts[r] for r in rows]
    out: dict[str, np.ndarray] = {}
    if "bm25" in wanted:
        out["bm25"] = bm25_scores(capability_texts(ds.capabilities, ds.tools), texts)
    if "dense" in wanted:
        out["dense"] = dense_scores(d.intent_dense[rows], prep.inputs.capability_text)
    pos = d.experiences.positive > 0
    labels = d.experiences.capability[pos]
    if "logreg" in wanted and len(np.unique(labels)) >= 2:
        out["logreg"] = logistic_scores(
            d.intent_dense[d.experiences.intent[pos]],
            labels,
            d.intent_dense[rows],
            len(prep.inputs.capability_ids),
            seed=cfg.training.seed,
        )
    return out


def validation_metrics(
    ds: Dataset, cfg: CaprankConfig, prep: Prepared, bundle: Bundle
) -> dict[str, dict[str, float]]:
    """SHGAT (through its RankIndex) and the configured baselines on the validation
    intents, by ``caprank.evaluation.metrics``; {} without validation intents."""
    from caprank.evaluation.metrics import ranking_metrics

    d = prep.data
    rows = d.valid_intents
    if len(rows) == 0:
        return {}
    ks = sorted(set(cfg.evaluation.cutoffs) | {1, 3, 5, 10})
    relevance = [{int(c): 1.0 for c in rel} for rel in d.valid_relevant]

    def metrics(scores: np.ndarray) -> dict[str, float]:
        m = ranking_metrics(scores, relevance, ks).means()
        return {k: round(float(m[k]), 6) for k in VALID_METRICS}

    texts = [prep.intent_texts[r] for r in rows]
    scored = {"shgat": bundle.index(prep.inputs).scores(d.intent_dense[rows], texts)}
    scored.update(baseline_score_matrices(ds, cfg, prep, rows))
    return {name: metrics(scores) for name, scores in scored.items()}


def _catalog_vectors(ds: Dataset, emb, embeddings_dir: Path):
    """(tool ids, their hybrid vectors, capability ids, their text vectors) in the
    dataset's order; a tool or capability without an embedding is a DataError."""
    t_pos = emb.tools.index()
    tool_ids = ds.tools["tool_id"].to_pylist()
    missing = [t for t in tool_ids if t not in t_pos]
    if missing:
        raise DataError(
            str(embeddings_dir), f"tools without embeddings: {missing[:5]}", field="tool_id"
        )
    c_pos = emb.capabilities.index()
    cap_ids = ds.capabilities["capability_id"].to_pylist()
    missing = [c for c in cap_ids if c not in c_pos]
    if missing:
        raise DataError(
            str(embeddings_dir),
            f"capabilities without embeddings: {missing[:5]}",
            field="capability_id",
        )
    tool_vecs = emb.tools.hybrid[[t_pos[t] for t in tool_ids]]
    cap_text = emb.capabilities.text[[c_pos[c] for c in cap_ids]]
    return tool_ids, tool_vecs, cap_ids, cap_text


PrepareFn = Callable[[Dataset, CaprankConfig], Prepared]


def catalog_preparer(
    ds: Dataset, cfg: CaprankConfig, embeddings_dir: Path, features: pa.Table | None
) -> tuple[PrepareFn, str]:
    """(``prepare`` bound to the embed stage's vectors of ``ds``'s catalog and the
    features, the text model): the embeddings are read once, and the same catalog can
    be prepared under several configs or label splits (hyperparameter search)."""
    emb = load_embeddings(embeddings_dir, cfg)
    tool_ids, tool_vecs, cap_ids, cap_text = _catalog_vectors(ds, emb, embeddings_dir)

    def make(data: Dataset, config: CaprankConfig) -> Prepared:
        return prepare(
            data,
            config,
            tool_ids,
            tool_vecs,
            cap_ids,
            cap_text,
            features,
            _encoder(config, emb.text_model),
        )

    return make, emb.text_model


def apply_tuned(cfg: CaprankConfig) -> tuple[CaprankConfig, str | None]:
    """``cfg`` with the tuning run ``training.tuned_from`` names applied (its best
    trial's overrides win over every layer), and that run's id; ``cfg`` itself and None
    when ``tuned_from`` is empty."""
    ref = cfg.training.tuned_from.strip()
    if not ref:
        return cfg, None
    from caprank.config import with_overrides
    from caprank.registry import tuned_overrides

    run_id, overrides = tuned_overrides(cfg, ref)
    return with_overrides(cfg, overrides), run_id


def new_model(prep: Prepared, cfg: CaprankConfig) -> SHGAT:
    """A freshly seeded SHGAT sized for the prepared catalog and ``training``."""
    import torch

    tc = cfg.training
    dims = ModelDims(
        text_dim=prep.inputs.capability_text.shape[1],
        tool_dim=prep.inputs.tool_vectors.shape[1],
        n_features=len(prep.scaler.columns),
        n_tools=len(prep.inputs.tool_ids),
        n_id_caps=len(prep.id_capabilities),
        vocab=len(prep.lexicon),
        hidden=tc.hidden_dim,
        heads=tc.heads,
        layers=tc.layers,
        lexical_dim=tc.lexical_dim,
        dropout=tc.dropout,
        cos_weight=tc.cosine_weight,
        evidence_k=tc.evidence_k,
    )
    if tc.torch_threads:
        torch.set_num_threads(tc.torch_threads)
    torch.manual_seed(tc.seed)
    return SHGAT(dims)


def _make_bundle(
    model: SHGAT, prep: Prepared, cfg: CaprankConfig, text_model: str, fit: FitResult
) -> Bundle:
    """The trained model with everything serving needs, calibrated on validation."""
    now = datetime.now(UTC)
    inputs = prep.inputs
    bundle = Bundle(
        model=model,
        lexicon=prep.lexicon,
        scaler=prep.scaler,
        text_model=text_model,
        tool_ids=inputs.tool_ids,
        tool_vectors=inputs.tool_vectors,
        capability_ids=inputs.capability_ids,
        capability_text=inputs.capability_text,
        id_capabilities=prep.id_capabilities,
        evidence=prep.evidence,
        hybrid={
            "text_weight": cfg.embedding.hybrid.text_weight,
            "graph_weight": cfg.embedding.hybrid.graph_weight,
            "method": cfg.embedding.hybrid.method,
        },
        meta={
            "version": f"trained-{now.strftime('%Y%m%dT%H%M%SZ')}",
            "trained_at": now.isoformat(),
            "caprank_version": __version__,
            "best_valid_mrr": fit.best_valid_mrr,
            "steps": fit.steps,
        },
    )
    bundle.calibration, calibration = calibrate(bundle.index(inputs), prep, cfg)
    bundle.meta["calibration_fit"] = calibration
    return bundle


def _cutoff_iso(ds: Dataset) -> str | None:
    from caprank.training.update import data_cutoff

    cutoff = data_cutoff(ds)
    return cutoff.isoformat() if cutoff else None


def _save(bundle: Bundle, ds: Dataset, out_dir: Path, features: pa.Table | None) -> Path:
    """``<out_dir>/bundle`` with the training catalog beside the model, and the feature
    rows it was trained with (``features.parquet``, what the MLflow pyfunc ranks with)."""

    def extra(tmp: Path) -> None:
        from caprank.files import atomic_write_parquet
        from caprank.model.features import REFERENCE_FILE, latest_rows, reference_table
        from caprank.online.catalog import catalog_from_tables, write_catalog

        write_catalog(catalog_from_tables(ds.tools, ds.capabilities, "training"), tmp)
        cols = list(bundle.scaler.columns)
        if features is not None and features.num_rows and cols:
            raw = latest_rows(features, bundle.capability_ids, cols)
            table = reference_table(bundle.capability_ids, cols, raw)
            atomic_write_parquet(table, tmp / REFERENCE_FILE)

    return save_bundle(bundle, out_dir / BUNDLE_DIR, extra_files=extra)


def train(
    ds: Dataset,
    cfg: CaprankConfig,
    embeddings_dir: str | Path,
    out_dir: str | Path,
    features_path: str | Path | None = None,
    *,
    track: bool = True,
    evaluate: bool = True,
    resume: bool = True,
    run_name: str | None = None,
) -> TrainResult:
    """Train the ranker on ``ds`` and write ``<out_dir>/bundle`` (see module doc).

    ``evaluate``: score the bundle and the baselines on the validation intents."""
    out_dir = Path(out_dir)
    embeddings_dir = Path(embeddings_dir)
    cfg, tuned_run = apply_tuned(cfg)
    features = read_features(features_path)
    make_prep, text_model = catalog_preparer(ds, cfg, embeddings_dir, features)

    start = time.perf_counter()
    prep = make_prep(ds, cfg)
    model = new_model(prep, cfg)
    fingerprint = _fingerprint(ds, cfg, embeddings_dir, table_fingerprint(features))
    ck = _checkpoints(out_dir, fingerprint, resume)

    tracker = None
    if track:
        from caprank.registry import Tracker

        tracker = Tracker(cfg, run_name=run_name)
    try:
        on_log = None if tracker is None else tracker.log_metrics
        fit = Trainer(model, prep.data, cfg.training, checkpoint_dir=ck, on_log=on_log).fit()
        bundle = _make_bundle(model.cpu().eval(), prep, cfg, text_model, fit)
        bundle.meta["data_cutoff"] = _cutoff_iso(ds)  # where `caprank update` starts
        bundle_dir = _save(bundle, ds, out_dir, features)
        calibration = bundle.meta["calibration_fit"]
        summary = dict(prep.summary)
        summary["train_seconds"] = round(time.perf_counter() - start, 3)
        summary["calibration"] = calibration
        if fit.linear_start is not None:
            summary["linear_start"] = fit.linear_start
        if tuned_run is not None:
            summary["tuned_from"] = tuned_run
        result = TrainResult(bundle_dir, fit, summary, calibration=calibration)
        if evaluate:
            result.valid_metrics = validation_metrics(ds, cfg, prep, bundle)
        if tracker is not None:
            _track(tracker, cfg, ds, embeddings_dir, features_path, result, ck)
        return result
    finally:
        if tracker is not None:
            tracker.__exit__(None, None, None)


def _track(tracker, cfg, ds, embeddings_dir, features_path, result: TrainResult, ck: Path):
    tracker.log_config(cfg)
    tags = {
        "git_revision": tracker_git(),
        "dataset_hash": dataset_hash(ds.root) if ds.root is not None else "in-memory",
        "embeddings_hash": dir_hash(embeddings_dir),
        "caprank_version": __version__,
    }
    if features_path is not None:
        tags["features_path"] = str(features_path)
    if "tuned_from" in result.summary:
        tags["tuned_from_run"] = result.summary["tuned_from"]
    tracker.set_tags(tags)
    f = result.fit
    tracker.log_metrics(
        f.steps,
        {
            "best_valid_mrr": f.best_valid_mrr,
            "train_seconds": f.seconds,
            "experiences_per_s": f.experiences_per_s,
        },
    )
    cal = {k: v for k, v in result.calibration.items() if k.startswith("valid_")}
    if cal:
        tracker.log_metrics(f.steps, cal)
    for name, metrics in result.valid_metrics.items():
        tracker.log_metrics(f.steps, metrics, prefix=f"valid.{name}.")
    tracker.log_dict(result.summary, "train_summary.json")
    if (ck / "checkpoint.pt").is_file():
        tracker.log_artifact(ck / "checkpoint.pt", "checkpoints")
    result.run_id = tracker.run_id
    tracker.log_model(result.bundle_dir)


def tracker_git() -> str:
    from caprank.registry import git_revision

    return git_revision()
