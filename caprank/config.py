"""One typed configuration for the whole system, resolved in layers.

Layers, lowest first: built-in defaults < YAML file (``--config`` or ``CAPRANK_CONFIG``)
< environment variables (``CAPRANK_SECTION__FIELD``) < ``--set section.field=value``.
A ``CAPRANK_`` variable without ``__`` names no field and is not read as one: secrets
(``CAPRANK_SECRET_*``, the admin token ``CAPRANK_ADMIN_TOKEN``) and
``CAPRANK_GIT_REVISION`` are such.
Every resolved value remembers the layer it came from, so ``caprank config show`` can
say why a value is what it is. Unknown keys and bad values are errors naming the key.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from caprank.cron import CronError, validate_kfp_cron
from caprank.errors import ConfigError

ENV_PREFIX = "CAPRANK_"
ENV_CONFIG_FILE = "CAPRANK_CONFIG"
# Variables carrying secrets (filled from Kubernetes Secrets) are never config overrides.


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- sections


class PathsConfig(Section):
    """Where things live on disk for the embedded (no-cluster) defaults."""

    home: Path = Field(Path(".caprank"), description="run directory for all local state")
    data: Path | None = Field(
        None, description="input dataset directory; empty: synthesize the embedded default"
    )
    features: Path | None = Field(
        None, description="offline feature tables (Feast sources); empty: <home>/features"
    )


class SynthConfig(Section):
    """The embedded default dataset (`caprank data synth`)."""

    n_tools: int = Field(240, ge=10, le=100_000, description="tools in the catalog")
    n_categories: int = Field(12, ge=2, le=16, description="at most the 16 built-in categories")
    n_capabilities: int = Field(
        300, ge=5, le=1_000_000, description="capabilities (tool compositions) in the catalog"
    )
    max_tools_per_capability: int = Field(4, ge=1, le=16, description="tools one capability uses")
    intents_per_capability: int = Field(
        12, ge=1, le=1000, description="labeled intents written per capability"
    )
    test_fraction: float = Field(
        0.15, gt=0.0, lt=1.0, description="share of labeled intents in the test split"
    )
    days: int = Field(30, ge=1, le=3650, description="days of catalog history")
    start_date: str | None = Field(
        None,
        description="ISO date of the first day; empty: `days` days before today (UTC), "
        "so the embedded default always looks like recent logs (the same events every "
        "day: only their timestamps move)",
    )
    cross_category_fraction: float = Field(
        0.15,
        ge=0.0,
        le=1.0,
        description="share of capabilities that add a tool of another category",
    )
    new_capability_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="share of capabilities created after the first day"
    )
    noise_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="share of intents with typos or casing noise"
    )

    @field_validator("start_date", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        """YAML reads 2026-10-01 as a date; keep it as its ISO text, and reject non-dates."""
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, str):
            date.fromisoformat(value)  # ValueError -> a ConfigError naming the key
        return value


class SimulateConfig(Section):
    """Interaction-log simulator (`caprank data simulate`) and its user model."""

    policy: Literal["bm25", "popularity", "random"] = Field(
        "bm25", description="logging policy that ranks the shown slates"
    )
    epsilon: float = Field(0.2, ge=0.0, le=1.0, description="exploration rate")
    slate_size: int = Field(10, ge=1, le=100, description="capabilities shown per request")
    events_per_day: int = Field(400, ge=1, le=10_000_000, description="requests per day")
    session_length_mean: float = Field(
        3.0, ge=1.0, le=100.0, description="mean requests per user session"
    )
    session_topic_stickiness: float = Field(
        0.7, ge=0.0, le=1.0, description="chance a session's next request stays in its category"
    )
    n_users: int = Field(500, ge=1, le=10_000_000, description="distinct simulated users")
    popularity_sigma: float = Field(
        1.0, ge=0.0, le=5.0, description="skew of capability traffic (lognormal sigma)"
    )
    position_bias: float = Field(0.6, gt=0.0, le=1.0, description="examination decay per rank")
    feedback_rate: float = Field(
        0.3, ge=0.0, le=1.0, description="share of events that carry an explicit 1-5 rating"
    )
    partial_relevance: float = Field(
        0.5, ge=0.0, le=1.0, description="relevance of a capability sharing all tools with a label"
    )
    partial_if_tool_fails: float = Field(
        0.5, ge=0.0, le=1.0, description="P(partial) when a fitting capability's tool fails"
    )
    partial_if_unfit: float = Field(
        0.05, ge=0.0, le=1.0, description="P(partial) when the capability does not fit"
    )
    min_tool_reliability: float = Field(
        0.9, gt=0.0, le=1.0, description="tool reliabilities are uniform in [this, 1)"
    )
    latency_median_ms: float = Field(250.0, gt=0.0, description="typical per-tool median latency")
    drift_tool_reliability_day: int | None = Field(
        None, ge=0, description="day a tool's reliability drops; empty: no drift"
    )
    drift_reliability_factor: float = Field(
        0.3, ge=0.0, le=1.0, description="the drifted tool's reliability is multiplied by this"
    )
    drift_new_capabilities_day: int | None = Field(
        None, ge=0, description="day new capabilities launch with boosted traffic; empty: none"
    )
    new_capability_boost: float = Field(
        4.0, ge=1.0, le=1000.0, description="traffic multiplier of launched capabilities"
    )
    drift_intent_mix_day: int | None = Field(
        None, ge=0, description="day the category mix of requests shifts; empty: no shift"
    )
    intent_mix_boost: float = Field(
        4.0, ge=1.0, le=1000.0, description="traffic multiplier of the favoured categories"
    )


class DataConfig(Section):
    """Input data: the embedded generators and the dataset validation rules."""

    seed: int = Field(42, ge=0, description="seed of the synthesizer and the simulator")
    synth: SynthConfig = SynthConfig()
    simulate: SimulateConfig = SimulateConfig()
    max_future_skew_s: int = Field(
        300, ge=0, description="tolerated clock skew for timestamps in the future"
    )
    max_age_days: int = Field(
        400, ge=1, description="freshness: newest event must be younger than this"
    )
    max_examples: int = Field(
        5, ge=1, le=1000, description="validation: example rows kept per failed check"
    )


class FeaturesConfig(Section):
    """Capability features (daily snapshots) and the Feast project that serves them."""

    windows_days: list[Annotated[int, Field(ge=1, le=3650)]] = Field(
        [1, 7, 30], min_length=1, description="usage_count_<d>d windows, in days"
    )
    feature_version: int = Field(
        1, ge=1, description="version stamped on every feature row (bump when definitions change)"
    )
    success_prior_strength: float = Field(
        5.0, ge=0.0, description="pseudo-events pulling success_rate toward the global rate"
    )
    success_prior_mean: float = Field(
        0.5, ge=0.0, le=1.0, description="success_rate prior when no event precedes a snapshot"
    )
    partial_success_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="a 'partial' outcome counts as this much success"
    )
    pagerank_damping: float = Field(
        0.85, gt=0.0, lt=1.0, description="PageRank damping factor on the capability-tool graph"
    )
    pagerank_tol: float = Field(1e-10, gt=0.0, lt=1.0, description="L1 change per node to stop")
    pagerank_max_iter: int = Field(
        1000, ge=1, le=100_000, description="PageRank power iterations at most"
    )
    graph_co_usage: bool = Field(
        False, description="add capability-context tool edges from past events to PageRank"
    )
    co_usage_weight: float = Field(
        0.5, ge=0.0, le=100.0, description="total co-usage edge weight per used capability"
    )
    ttl_days: int = Field(3650, ge=1, description="Feast feature view TTL")
    feast_project: str = Field(
        "caprank", pattern=r"^[A-Za-z0-9][A-Za-z0-9_]*$", description="Feast project name"
    )
    max_staleness_hours: float = Field(
        48.0,
        gt=0.0,
        description="a feature row computed longer ago than this is stale: serving ranks "
        "without it and the monitor's feature_staleness check fires",
    )

    @field_validator("windows_days")
    @classmethod
    def _distinct_windows(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("windows must be distinct")
        return value


class Node2VecConfig(Section):
    """Biased random walks over the capability-tool graph, then skip-gram (docs/embeddings.md)."""

    dim: int = Field(64, ge=2, le=1024, description="graph embedding dimension")
    walk_length: int = Field(15, ge=2, le=1000, description="nodes per random walk")
    walks_per_node: int = Field(40, ge=1, le=10_000, description="walks started at each node")
    window: int = Field(5, ge=1, le=100, description="skip-gram context window (nodes each side)")
    p: float = Field(1.0, gt=0.0, description="return parameter")
    q: float = Field(1.0, gt=0.0, description="in-out parameter")
    negatives: int = Field(5, ge=1, le=100, description="noise nodes per context node")
    epochs: int = Field(5, ge=1, le=1000, description="passes over the walks")
    lr: float = Field(0.01, gt=0.0, description="skip-gram Adam learning rate")
    batch_size: int = Field(1024, ge=1, description="walks per skip-gram optimizer step")
    coselection_weight: float = Field(
        0.5,
        ge=0.0,
        le=100.0,
        description="capability-capability edge weight per log(1 + co-selections in a "
        "training-period session); 0: catalog edges only",
    )


class HybridConfig(Section):
    """How the text and graph vectors combine into one capability embedding."""

    text_weight: float = Field(0.3, ge=0.0, le=1.0, description="weight of the text vector")
    graph_weight: float = Field(0.7, ge=0.0, le=1.0, description="weight of the graph vector")
    method: Literal["concat", "projection"] = Field(
        "concat",
        description="concat: weighted concatenation (exact cosines); projection: both parts "
        "projected to one fixed width and summed",
    )
    projection_dim: int | None = Field(
        None, ge=2, le=8192, description="'projection' target dimension; empty: the text dim"
    )


class FinetuneConfig(Section):
    """Contrastive fine-tuning of the text encoder on the training intents, run by the
    embed stage before it encodes the catalog (docs/embeddings.md)."""

    enabled: bool = Field(
        False, description="fine-tune the encoder; off: the base text_model as it ships"
    )
    steps: int = Field(45, ge=1, le=100_000, description="optimizer steps (the step budget)")
    batch_size: int = Field(
        32, ge=2, le=4096, description="(intent, capability) pairs per step: in-batch negatives"
    )
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0, description="AdamW learning rate")
    warmup_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="share of the steps the learning rate ramps up over"
    )
    hard_negatives: int = Field(
        1, ge=0, le=16, description="mined catalog negatives per pair (0: in-batch only)"
    )
    mine_top_k: int = Field(
        10,
        ge=1,
        le=1000,
        description="hard negatives are drawn from the base encoder's top-k non-positives",
    )
    scale: float = Field(
        20.0, gt=0.0, description="inverse temperature of the in-batch softmax over cosines"
    )
    max_minutes: float = Field(
        10.0, gt=0.0, description="wall-clock budget (mining included); stops between steps"
    )


class EmbeddingConfig(Section):
    """Text, graph and hybrid capability embeddings and their validation (docs/embeddings.md)."""

    text_model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers name or path; production: BAAI/bge-m3",
    )
    batch_size: int = Field(64, ge=1, le=4096, description="texts per encoder call")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="text encoder device; auto: cuda when available"
    )
    seed: int = Field(13, ge=0, description="walks, skip-gram and the hybrid projection")
    cache_dir: Path | None = Field(None, description="empty: <home>/embedding-cache")
    node2vec: Node2VecConfig = Node2VecConfig()
    hybrid: HybridConfig = HybridConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    norm_tolerance: float = Field(
        0.01, gt=0.0, description="validation: allowed | ||v|| - 1 | of normalized vectors"
    )
    min_relative_variance: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="validation: floor on the median dimension's variance relative to the "
        "isotropic level (mean squared norm / dim); see docs/embeddings.md",
    )
    max_staleness_hours: float = Field(
        24.0,
        gt=0.0,
        description="validation: vectors computed longer ago than this fail the staleness check",
    )


class PERConfig(Section):
    """Prioritized experience replay (docs/training.md)."""

    capacity: int = Field(100_000, ge=1, description="experiences the buffer holds")
    alpha: float = Field(0.6, ge=0.0, le=1.0, description="priority exponent (0: uniform)")
    beta: float = Field(
        0.4, ge=0.0, le=1.0, description="starting importance-sampling correction exponent"
    )
    beta_increment: float = Field(
        0.001, ge=0.0, le=1.0, description="beta grows by this per sampled batch, up to 1"
    )
    eps: float = Field(0.01, gt=0.0, description="added to |TD error| so no priority is 0")


class TDConfig(Section):
    """Temporal-difference targets of the value head."""

    gamma: float = Field(0.99, ge=0.0, le=1.0, description="discount within a session")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="TD(lambda) trace decay")


class RewardConfig(Section):
    """Reward of a logged outcome, shared by training and counterfactual evaluation."""

    success: float = Field(1.0, description="reward of a 'success' outcome")
    partial: float = Field(0.5, description="reward of a 'partial' outcome")
    failure: float = Field(0.0, description="reward of a 'failure' outcome")
    latency_penalty_per_s: float = Field(
        0.0, ge=0.0, description="subtracted per second of tool latency"
    )
    feedback_weight: float = Field(
        0.2, ge=0.0, le=1.0, description="weight of the rating, (rating - 3) / 2, added to it"
    )


class TrainingConfig(Section):
    """The SHGAT ranker and its training loop (docs/training.md)."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="training device; auto: cuda when available"
    )
    torch_threads: int = Field(
        1, ge=0, le=256, description="torch CPU threads while training; 0: torch's default"
    )
    seed: int = Field(7, ge=0, description="initialization, sampling and dropout")
    source: Literal["auto", "labels", "interactions", "both"] = Field(
        "auto",
        description="experiences from labeled intents (a), interaction logs (b) or both; "
        "auto: whatever the dataset has",
    )
    hidden_dim: int = Field(256, ge=8, le=8192, description="width of the attention layers")
    heads: int = Field(4, ge=1, le=64, description="attention heads per layer")
    layers: int = Field(2, ge=0, le=8, description="hypergraph attention layers")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout inside the attention layers")
    lexical_dim: int = Field(
        512,
        ge=1,
        le=4096,
        description="id channel's lexical bag width (the linear start's lexical fit is exact up "
        "to this many capabilities, its best low-rank part beyond)",
    )
    lexical_min_df: int = Field(2, ge=1, description="a term must occur in this many texts")
    lexical_max_terms: int = Field(
        20_000, ge=1, le=2_000_000, description="lexicon size at most (most frequent terms)"
    )
    lexical_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of batch rows whose lexical bag is dropped (0: the linear start "
        "is fit on whole bags, and dropping them pulls SGD away from it)",
    )
    id_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of capabilities whose id channel is dropped"
    )
    evidence_dropout: float = Field(
        0.3,
        ge=0.0,
        lt=1.0,
        description="share of capabilities scored by the prior alone in each training step, "
        "as if they had no evidence: the residuals learn not to lift capabilities with "
        "evidence over a right answer without any (cold start, docs/training.md)",
    )
    validation_without_evidence: float | Literal["auto"] = Field(
        "auto",
        description="weight, in the validation figure that picks the best state, of the MRR "
        "with each intent's answers scored by their prior alone, as without evidence "
        "(cold start); 0: plain MRR; auto: the share of the catalog's capabilities without "
        "training evidence (docs/training.md, 'Validation sees the cold start')",
    )
    linear_start: bool = Field(
        True,
        description="before SGD, fit the id channel to the logistic-regression optimum over "
        "[intent vector, lexical bag] by L-BFGS (docs/training.md, 'The linear start')",
    )
    linear_start_c: float = Field(
        10.0, gt=0.0, description="the linear start's inverse L2 strength (scikit-learn's C)"
    )
    linear_start_iterations: int = Field(
        100, ge=1, le=10_000, description="the linear start's L-BFGS iterations at most"
    )
    linear_start_min_rank: int = Field(
        64,
        ge=1,
        le=4096,
        description="the start is validated with its lexical part at rank lexical_dim, "
        "lexical_dim / 2, ... down to this, and the best kept (a lower rank regularizes; "
        "lexical_dim: no choice)",
    )
    linear_start_max_cells: int = Field(
        50_000_000,
        ge=1,
        description="the linear start is skipped when max(positives, vocabulary) x "
        "capabilities exceeds this (its memory: a few floats per cell)",
    )
    cosine_weight: float = Field(
        8.0,
        gt=0.0,
        le=100.0,
        description="fixed weight of the intent-capability text cosine prior; the learned "
        "channels are residuals over it (docs/training.md)",
    )
    evidence_k: float = Field(
        3.0,
        gt=0.0,
        le=1e6,
        description="residual gate g(n) = n / (n + evidence_k) over a capability's n training "
        "positives: 0 ranks exactly as the prior, many ranks by what was learned",
    )
    log_weighting: Literal["ips", "none"] = Field(
        "none",
        description="ips: logged positives weighted by clipped inverse propensity x examination "
        "of their rank, so the logging policy and position bias are not learned; none: raw "
        "(the default: ips lowered test MRR on the embedded data, docs/training.md)",
    )
    ips_clip: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="floor of propensity x examination in the ips weight (weights <= 1/clip)",
    )
    content_loss_weight: float = Field(
        1.0, ge=0.0, description="InfoNCE on the id-free channels (what new capabilities get)"
    )
    label_negatives: int = Field(
        0, ge=0, le=100, description="failed experiences sampled per labeled intent"
    )
    valid_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="train intents held out for early stopping when the labels have no valid split",
    )
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam moment decay rates")
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay (L2)")
    grad_clip: float = Field(5.0, ge=0.0, description="max gradient norm; 0: no clipping")
    t_max: int = Field(1000, ge=1, description="cosine annealing period (steps)")
    eta_min: float = Field(1e-6, ge=0.0, description="cosine annealing's lowest learning rate")
    batch_size: int = Field(256, ge=1, description="experiences per optimizer step")
    max_steps: int = Field(1000, ge=1, description="optimizer steps at most")
    log_every: int = Field(10, ge=1, description="steps between logged training metrics")
    eval_every: int = Field(100, ge=1, description="steps between validation evaluations")
    patience: int = Field(5, ge=1, description="evaluations without improvement")
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints")
    temperature: float = Field(0.1, gt=0.0, description="InfoNCE softmax temperature")
    value_loss_weight: float = Field(0.5, ge=0.0, description="weight of the value head's TD loss")
    value_detach: bool = Field(
        True, description="value head reads detached representations (does not steer ranking)"
    )
    baselines: list[Literal["bm25", "dense", "logreg"]] = Field(
        ["bm25", "dense", "logreg"], description="baselines trained and evaluated beside it"
    )
    calibration: Literal["platt", "isotonic", "identity"] = Field(
        "platt",
        description="value head -> success probability map fitted on the validation intents' "
        "top-k (docs/training.md); identity: the raw value clipped to [0, 1]",
    )
    tuned_from: str = Field(
        "",
        description="apply a tuning run's best settings (`caprank tune`) over this section: "
        "empty: none; latest: the newest finished tuning run in MLflow; or a run id. The "
        "tuned keys win over every config layer (docs/training.md)",
    )
    per: PERConfig = PERConfig()
    td: TDConfig = TDConfig()
    reward: RewardConfig = RewardConfig()

    @field_validator("validation_without_evidence")
    @classmethod
    def _a_weight(cls, w: float | str) -> float | str:
        if w != "auto" and not 0.0 <= w <= 1.0:
            raise ValueError(f"must be 'auto' or a weight in [0, 1], not {w}")
        return w

    def without_evidence_weight(self, unseen_share: float) -> float:
        """The validation mixture's weight: the configured one, or under ``auto`` the
        share of the catalog's capabilities that have no training evidence (the chance
        that an intent's answer is one of them, were answers spread over the catalog)."""
        if self.validation_without_evidence == "auto":
            return float(unseen_share)
        return float(self.validation_without_evidence)


class SearchRange(Section):
    """One searched setting's range: uniform, or log-uniform with ``log``; an int setting
    (``max_steps``) draws ints."""

    low: float = Field(description="lowest value tried")
    high: float = Field(description="highest value tried")
    log: bool = Field(False, description="draw log-uniformly (low must be > 0)")

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must be above low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


def tunable_type(key: str) -> type | None:
    """``int`` or ``float`` for a numeric ``training`` setting (dotted below it:
    ``lr``, ``per.alpha``), None for anything else (not searchable)."""
    model: type[BaseModel] = TrainingConfig
    *parents, leaf = key.split(".")
    for part in parents:
        info = model.model_fields.get(part)
        sub = None if info is None else info.annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        model = sub
    info = model.model_fields.get(leaf)
    return info.annotation if info is not None and info.annotation in (int, float) else None


def _default_space() -> dict[str, SearchRange]:
    ranges = {
        "lr": (1e-4, 1e-2, True),
        "temperature": (0.03, 0.3, True),
        "cosine_weight": (1.0, 16.0, True),
        "evidence_k": (0.5, 20.0, True),
        "content_loss_weight": (0.0, 2.0, False),
        "dropout": (0.0, 0.3, False),
        "id_dropout": (0.0, 0.5, False),
        "evidence_dropout": (0.0, 0.5, False),
        "max_steps": (200, 2000, True),
    }
    return {k: SearchRange(low=lo, high=hi, log=log) for k, (lo, hi, log) in ranges.items()}


class TuningConfig(Section):
    """Hyperparameter search over ``training`` (`caprank tune`, docs/training.md)."""

    trials: int = Field(20, ge=1, le=10_000, description="trials at most")
    minutes: float = Field(
        60.0,
        gt=0.0,
        description="wall-clock budget: no trial starts after it, and a running one stops "
        "(pruned) at its next validation",
    )
    seed: int = Field(0, ge=0, description="the TPE sampler's seed")
    pruner: Literal["median", "halving", "none"] = Field(
        "median",
        description="stops a trial whose validation MRR trails: median of the earlier "
        "trials at the same step, successive halving, or none",
    )
    startup_trials: int = Field(
        3,
        ge=0,
        description="trials sampled at random before TPE, and completed before any pruning",
    )
    warmup_steps: int = Field(
        0, ge=0, description="training steps of a trial before it can be pruned"
    )
    start_from_config: bool = Field(
        True,
        description="first trial: the config's own values (clipped into the ranges), so "
        "the best trial is never worse on validation than not tuning",
    )
    cold_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="cold setting: share of the training capabilities held out as the "
        "pseudo-cold validation (the real valid and test labels are dropped)",
    )
    space: dict[str, SearchRange] = Field(
        default_factory=_default_space,
        description="the searched training settings (keys below training: lr, per.alpha) "
        "and their ranges; a mapping given replaces this one",
    )

    @field_validator("space")
    @classmethod
    def _numeric_training_keys(cls, value: dict[str, SearchRange]) -> dict[str, SearchRange]:
        bad = sorted(k for k in value if tunable_type(k) is None)
        if bad:
            raise ValueError(f"not numeric training settings: {bad}")
        if not value:
            raise ValueError("nothing to search: give at least one setting")
        return value


class UpdateConfig(Section):
    """Incremental update from the production bundle (`caprank update`, docs/online-learning.md)."""

    refit_iterations: int = Field(
        40,
        ge=0,
        description="L-BFGS iterations of the id-channel refit (every other weight frozen: "
        "a convex problem; 0: no refit)",
    )
    refit_l2: float = Field(
        0.01, ge=0.0, description="L2 pull of the refit id-channel rows towards the base's"
    )
    steps: int = Field(
        0,
        ge=0,
        description="SGD steps on every weight after the refit (0: none; each costs about "
        "what a training step costs)",
    )
    lr: float = Field(5e-5, gt=0.0, description="Adam learning rate of those steps")
    eval_every: int = Field(50, ge=1, description="steps between validation evaluations")
    replay_ratio: float = Field(
        3.0,
        ge=0.0,
        le=100.0,
        description="older experiences replayed per new one (a prioritized sample, so the "
        "model does not forget)",
    )
    max_regression: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="forgetting guard: reject the update when any old test metric (MRR, "
        "Hit@k, NDCG@10 of the base model's test intents) drops by more than this",
    )


class ActiveConfig(Section):
    """Active learning: which served intents go to the labelling queue (docs/online-learning.md)."""

    budget: int = Field(50, ge=1, description="intents per exported labelling batch")
    top_candidates: int = Field(5, ge=1, le=100, description="candidates shown per intent")
    margin_weight: float = Field(
        1.0, ge=0.0, description="weight of the small-margin term (softmax of the top two)"
    )
    probability_weight: float = Field(
        0.0, ge=0.0, description="weight of 1 - calibrated success probability of the top one"
    )
    disagreement_weight: float = Field(
        1.0, ge=0.0, description="weight of the share of baselines whose top-1 differs"
    )
    diverse: bool = Field(
        True,
        description="without evidence: at most one queued intent per top-1 capability "
        "while others remain",
    )
    evidence: bool = Field(
        True,
        description="greedy by uncertainty^uncertainty_power x novelty: intents likely to "
        "belong to capabilities with many train labels (or already queued) wait",
    )
    novelty_source: Literal["prior", "ranker"] = Field(
        "prior",
        description="which scores say what capability an intent belongs to, for novelty: "
        "the text prior (cosine to the capability text, blind to what was taught) or the "
        "ranker (its learned residual leans towards capabilities it was taught)",
    )
    temperature: float | None = Field(
        None,
        gt=0.0,
        description="softmax temperature of those scores; unset: fitted by maximum "
        "likelihood of the train labels' capabilities",
    )
    uncertainty_power: float = Field(
        0.0,
        ge=0.0,
        description="exponent of the uncertainty factor of the evidence greedy (0: the "
        "expected new evidence alone)",
    )


class EvaluationConfig(Section):
    """Offline evaluation, protocols, counterfactual estimates and the promotion gate."""

    cutoffs: list[Annotated[int, annotated_types.Ge(1), annotated_types.Le(10_000)]] = Field(
        [1, 3, 5, 10], min_length=1, description="cutoffs k of hit@k, ndcg@k and map@k"
    )
    primary_metric: Literal["mrr", "ndcg@10", "hit@1", "hit@10", "map"] = Field(
        "mrr", description="the metric the promotion gate compares"
    )
    min_primary: float = Field(0.2, ge=0.0, le=1.0, description="absolute quality floor")
    min_improvement: float = Field(0.0, ge=0.0, description="required gain over production")
    bootstrap_samples: int = Field(1000, ge=10, description="resamples behind each interval")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="level of the intervals")
    cv_folds: int = Field(5, ge=2, le=50, description="folds of the cross-validation protocol")
    temporal_train_days: int = Field(
        21, ge=1, description="temporal protocol: days of log to train on"
    )
    temporal_test_days: int = Field(
        7, ge=1, description="temporal protocol: the following days to test on"
    )
    temporal_valid_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.5,
        description="data without labels: share of the log's events, just before the test "
        "period, that validate (early stopping, calibration)",
    )
    temporal_test_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=0.5,
        description="data without labels: the latest share of the log's events, which the "
        "evaluate stage tests on (never trained on)",
    )
    max_scoring_p99_ms: float = Field(
        200.0, gt=0.0, description="gate: offline p99 scoring latency ceiling"
    )
    max_ece: float = Field(
        0.25, gt=0.0, le=1.0, description="gate: expected calibration error ceiling"
    )
    calibration_bins: int = Field(
        10, ge=2, le=100, description="equal-width bins of the calibration error"
    )
    seed: int = Field(11, ge=0, description="bootstrap resamples, folds and holdout draws")
    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of query groups held out when no split is given"
    )
    coverage_k: int = Field(10, ge=1, le=1000, description="top-K behind coverage and Gini")
    grade_success: int = Field(2, ge=1, le=100, description="relevance of a successful event")
    grade_partial: int = Field(
        1, ge=0, le=100, description="relevance of a partial event (0: not relevant)"
    )
    ips_max_weight: float | None = Field(
        None, gt=0.0, description="clip importance weights at this value; empty: no clipping"
    )
    importance_repeats: int = Field(
        3,
        ge=0,
        le=100,
        description="permutation importance: shuffles of each capability feature on the test "
        "queries, averaged (0: no importance section)",
    )
    importance_max_queries: int = Field(
        2000,
        ge=10,
        description="permutation importance: test queries it scores (a seeded sample above)",
    )
    history_versions: int = Field(
        20, ge=1, le=1000, description="latest registry versions in the report's metric history"
    )

    @model_validator(mode="after")
    def _primary_metric_is_computed(self) -> EvaluationConfig:
        _, _, k = self.primary_metric.partition("@")
        if k and int(k) not in self.cutoffs:
            raise ValueError(
                f"primary_metric {self.primary_metric!r} needs {k} in cutoffs {self.cutoffs}"
            )
        return self


class MonitoringConfig(Section):
    """Drift and data-quality checks between a reference and a current window."""

    ks_pvalue: float = Field(
        0.01, gt=0.0, lt=1.0, description="family-wise level (Bonferroni over columns/dims)"
    )
    psi_threshold: float = Field(
        0.2, gt=0.0, description="prediction drift: score PSI above this fires"
    )
    psi_bins: int = Field(10, ge=2, le=100, description="quantile bins of the reference scores")
    psi_epsilon: float = Field(1e-4, gt=0.0, lt=0.1, description="floor for an empty bin share")
    max_missing_rate: float = Field(
        0.05, ge=0.0, le=1.0, description="missing_rate: worst column's missing share ceiling"
    )
    min_total_variance: float = Field(
        0.01,
        ge=0.0,
        description="embedding_variance: floor on the current embeddings' total variance "
        "(trace of the covariance); lower means collapse",
    )
    reference_days: int = Field(
        14, ge=1, le=3650, description="monitor: days of log before the current window"
    )
    current_days: int = Field(
        7,
        ge=1,
        le=3650,
        description="monitor: the last days of the log, compared with the reference",
    )
    top_tools: int = Field(
        10, ge=0, le=1000, description="monitor: busiest tools whose failures are tracked"
    )
    min_window_events: int = Field(
        200, ge=2, description="monitor: fewer events in a window and drift is not judged"
    )
    launch_pvalue: float = Field(
        0.04,
        gt=0.0,
        lt=1.0,
        description="monitor: launched capabilities draw more requests/day than established "
        "ones at this one-sided Mann-Whitney p (with ks_pvalue, a 5% family-wise level)",
    )
    retrain_policy: Literal["always", "on_drift", "on_degradation", "never"] = Field(
        "always",
        description="when the nightly run trains: always; on_drift: when a drift check fired; "
        "on_degradation: when the current window's success rate is significantly below the "
        "reference's by degradation_margin; never: drift is reported only. Each also trains "
        "while no model is in production",
    )
    degradation_margin: float = Field(
        0.02,
        ge=0.0,
        lt=1.0,
        description="on_degradation: success-rate drop (absolute) that counts as degradation",
    )
    degradation_alpha: float = Field(
        0.05, gt=0.0, lt=1.0, description="on_degradation: one-sided level of the test"
    )
    served_checks: bool = Field(
        True,
        description="monitor: also run the embedding KS (intent texts encoded with "
        "embedding.text_model) and prediction PSI (top scores of the model serve would load) "
        "on the served requests of both windows",
    )
    served_sample: int = Field(
        1000, ge=2, le=1_000_000, description="monitor: served requests drawn per window"
    )


class PrivacyConfig(Section):
    """What interaction data is kept, and for how long."""

    retention_days: int = Field(365, ge=1, description="events older than this are dropped")
    scrub_pii: bool = Field(
        True, description="replace e-mails, phone, card and account numbers and IPs in stored texts"
    )
    opt_out_users: list[str] = Field(
        [],
        description="users whose events are never stored, matched on the normalized id "
        "(NFKC, stripped, casefolded) and its hashed form; empty: nobody opted out",
    )
    pii_ids: Literal["hash", "reject", "keep"] = Field(
        "hash",
        description="user_id/session_id values that look like personal data (e-mail, "
        "phone, card, IP): hash (keyed HMAC-SHA256), reject (HTTP 400) or keep as sent",
    )
    id_hash_key_env: str = Field(
        "CAPRANK_SECRET_ID_HASH_KEY",
        description="environment variable holding the HMAC key for hashed ids (fill it "
        "from a Kubernetes Secret; CAPRANK_SECRET_* names are never read as config "
        "overrides); unset: a per-install key under <home>/secrets/",
    )
    require_id_hash_key: bool = Field(
        False,
        description="fail at start-up when the id_hash_key_env variable is empty instead "
        "of using the per-install key (set it in production)",
    )


class IntentEncodingConfig(Section):
    """How the server turns intent texts into vectors: an LRU cache, then a micro-batcher."""

    cache_size: int = Field(10_000, ge=0, description="intent vectors kept in the LRU cache")
    cache_ttl_s: float = Field(3600.0, gt=0.0, description="a cached intent vector expires then")
    score_cache_mb: float = Field(
        64.0,
        ge=0.0,
        description="memory for cached intents' scores over the whole catalog (per model): "
        "a cache hit then gathers its candidates' scores instead of a product over their "
        "rows; an intent's first hit computes them (10,000 capabilities: 40 kB each); 0: off",
    )
    batch: bool = Field(
        True,
        description="encode concurrent cache-missing intents together (max_batch_size, "
        "max_batch_wait_ms); see docs/serving.md for the measured effect",
    )
    max_batch_size: int = Field(16, ge=1, description="intents the batcher encodes at once")
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0.0,
        description="how long the intent batcher waits for more texts; 0: it takes what "
        "queued while the previous batch encoded (no added latency when idle)",
    )
    torch_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="intra-op threads of the intent encoder (torch or ONNX Runtime); 0: the "
        "runtime's default. One thread per encode keeps latency steady on a shared CPU; "
        "requests run in parallel threads",
    )
    backend: Literal["torch", "onnx"] = Field(
        "onnx",
        description="runtime of the text model in the server (intents and the catalog "
        "build): onnx (ONNX Runtime, exported from the torch model at first use; CUDA "
        "provider when present) or torch. Training always uses torch; see docs/serving.md",
    )
    quantize: bool = Field(
        False,
        description="onnx backend: int8 dynamic quantization of the MatMul weights (faster, "
        "cosine to torch about 0.98-0.99; its vectors are cached apart from fp32 ones)",
    )
    onnx_dir: Path | None = Field(
        None,
        description="where ONNX exports are cached, one folder per model and variant; "
        "empty: $XDG_CACHE_HOME/caprank/onnx (~/.cache/caprank/onnx)",
    )


SQL_NAME = r"^[a-z_][a-z0-9_]{0,62}$"  # an unquoted PostgreSQL identifier


class FeedbackConfig(Section):
    """The feedback path: where served rankings are kept for feedback (this process, or
    Redis shared by every replica) and where feedback events go (a local write-ahead log,
    or PostgreSQL shared by every replica and read by the pipeline) (docs/serving.md)."""

    dir: Path | None = Field(None, description="the feedback log; empty: <home>/feedback")
    sink: Literal["wal", "postgres"] = Field(
        "wal",
        description="where feedback events are stored and read from (serving, ingest, the "
        "canary's quality guardrail): wal, the local write-ahead log under dir (one "
        "replica); postgres, table `table` in services.feedback_dsn (shared by replicas)",
    )
    table: str = Field(
        "caprank_feedback",
        pattern=SQL_NAME,
        description="PostgreSQL table of the feedback events (sink postgres; created if missing)",
    )
    served_store: Literal["local", "redis"] = Field(
        "local",
        description="where served rankings are kept for feedback: local, this process (and "
        "its log under dir/served); redis, services.redis_url too, so feedback may reach any "
        "replica",
    )
    served_key_prefix: str = Field(
        "caprank:served:",
        min_length=1,
        description="prefix of the Redis keys of served rankings (served_store redis)",
    )
    request_store_size: int = Field(
        50_000, ge=1, le=10_000_000, description="served rankings kept for feedback"
    )
    request_store_ttl_s: float = Field(
        6 * 3600.0, gt=0.0, description="feedback for a ranking older than this is refused"
    )
    request_store_fsync_s: float = Field(
        0.2,
        gt=0.0,
        le=60.0,
        description="how often the served-ranking log is fsync'd (each ranking reaches the OS "
        "before its answer, surviving a process kill; a machine crash loses at most this)",
    )
    segment_events: int = Field(
        5000, ge=1, le=10_000_000, description="write-ahead log segment size before rotation"
    )
    compact_s: float = Field(
        60.0, gt=0.0, description="how often closed log segments become Parquet parts"
    )


class RateLimitConfig(Section):
    """Per-client token buckets on predict and feedback (keyed by client address)."""

    predict_per_s: float = Field(
        500.0,
        ge=0.0,
        description="predict/infer requests a client may send per second; 0: no limit",
    )
    predict_burst: int = Field(1000, ge=1, description="predict requests a client may send at once")
    feedback_per_s: float = Field(
        500.0, ge=0.0, description="feedback posts a client may send per second; 0: no limit"
    )
    feedback_burst: int = Field(1000, ge=1, description="feedback posts a client may send at once")
    client_header: str = Field(
        "",
        description="header whose first address names the client (x-forwarded-for where the "
        "edge proxy overwrites it); empty: the connection's peer address",
    )
    max_clients: int = Field(
        10_000, ge=1, description="client buckets kept (least recently seen dropped first)"
    )


class ExploreConfig(Section):
    """Exploration at serving time, so the logged propensities are informative
    (docs/serving.md, "Exploration"). Off by default: the ranking is then deterministic and
    every logged propensity is 1."""

    policy: Literal["none", "epsilon", "softmax"] = Field(
        "none",
        description="none: the model's order; epsilon: with probability epsilon a uniformly "
        "random order of the top top_n; softmax: the top top_n drawn one position at a time "
        "with probability proportional to exp(score / temperature) (Plackett-Luce)",
    )
    epsilon: float = Field(
        0.1, ge=0.0, le=1.0, description="share of rankings shuffled (policy epsilon)"
    )
    temperature: float = Field(
        0.1, gt=0.0, description="softmax temperature on the ranking scores (policy softmax)"
    )
    top_n: int = Field(
        5,
        ge=2,
        le=8,
        description="only the first top_n ranked results are reordered (at most 8: the "
        "exact softmax propensities enumerate the 2**top_n sets of earlier positions)",
    )
    seed: int = Field(
        0, ge=0, description="mixed with each server-issued request id to seed its draw"
    )


class ServingConfig(Section):
    """The online ranker (`caprank serve`, the KServe predictor) (docs/serving.md)."""

    port: int = Field(8080, ge=1, le=65535, description="`caprank serve` HTTP port")
    endpoint_name: str = Field(
        "caprank",
        description="model name in the local server's /v1/models/<name> paths (on KServe, "
        "--model_name: the InferenceService's name)",
    )
    model_ref: str = Field(
        "production",
        description="what `caprank serve` loads: an MLflow alias, a version number, a model "
        "directory, or dense (never another alias or the latest version)",
    )
    missing_model: Literal["auto", "error", "dense"] = Field(
        "auto",
        description="when the registry lacks model_ref's alias (or cannot be read): error, "
        "or serve the dense ranker; auto: dense only for a missing alias on the embedded "
        "local registry (services.mlflow_tracking_uri empty), an error otherwise",
    )
    feature_refresh_s: float = Field(
        300.0, gt=0.0, description="how often online features are re-read from the store"
    )
    default_top_k: int = Field(10, ge=1, description="results when a request gives no top_k")
    max_top_k: int = Field(100, ge=1, description="largest top_k a request may ask")
    max_candidates: int = Field(10_000, ge=1, description="candidate ids a request may pass")
    candidate_list_cache_mb: float = Field(
        16.0,
        ge=0.0,
        description="memory for the rows of recently seen candidate lists (16 ids or more): "
        "a request bringing a remembered list skips the per-id lookups (a client's fixed "
        "list of enabled capabilities); 0: off",
    )
    max_intent_chars: int = Field(2000, ge=1, description="longest intent text accepted")
    max_payload_bytes: int = Field(1_000_000, ge=1024, description="largest request body")
    boost: dict[str, float] = Field({}, description="capability id -> score added")
    penalty: dict[str, float] = Field({}, description="capability id -> score subtracted")
    worker_threads: int = Field(
        4, ge=1, le=64, description="threads that run ranking off the server's event loop"
    )
    fallback_on_error: bool = Field(
        True, description="answer with the dense fallback ranker when the model fails"
    )
    max_instances: int = Field(
        16, ge=1, le=1024, description="rank requests one predict/infer call may carry"
    )
    request_timeout_s: float = Field(
        10.0, gt=0.0, description="a predict call not answered by then gets 503 (its work stops)"
    )
    max_queued_requests: int = Field(
        32,
        ge=1,
        description="predict calls with uncached intents waiting for or running in the worker "
        "pool; more get 503 with Retry-After (calls whose intents are cached skip the pool)",
    )
    admin_token_env: str = Field(
        "CAPRANK_ADMIN_TOKEN",
        description="environment variable holding the bearer token of /admin/* (fill it from "
        "a Kubernetes Secret); unset or empty: the admin routes answer 404",
    )
    model_roots: list[str] = Field(
        [],
        description="directories under which /admin may load a model directory; empty: admin "
        "loads only registry versions and aliases",
    )
    model_repository: bool = Field(
        False,
        description="KServe's model-repository extension (/v2/repository/models/<name>/load, "
        "unload); when on it needs the admin token too",
    )
    rate_limit: RateLimitConfig = RateLimitConfig()
    intents: IntentEncodingConfig = IntentEncodingConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    explore: ExploreConfig = ExploreConfig()


class WatchConfig(Section):
    """The watch after a promotion: the new production against the previous version
    (docs/online-learning.md, "After promotion")."""

    period_s: float = Field(
        1800.0,
        ge=0.0,
        description="how long a promoted version is watched before the previous one is let "
        "go; 0: no watch. Needs outcome feedback (cluster target), else it is skipped",
    )
    mode: Literal["holdback", "shadow"] = Field(
        "holdback",
        description="holdback: the previous version keeps holdback_percent of traffic and is "
        "compared over the same period; shadow: it keeps no traffic (it stays deployed for an "
        "instant switch back) and is compared with its own feedback of the period before",
    )
    holdback_percent: int = Field(
        10, ge=1, le=50, description="holdback mode: share of requests the previous version keeps"
    )
    margin: float = Field(
        0.02,
        ge=0.0,
        lt=1.0,
        description="roll back when the success rate is below the previous version's by more "
        "than this (absolute), at significance alpha",
    )
    alpha: float = Field(
        0.05, gt=0.0, lt=1.0, description="one-sided level of the two-proportion test"
    )
    min_feedback: int = Field(
        200,
        ge=1,
        description="feedback events each version needs at the watch's end for the test; "
        "fewer and the promotion stands (the result says it was not judged)",
    )


class CanaryConfig(Section):
    """The deploy stage's canary rollout and its guardrails (docs/cluster.md)."""

    strategy: Literal["canary", "blue_green"] = Field(
        "canary",
        description="canary: traffic_percent% to the new version for window_s; blue_green: "
        "the new version is deployed and warmed with no traffic, then takes all of it at "
        "once, and is switched back if a guardrail breaks within window_s",
    )
    traffic_percent: int = Field(10, ge=0, le=100, description="share of requests the canary gets")
    mode: Literal["split", "shadow"] = Field(
        "split",
        description="local canary: split answers its share with the new model; shadow scores "
        "a copy while the stable model answers",
    )
    window_s: float = Field(600.0, gt=0.0, description="how long guardrails are watched")
    poll_s: float = Field(10.0, gt=0.0, description="guardrail poll interval")
    ready_timeout_s: float = Field(
        900.0, gt=0.0, description="the canary must be ready by then, or it is rolled back"
    )
    max_error_rate: float = Field(0.01, ge=0.0, le=1.0, description="guardrail: error rate ceiling")
    max_p99_latency_ms: float = Field(
        200.0, gt=0.0, description="guardrail: live p99 latency ceiling"
    )
    min_success_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="guardrail: absolute success-rate floor from feedback (0: only the "
        "relative max_success_rate_drop judges quality)",
    )
    max_success_rate_drop: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="guardrail: how far the canary's success rate may fall below the "
        "stable model's over the same window (both need min_feedback outcomes)",
    )
    allow_unmeasured: list[Literal["requests", "error_rate", "p99_latency_ms", "success_rate"]] = (
        Field(
            [],
            description="guardrails that may go unmeasured at the window's end; any other "
            "left unmeasured rolls the canary back instead of promoting it",
        )
    )
    metrics_port: int = Field(
        8080,
        ge=1,
        le=65535,
        description="cluster canary without services.prometheus_url: the predictor pods' "
        "port whose /metrics the controller reads",
    )
    min_requests: int = Field(
        100, ge=0, description="guardrail: requests the canary must receive in the window"
    )
    min_feedback: int = Field(
        20, ge=0, description="feedback events needed before the quality guardrail is judged"
    )
    quality_alpha: float = Field(
        0.05,
        ge=0.0,
        lt=0.5,
        description="guardrail: level of the always-valid test that the canary's success rate "
        "is below the primary's (docs/experiments.md); 0 turns the comparison off",
    )
    quality_mde: float = Field(
        0.05, gt=0.0, lt=1.0, description="the quality comparison's mixture scale (a drop in rate)"
    )
    deployment_mode: Literal["auto", "serverless", "standard"] = Field(
        "auto", description="KServe canary form; auto: read it from the InferenceService"
    )
    canary_name: str = Field(
        "canary", min_length=1, max_length=40, description="Standard-mode canary predictor name"
    )
    promql_requests: str = Field(
        'sum(increase(request_predict_seconds_count{namespace="$namespace", pod=~"$pod"}[$range]))',
        description="PromQL: canary requests over the window ($namespace, $pod, $range)",
    )
    promql_error_rate: str = Field(
        'sum(rate(caprank_rank_requests_total{namespace="$namespace", pod=~"$pod", '
        'status="error"}[$range])) / sum(rate(caprank_rank_requests_total{'
        'namespace="$namespace", pod=~"$pod"}[$range]))',
        description="PromQL: canary error rate in [0, 1]",
    )
    promql_p99_ms: str = Field(
        "1000 * histogram_quantile(0.99, sum by (le) (rate(request_predict_seconds_bucket{"
        'namespace="$namespace", pod=~"$pod"}[$range])))',
        description="PromQL: canary p99 latency in milliseconds",
    )
    prometheus_timeout_s: float = Field(10.0, gt=0.0, description="Prometheus query timeout")
    target: Literal["auto", "local", "cluster", "fleet"] = Field(
        "auto",
        description="where the deploy stage rolls out: cluster (the KServe "
        "InferenceService), fleet (the `caprank serve` replicas of services.replica_urls, "
        "over their admin API), local (the in-process canary); auto: cluster inside a pod",
    )
    local_requests: int = Field(
        2000,
        ge=1,
        le=10_000_000,
        description="local mode: synthetic requests spread over the window, which runs on a "
        "virtual clock (a busy CPU slows the run, never thins the evidence); topped up until "
        "each arm has min_requests",
    )
    local_intents: int = Field(
        200, ge=1, le=100_000, description="local mode: distinct intents the traffic draws"
    )
    watch: WatchConfig = WatchConfig()


class ExperimentsConfig(Section):
    """A/B experiments between two served versions (docs/experiments.md)."""

    dir: Path | None = Field(
        None, description="experiment records, reports and gauges; empty: <home>/experiments"
    )
    alpha: float = Field(
        0.05, gt=0.0, lt=0.5, description="false-positive rate of the (always-valid) test"
    )
    power: float = Field(0.8, gt=0.5, lt=1.0, description="power wanted at the minimum effect")
    mde: float = Field(
        0.02, gt=0.0, lt=1.0, description="minimum detectable effect: absolute success-rate lift"
    )
    baseline_rate: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="control success rate for sizing when the control's log has too few outcomes",
    )
    baseline_min_events: int = Field(
        200, ge=1, description="control outcomes needed to size from its logged success rate"
    )
    share: float = Field(0.5, gt=0.0, lt=1.0, description="share of units the treatment gets")
    unit: Literal["user", "session"] = Field(
        "user", description="what sticky assignment hashes (user id, else session id)"
    )
    max_duration_h: float = Field(
        168.0, gt=0.0, description="an experiment still undecided after this keeps the control"
    )
    look_interval_h: float = Field(
        1.0, gt=0.0, description="the sequential test is evaluated at this interval from start"
    )
    min_per_arm: int = Field(
        100, ge=1, description="outcomes each arm needs before the test may decide"
    )
    max_error_rate_increase: float = Field(
        0.0, ge=0.0, le=1.0, description="guardrail: failure-rate increase tolerated (absolute)"
    )
    max_latency_increase: float = Field(
        0.1, ge=0.0, description="guardrail: mean execution-time increase tolerated (relative)"
    )


class ServicesConfig(Section):
    """Endpoints of real services. Empty values mean the embedded local default."""

    feast_online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Feast online store: embedded SQLite or Redis"
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis online store (feast_online_store redis)"
    )
    feast_registry: str = Field("", description="SQLAlchemy URL; empty: <home>/feast/registry.db")
    mlflow_tracking_uri: str = Field("", description="empty: sqlite:///<home>/mlflow.db")
    mlflow_artifact_root: str = Field("", description="empty: <home>/mlartifacts")
    registered_model: str = Field("caprank-ranker", description="MLflow registered model name")
    mlflow_artifacts_destination: str = Field(
        "s3://mlflow/artifacts",
        description="the MLflow server's --artifacts-destination (manifests/base/mlflow.yaml): "
        "turns proxied mlflow-artifacts:/ URIs into storage URIs KServe can download",
    )
    kfp_host: str = Field("", description="Kubeflow Pipelines API URL (submit, schedule)")
    kube_namespace: str = Field("caprank", description="Kubernetes namespace of the deployment")
    inference_service: str = Field(
        "caprank-ranker", description="KServe InferenceService the deploy stage rolls out on"
    )
    prometheus_url: str = Field(
        "",
        description="Prometheus for the cluster canary's guardrails; empty: the controller "
        "reads the predictor pods' /metrics itself",
    )
    pushgateway_url: str = Field(
        "",
        description="Prometheus Pushgateway the monitor stage pushes its drift verdict to "
        "(the drift alert reads it); empty: not pushed",
    )
    replica_urls: list[str] = Field(
        [],
        description="base URLs of the `caprank serve` replicas the fleet target "
        "(canary.target fleet) rolls out on, e.g. http://10.0.0.5:8080",
    )
    feedback_dsn: str = Field(
        "",
        description="PostgreSQL URL (postgresql://user:password@host:5432/db) of the feedback "
        "sink (serving.feedback.sink postgres); fill it from a Secret",
    )


PIPELINE_STEPS = (
    "ingest",
    "validate",
    "build_features",
    "monitor",
    "embed",
    "train",
    "update",
    "evaluate",
    "deploy",
)
CPU_QUANTITY = r"^([0-9]*[.])?[0-9]+m?$"  # what kfp's set_cpu_request accepts
MEMORY_QUANTITY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"  # kfp's set_memory_request


class StepResources(Section):
    """CPU and memory one pipeline task requests and is limited to (Kubernetes units)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    cpu_request: str = Field("500m", pattern=CPU_QUANTITY, description="CPU request")
    cpu_limit: str = Field("1", pattern=CPU_QUANTITY, description="CPU limit")
    memory_request: str = Field("1Gi", pattern=MEMORY_QUANTITY, description="memory request")
    memory_limit: str = Field("2Gi", pattern=MEMORY_QUANTITY, description="memory limit")


def _default_step_resources() -> dict[str, StepResources]:
    big = {"cpu_request": "1", "cpu_limit": "2", "memory_request": "2Gi", "memory_limit": "4Gi"}
    return {
        "ingest": StepResources(),
        "validate": StepResources(),
        "build_features": StepResources(**big),
        "monitor": StepResources(),
        "embed": StepResources(
            cpu_request="2", cpu_limit="4", memory_request="4Gi", memory_limit="8Gi"
        ),
        "train": StepResources(
            cpu_request="2", cpu_limit="4", memory_request="8Gi", memory_limit="16Gi"
        ),
        "update": StepResources(
            cpu_request="2", cpu_limit="4", memory_request="4Gi", memory_limit="8Gi"
        ),
        "evaluate": StepResources(**big),
        "deploy": StepResources(
            cpu_request="250m", cpu_limit="500m", memory_request="512Mi", memory_limit="1Gi"
        ),
    }


class PipelineConfig(Section):
    """The Kubeflow pipeline: images, GPU placement, pod wiring and the nightly schedule."""

    name: str = Field("caprank-training", description="KFP pipeline name")
    image_registry: str = Field("ghcr.io/caprank", description="registry of our images")
    image_tag: str = Field("0.1.0", description="tag of our images")
    component_image: str = Field("caprank-component", description="image name (no registry)")
    training_image: str = Field("caprank-train-gpu", description="CUDA training image name")
    serving_image: str = Field("caprank-serving", description="KServe predictor image name")
    gpu_node_selector: dict[str, str] = Field(
        {"caprank.io/pool": "gpu"}, description="node labels of the GPU pool"
    )
    gpu_toleration_key: str = Field("nvidia.com/gpu", description="taint key GPU tasks tolerate")
    gpu_toleration_effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        "NoSchedule", description="effect of that taint"
    )
    gpu_accelerator: str = Field(
        "nvidia.com/gpu", description="accelerator type requested when gpu_count > 0"
    )
    gpu_count: int = Field(
        1, ge=0, le=16, description="accelerators per GPU task; 0: pool placement only (kind)"
    )
    cron: str = Field("0 0 2 * * *", description="KFP 6-field cron (seconds first)")
    experiment: str = Field("caprank", min_length=1, description="KFP experiment for runs")
    schedule_name: str = Field("caprank-nightly", min_length=1, description="recurring run")
    enable_caching: bool = Field(
        False, description="KFP step caching for submitted and scheduled runs"
    )
    config_map: str = Field(
        "caprank-endpoints",
        min_length=1,
        description="ConfigMap (in the namespace KFP runs pods in) whose config_map_keys "
        "every task gets as env vars: the service endpoints",
    )
    config_map_keys: list[str] = Field(
        [
            "CAPRANK_SERVICES__MLFLOW_TRACKING_URI",
            "CAPRANK_SERVICES__FEAST_ONLINE_STORE",
            "CAPRANK_SERVICES__REDIS_URL",
            "CAPRANK_SERVICES__KUBE_NAMESPACE",
            "CAPRANK_SERVICES__INFERENCE_SERVICE",
            "CAPRANK_SERVING__FEEDBACK__SINK",
            "AWS_ENDPOINT_URL",
        ],
        description="keys of pipeline.config_map, each set as the env var of the same name "
        "on every task (a missing key keeps the pod from starting)",
    )
    secret: str = Field(
        "caprank-credentials",
        min_length=1,
        description="Secret whose secret_keys every task gets as env vars: credentials and "
        "URLs that embed them",
    )
    secret_keys: list[str] = Field(
        [
            "CAPRANK_SERVICES__FEAST_REGISTRY",
            "CAPRANK_SERVICES__FEEDBACK_DSN",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "CAPRANK_SECRET_ID_HASH_KEY",
        ],
        description="keys of pipeline.secret, each set as the env var of the same name on "
        "every task",
    )
    resources: dict[str, StepResources] = Field(
        default_factory=_default_step_resources,
        description="CPU/memory requests and limits per step ("
        + ", ".join(PIPELINE_STEPS)
        + "); steps left out keep their defaults; train's GPU comes from gpu_count",
    )

    @field_validator("cron")
    @classmethod
    def _kfp_cron(cls, value: str) -> str:
        try:
            return validate_kfp_cron(value)
        except CronError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("resources", mode="before")
    @classmethod
    def _fill_steps(cls, value: Any) -> Any:
        """A partial mapping overrides only the steps it names; unknown steps are errors."""
        if not isinstance(value, Mapping):
            return value
        unknown = sorted(set(value) - set(PIPELINE_STEPS))
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; steps: {', '.join(PIPELINE_STEPS)}")
        merged: dict[str, Any] = {}
        for step, default in _default_step_resources().items():
            given = value.get(step) or {}
            if isinstance(given, StepResources):
                given = given.model_dump()
            merged[step] = (
                {**default.model_dump(), **given} if isinstance(given, Mapping) else given
            )
        return merged

    @field_validator("config_map_keys", "secret_keys")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        bad = [k for k in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
        if bad:
            raise ValueError(f"not valid env var names (and ConfigMap/Secret keys): {bad}")
        return value

    def image(self, name: str) -> str:
        """Full reference of one of our images: <registry>/<name>:<tag>."""
        return f"{self.image_registry.rstrip('/')}/{name}:{self.image_tag}"


class CaprankConfig(Section):
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    features: FeaturesConfig = FeaturesConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    training: TrainingConfig = TrainingConfig()
    tuning: TuningConfig = TuningConfig()
    update: UpdateConfig = UpdateConfig()
    active: ActiveConfig = ActiveConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    serving: ServingConfig = ServingConfig()
    canary: CanaryConfig = CanaryConfig()
    experiments: ExperimentsConfig = ExperimentsConfig()
    services: ServicesConfig = ServicesConfig()
    pipeline: PipelineConfig = PipelineConfig()

    # Derived locations: the single place that says where embedded state lives.
    def home(self) -> Path:
        return self.paths.home

    def mlflow_tracking_uri(self) -> str:
        uri = self.services.mlflow_tracking_uri
        return uri or f"sqlite:///{(self.paths.home / 'mlflow.db').resolve()}"

    def mlflow_artifact_root(self) -> str:
        root = self.services.mlflow_artifact_root
        return root or str((self.paths.home / "mlartifacts").resolve())

    def embedding_cache_dir(self) -> Path:
        return self.embedding.cache_dir or self.paths.home / "embedding-cache"

    def feedback_dir(self) -> Path:
        return self.serving.feedback.dir or self.paths.home / "feedback"

    def experiments_dir(self) -> Path:
        return self.experiments.dir or self.paths.home / "experiments"

    def features_dir(self) -> Path:
        return self.paths.features or self.paths.home / "features"

    def feast_dir(self) -> Path:
        """Embedded Feast state: file registry and SQLite online store."""
        return self.paths.home / "feast"


# --------------------------------------------------------------------------- resolution

DEFAULT = "default"


@dataclass
class ResolvedConfig:
    """A validated config plus the layer each leaf value came from."""

    config: CaprankConfig
    sources: dict[str, str] = field(default_factory=dict)

    def source_of(self, key: str) -> str:
        return self.sources.get(key, DEFAULT)

    def rows(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, source) for every leaf, in declaration order."""
        dumped = self.config.model_dump(mode="json")
        return [(k, _get_dotted(dumped, k), self.source_of(k)) for k in leaf_keys(CaprankConfig)]


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, info in model.model_fields.items():
        sub = _section_type(info.annotation)
        if sub is not None:
            keys.extend(leaf_keys(sub, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field_info(key: str):
    model: type[BaseModel] = CaprankConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            return None
        info = model.model_fields[part]
        if i == len(parts) - 1:
            return info
        sub = _section_type(info.annotation)
        if sub is None:
            return None
        model = sub
    return None


def describe_allowed(key: str) -> str:
    """Human description of what a key accepts: its type, choices and bounds."""
    info = _field_info(key)
    if info is None:
        return ""
    return ", ".join([_type_name(info.annotation), *_bounds(info.metadata)])


def _bounds(metadata: Iterable[Any]) -> list[str]:
    parts = []
    for meta in metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            val = getattr(meta, attr, None)
            if isinstance(meta, annotated_types.BaseMetadata) and val is not None:
                parts.append(f"{sym} {val}")
    return parts


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # e.g. list items with bounds: "int >= 1"
        inner, *extra = typing.get_args(annotation)
        # Field(...) inside Annotated carries its bounds in its own .metadata
        metadata = [m for e in extra for m in getattr(e, "metadata", [e])]
        return " ".join([_type_name(inner), *_bounds(metadata)])
    if origin is Literal:
        return "one of " + " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(
            "empty" if a is type(None) else _type_name(a) for a in typing.get_args(annotation)
        )
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _flatten(model: type[BaseModel], data: Mapping[str, Any], source: str, prefix: str = ""):
    """Yield (dotted key, value) for a nested mapping, rejecting keys the model lacks."""
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip(".") or "<root>", "expected a mapping", source=source)
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in model.model_fields:
            allowed = ", ".join(model.model_fields)
            raise ConfigError(key, "unknown key", allowed=allowed, source=source)
        sub = _section_type(model.model_fields[name].annotation)
        if sub is not None and isinstance(value, Mapping):
            yield from _flatten(sub, value, source, f"{key}.")
        elif sub is not None:
            raise ConfigError(key, "is a section; give its fields", source=source)
        else:
            yield key, value


def _check_key(key: str, source: str) -> None:
    model: type[BaseModel] = CaprankConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            where = ".".join(parts[: i + 1])
            allowed = ", ".join(model.model_fields)
            raise ConfigError(where, "unknown key", allowed=allowed, source=source)
        sub = _section_type(model.model_fields[part].annotation)
        if i < len(parts) - 1 and sub is None:
            raise ConfigError(key, "unknown key", source=source)
        if i == len(parts) - 1 and sub is not None:
            raise ConfigError(key, "is a section; set one of its fields", source=source)
        if sub is not None:
            model = sub


def _parse_scalar(text: str) -> Any:
    """Values from env and --set are YAML scalars: '0.5' -> 0.5, '[1, 7]' -> [1, 7]."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except (yaml.YAMLError, ValueError):  # ValueError: date-like text that is no date
        return text


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _get_dotted(tree: Mapping, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def _load_yaml_file(path: Path) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("--config", f"file not found: {path}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", "the config file must hold a mapping", source=str(path))
    return data


def env_layer(environ: Mapping[str, str]) -> list[tuple[str, Any, str]]:
    """CAPRANK_SECTION__FIELD=value -> (section.field, value, 'env CAPRANK_...')."""
    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue  # every field is section.field: CAPRANK_CONFIG, secrets are not fields
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        out.append((key, _parse_scalar(environ[name]), f"env {name}"))
    return out


def resolve(
    config_file: str | Path | None = None,
    *,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    extra_yaml: str | None = None,
) -> ResolvedConfig:
    """Resolve the layered configuration.

    ``extra_yaml`` is a YAML mapping applied just above the file layer; pipeline
    components receive their run's overrides this way.
    """
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, Any, str]] = []
    file_path = config_file or environ.get(ENV_CONFIG_FILE) or None
    if file_path:
        src = f"file {file_path}"
        layers += [(k, v, src) for k, v in _flatten(CaprankConfig, _load_yaml_file(file_path), src)]
    if extra_yaml:
        try:
            data = yaml.safe_load(extra_yaml) or {}
        except yaml.YAMLError as exc:
            raise ConfigError("<overrides>", f"not valid YAML: {exc}") from exc
        layers += [(k, v, "pipeline overrides") for k, v in _flatten(CaprankConfig, data, "run")]
    layers += env_layer(environ)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "a --set flag must look like key=value")
        key, _, raw = item.partition("=")
        layers.append((key.strip(), _parse_scalar(raw), f"--set {key.strip()}"))

    tree: dict = {}
    sources: dict[str, str] = {}
    for key, value, src in layers:
        _check_key(key, src)
        _set_dotted(tree, key, value)
        sources[key] = src
    try:
        config = CaprankConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        top = ".".join(str(p) for p in err["loc"][:1])
        src = sources.get(key) or next(
            (s for k, s in sources.items() if k.startswith(top)), DEFAULT
        )
        raise ConfigError(key, err["msg"], allowed=describe_allowed(key), source=src) from exc
    return ResolvedConfig(config, sources)


def load_config(
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    extra_yaml: str | None = None,
) -> CaprankConfig:
    """The resolved config alone (most callers want only this)."""
    return resolve(config_file, overrides=overrides, extra_yaml=extra_yaml).config


def dump_yaml(config: CaprankConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def with_overrides(config: CaprankConfig, overrides: Mapping[str, Any]) -> CaprankConfig:
    """A copy of ``config`` with dotted keys set (``{"training.lr": 0.002}``), validated
    like any other layer: an unknown key or a bad value is a ConfigError naming it."""
    tree = config.model_dump(mode="json")
    for key, value in overrides.items():
        _check_key(key, "overrides")
        _set_dotted(tree, key, value)
    try:
        return CaprankConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        raise ConfigError(key, err["msg"], allowed=describe_allowed(key)) from exc
