"""Incremental update: warm-start from a bundle, learn what was logged since its cut-off.

A full retrain re-embeds the catalog and trains from scratch; an hourly update cannot.
``update_model`` instead

1. builds the catalog inputs through the base bundle (``Bundle.catalog_inputs``): known
   tools and capabilities keep the vectors the model was trained on, tools and
   capabilities added since get text-only vectors (no embed stage, no Node2Vec);
2. prepares the dataset as ``train`` does and warm-starts a model of the base
   architecture from the base weights (``warm_start``): every tensor is copied, and the
   per-item tables (tool embeddings, id channel rows, lexical rows) are copied row by row
   by tool id, capability id and term, so new items start neutral;
3. learns from the experiences logged after the base's ``data_cutoff`` (whole
   sessions), mixed with ``update.replay_ratio`` as many older experiences sampled by
   priority (|reward - value| + the ranking loss under the base model, PER's exponent)
   so the model does not forget: the id channel (one row and bias per capability) is
   refit with every other weight frozen (``refit_heads``: convex, solved by L-BFGS,
   pulled to the base rows), then, if ``update.steps`` > 0, the trainer runs that many
   steps on every weight;
4. applies the forgetting guard (``guard``): the old test metrics (the test labels of
   capabilities the base knew) of the updated model may not drop more than
   ``update.max_regression`` below the base's, else the update is rejected.

Unlike ``train``, the guard reads test labels: it is the update's own gate. The evaluate
stage still judges an accepted update against production as it judges any candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.errors import CaprankError, DataError
from caprank.files import atomic_write_json
from caprank.learning.experiences import LOGS, Experiences
from caprank.model.bundle import Bundle
from caprank.model.inputs import CatalogInputs, intent_batch, select_bags
from caprank.model.shgat import SHGAT
from caprank.training.data import Prepared, prepare
from caprank.training.trainer import (
    FitResult,
    TrainData,
    Trainer,
    evidence_free_share,
    validation_mrr,
)

Encoder = Callable[[list[str]], np.ndarray]
GUARD_METRICS = ("mrr", "hit@1", "hit@3", "hit@10", "ndcg@10")
REPORT_FILE = "update.json"
# L-BFGS curvature pairs kept by the refit: torch's default (100) costs a two-loop pass
# over up to 40 pairs per iteration for the same optimum (seed 1: loss 1.24672 with 10,
# 1.24665 with 100, the same MRR to 0.003; docs/online-learning.md)
REFIT_HISTORY = 10


class NothingToUpdate(CaprankError):
    """No experience was logged after the base model's data cut-off."""


def data_cutoff(ds: Dataset) -> datetime | None:
    """The newest interaction timestamp: what a model trained on ``ds`` has seen."""
    if ds.interactions.num_rows == 0:
        return None
    stamp = ds.interactions["timestamp"].cast(pa.int64()).to_numpy().max()
    return datetime.fromtimestamp(int(stamp) / 1e6, UTC)


def base_cutoff(base: Bundle, since: datetime | None) -> datetime:
    """``since`` if given, else the cut-off recorded in the base bundle."""
    if since is not None:
        return since if since.tzinfo else since.replace(tzinfo=UTC)
    recorded = base.meta.get("data_cutoff")
    if not recorded:
        raise DataError(
            "bundle.json",
            "the base bundle records no data_cutoff (trained before it was recorded); "
            "give the cut-off explicitly (--since)",
            field="data_cutoff",
        )
    return datetime.fromisoformat(recorded)


# ---------------------------------------------------------------------- warm start
def _rows(old: list, new: list) -> tuple[np.ndarray, np.ndarray]:
    """(new rows, old rows) of the items both lists hold."""
    pos = {k: i for i, k in enumerate(old)}
    pairs = [(i, pos[k]) for i, k in enumerate(new) if k in pos]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = zip(*pairs, strict=True)
    return np.asarray(a), np.asarray(b)


def warm_start(model: SHGAT, base: Bundle, prep: Prepared) -> dict:
    """Copy ``base``'s weights into ``model`` (sized for ``prep``); per-item tables by key.

    Returns counts of what was carried over and which tensors kept their fresh values."""
    new_state, old_state = model.state_dict(), base.model.state_dict()
    keyed = {
        "tool_emb.weight": (list(base.tool_ids), list(prep.inputs.tool_ids)),
        "id_emb": (list(base.id_capabilities), list(prep.id_capabilities)),
        "id_bias": (list(base.id_capabilities), list(prep.id_capabilities)),
        "q_lex.weight": (list(base.lexicon.vocab), list(prep.lexicon.vocab)),
        "id_lex.weight": (list(base.lexicon.vocab), list(prep.lexicon.vocab)),
    }
    fresh, carried = [], {}
    with torch.no_grad():
        for name, tensor in new_state.items():
            old = old_state.get(name)
            if name in keyed:
                dst, src = _rows(keyed[name][0], keyed[name][1])
                if old is not None and old.shape[1:] == tensor.shape[1:]:
                    tensor[torch.as_tensor(dst)] = old[torch.as_tensor(src)]
                    if name == "tool_emb.weight":  # the padding row (unknown tools)
                        tensor[-1] = old[-1]
                    carried[name] = len(dst)
                else:
                    fresh.append(name)
            elif old is not None and old.shape == tensor.shape:
                tensor.copy_(old)
            else:
                fresh.append(name)
    model.load_state_dict(new_state)
    return {"carried_rows": carried, "fresh": fresh}


def warm_model(base: Bundle, prep: Prepared) -> tuple[SHGAT, dict]:
    """A model of the base architecture sized for ``prep``'s catalog, warm-started."""
    dims = replace(
        base.model.dims,
        n_features=len(prep.scaler.columns),
        n_tools=len(prep.inputs.tool_ids),
        n_id_caps=len(prep.id_capabilities),
        vocab=len(prep.lexicon),
    )
    model = SHGAT(dims)
    return model, warm_start(model, base, prep)


# ---------------------------------------------------------------------- experiences
def log_times(events: pa.Table) -> np.ndarray:
    """Timestamps (us) of the events in ``from_interactions``' order (session, time):
    for experiences that do not carry their own ``time``."""
    sessions = np.asarray(events["session_id"].to_pylist(), dtype=object)
    stamps = events["timestamp"].cast(pa.int64()).to_numpy()
    return stamps[np.lexsort((np.arange(len(stamps)), stamps, sessions.astype(str)))]


def _groups(exp: Experiences, events: pa.Table, cutoff: datetime) -> tuple[np.ndarray, np.ndarray]:
    """(group of each experience, is it new): a group is a session (sessions are
    contiguous and end at ``session_end``; a label is a session of one); a session with
    any event after ``cutoff`` is new as a whole."""
    group = np.concatenate([[0], np.cumsum(exp.session_end[:-1])]).astype(np.int64)
    logs = np.flatnonzero(exp.source == LOGS)
    if logs.size == 0:
        return group, np.zeros(len(exp), dtype=bool)
    stamps = getattr(exp, "time", None)
    if stamps is not None:
        stamps = np.asarray(stamps)[logs]
    else:
        stamps = log_times(events)
        if len(stamps) != logs.size:
            raise DataError("interactions", "experiences do not match the logged events")
    after = logs[stamps > int(cutoff.timestamp() * 1e6)]
    return group, np.isin(group, np.unique(group[after]))


@torch.no_grad()
def priorities(model: SHGAT, data, rows: np.ndarray) -> np.ndarray:
    """|reward - value| + InfoNCE loss of positives under ``model``, per experience row."""
    exp, out = data.experiences, np.zeros(len(rows))
    model.eval()
    graph = data.graph
    _, caps = model.encode(graph)
    keys = model.keys(graph, caps)
    blocked = torch.as_tensor(~data.rankable)
    for a in range(0, len(rows), 2048):
        r = rows[a : a + 2048]
        batch = intent_batch(
            data.intent_dense[exp.intent[r]], select_bags(data.intent_bags, exp.intent[r])
        )
        cap = torch.as_tensor(exp.capability[r])
        value = model.value(model.intent_state(batch), caps[cap], graph.cap_feat[cap])
        err = (torch.as_tensor(exp.reward[r], dtype=torch.float32) - value).abs()
        scores = model.query(batch) @ keys.T
        mask = blocked.unsqueeze(0).expand(len(r), -1).clone()
        mask[torch.arange(len(r)), cap] = False
        ce = torch.nn.functional.cross_entropy(
            scores.masked_fill(mask, -1e9), cap, reduction="none"
        )
        out[a : a + len(r)] = (err + ce * torch.as_tensor(exp.positive[r] > 0)).numpy()
    return out


def replay_sample(
    group: np.ndarray,
    new: np.ndarray,
    priority: np.ndarray,
    ratio: float,
    alpha: float,
    eps: float,
    seed: int,
) -> np.ndarray:
    """Old rows in whole groups, drawn without replacement with P ~ (mean priority + eps)^alpha,
    until about ``ratio`` x the new rows (Efraimidis-Spirakis keys)."""
    old = np.flatnonzero(~new)
    want = round(float(ratio) * int(new.sum()))
    if want <= 0 or old.size == 0:
        return np.zeros(0, np.int64)
    gid, inv = np.unique(group[old], return_inverse=True)
    size = np.bincount(inv)
    weight = (np.bincount(inv, weights=priority[old]) / size + eps) ** alpha
    rng = np.random.default_rng(seed)
    keys = np.log(rng.random(len(gid))) / weight
    order = np.argsort(-keys, kind="stable")
    take = order[: int(np.searchsorted(np.cumsum(size[order]), want)) + 1]
    return old[np.isin(inv, take)]


def subset(exp: Experiences, rows: np.ndarray) -> Experiences:
    """The ``rows`` of every field (sessions stay contiguous and in time order)."""
    rows = np.sort(rows)
    return Experiences(**{f.name: getattr(exp, f.name)[rows] for f in fields(exp)})


# ---------------------------------------------------------------------- head refit
@dataclass
class Refit:
    """What ``refit_heads`` did: L-BFGS iterations, (intent, capability) pairs, the
    id-channel rows refit, and the regularized ranking loss before and after."""

    iterations: int = 0
    pairs: int = 0
    rows: int = 0
    loss_before: float = 0.0
    loss_after: float = 0.0


def refit_heads(
    model: SHGAT,
    data: TrainData,
    rows: np.ndarray,
    temperature: float,
    iterations: int,
    l2: float,
) -> Refit:
    """Refit the per-capability id channel (``id_emb``, ``id_bias``) on the experience
    ``rows`` with every other weight frozen, in place.

    The other channels then add a fixed offset to each score, so the trainer's weighted
    InfoNCE is convex in the id rows and L-BFGS solves it in a few dozen iterations,
    where SGD from a fresh Adam state moves every weight of a converged model at once.
    New capabilities' rows start at 0 and learn from their logged positives; known rows
    are pulled to their base values by ``l2`` (what they learned stays unless the new
    data says otherwise). A row's loss depends only on its (intent, capability) pair and
    every positive has the same negatives (the rankable capabilities), so the problem
    is aggregated to (unique intents x capabilities) whatever the number of rows."""
    exp, graph = data.experiences, data.graph
    rows = rows[exp.positive[rows] > 0]
    has_id = (graph.cap_id >= 0).numpy()
    if rows.size == 0 or iterations <= 0 or not has_id.any():
        return Refit()
    intents, inv = np.unique(exp.intent[rows], return_inverse=True)
    weight = np.zeros((len(intents), len(has_id)), np.float32)
    np.add.at(weight, (inv, exp.capability[rows]), exp.positive[rows])
    cols = torch.as_tensor(np.flatnonzero(has_id))
    id_rows = graph.cap_id[cols]
    no_id, end = model.split_points()
    model.eval()
    with torch.no_grad():
        keys = model.keys(graph)
        batch = intent_batch(data.intent_dense[intents], select_bags(data.intent_bags, intents))
        query = model.query(batch)
        offset = query[:, :no_id] @ keys[:, :no_id].T / temperature  # the frozen channels
        feats = query[:, no_id + 1 : end]  # [intent vector, lexical bag]: id_emb's input
        gate = model.gate(graph)[cols] / temperature
        # blocked columns (no positives) out of the normalizer once, not at every call:
        # every positive is rankable, so the masked scores are never a positive's
        offset = offset.masked_fill(torch.as_tensor(~data.rankable), -1e9)
        emb0, bias0 = model.id_emb[id_rows].clone(), model.id_bias[id_rows].clone()
    w = torch.as_tensor(weight)
    w_intent, total = w.sum(1), w.sum()
    pos_i, pos_c = torch.nonzero(w, as_tuple=True)  # the (intent, capability) pairs
    w_pos = w[pos_i, pos_c]
    emb, bias = emb0.clone().requires_grad_(True), bias0.clone().requires_grad_(True)

    def objective() -> torch.Tensor:
        score = offset.index_add(1, cols, gate * (bias + feats @ emb.T))
        lse = torch.logsumexp(score, dim=1)
        nll = ((w_intent * lse).sum() - (w_pos * score[pos_i, pos_c]).sum()) / total
        return nll + 0.5 * l2 * (((emb - emb0) ** 2).sum() + ((bias - bias0) ** 2).sum())

    opt = torch.optim.LBFGS(
        [emb, bias],
        lr=1.0,
        max_iter=iterations,
        history_size=REFIT_HISTORY,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(objective())
    opt.step(closure)
    with torch.no_grad():
        after = float(objective())
        model.id_emb[id_rows] = emb.detach()
        model.id_bias[id_rows] = bias.detach()
    model.train()
    return Refit(
        iterations=int(opt.state_dict()["state"].get(0, {}).get("n_iter", 0)),
        pairs=int((weight > 0).sum()),
        rows=len(cols),
        loss_before=round(before, 6),
        loss_after=round(after, 6),
    )


# ---------------------------------------------------------------------- guard
def old_test_metrics(
    ds: Dataset,
    cfg: CaprankConfig,
    bundles: dict[str, Bundle],
    inputs: CatalogInputs,
    known: set[str],
    encode: Encoder,
) -> tuple[dict[str, dict[str, float]], int]:
    """Each bundle's GUARD_METRICS on the test labels of capabilities in ``known``, ranking
    the whole catalog of ``inputs``; ({}, 0) without such labels."""
    from caprank.evaluation.metrics import ranking_metrics

    lab = ds.labels
    split = np.asarray(lab["split"].to_pylist(), dtype=object)
    cap_pos = {c: i for i, c in enumerate(inputs.capability_ids)}
    rel: dict[str, dict[int, float]] = {}
    for q, c, g, s in zip(
        lab["intent_id"].to_pylist(),
        lab["capability_id"].to_pylist(),
        lab["grade"].to_pylist(),
        split,
        strict=True,
    ):
        if s == "test" and c in known and c in cap_pos:
            rel.setdefault(q, {})[cap_pos[c]] = float(g)
    if not rel:
        return {}, 0
    text = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    ids = sorted(rel)
    texts = [text[q] for q in ids]
    dense = encode(texts).astype(np.float32)
    ks = sorted(set(cfg.evaluation.cutoffs) | {1, 3, 10})
    out = {}
    for name, bundle in bundles.items():
        scores = bundle.index(inputs).scores(dense, texts)
        m = ranking_metrics(scores, [rel[q] for q in ids], ks).means()
        out[name] = {k: round(float(m[k]), 6) for k in GUARD_METRICS}
    return out, len(ids)


def guard(
    metrics: dict[str, dict[str, float]], max_regression: float
) -> tuple[bool, dict[str, float]]:
    """(accepted, drop per metric): rejected when any metric drops by more than the limit."""
    if not metrics:
        return True, {}
    drop = {k: round(metrics["base"][k] - metrics["updated"][k], 6) for k in GUARD_METRICS}
    return all(d <= max_regression for d in drop.values()), drop


# ---------------------------------------------------------------------- the update
@dataclass
class UpdateReport:
    accepted: bool
    base_version: str
    cutoff: str
    new_cutoff: str | None
    new_experiences: int
    replayed: int
    new_capabilities: list[str]
    new_tools: list[str]
    warm: dict
    guard_intents: int
    old_test: dict[str, dict[str, float]]
    drop: dict[str, float]
    max_regression: float
    seconds: float = 0.0
    fit: dict = field(default_factory=dict)
    run_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        verdict = "accepted" if self.accepted else "REJECTED by the forgetting guard"
        lines = [
            "## Update\n",
            f"warm start from `{self.base_version}` (data cut-off {self.cutoff}): "
            f"{self.new_experiences:,} new experiences + {self.replayed:,} replayed, "
            f"id-channel refit in {self.fit.get('refit', {}).get('iterations', 0)} L-BFGS "
            f"iterations, then {self.fit.get('steps', 0)} SGD steps, {self.seconds:.1f} s; "
            f"{verdict}.  ",
            f"new capabilities: {len(self.new_capabilities)}, new tools: {len(self.new_tools)}.  ",
        ]
        if self.old_test:
            lines.append(
                f"old test metrics on {self.guard_intents} intents (max regression "
                f"{self.max_regression}):\n\n| model | " + " | ".join(GUARD_METRICS) + " |"
            )
            lines.append("| --- |" + " ---: |" * len(GUARD_METRICS))
            for name, m in self.old_test.items():
                lines.append(
                    f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in GUARD_METRICS) + " |"
                )
        else:
            lines.append("no test labels of known capabilities: the guard had nothing to check.")
        return "\n".join(lines) + "\n"


def catalog_through(base: Bundle, ds: Dataset, encode: Encoder) -> CatalogInputs:
    """``ds``'s catalog as the base bundle sees it (stored vectors; text for new items)."""
    from caprank.embeddings.catalog_text import capability_texts, tool_texts

    return base.catalog_inputs(
        ds.capabilities["capability_id"].to_pylist(),
        [t or [] for t in ds.capabilities["tool_ids"].to_pylist()],
        capability_texts(ds.capabilities, ds.tools),
        dict(zip(ds.tools["tool_id"].to_pylist(), tool_texts(ds.tools), strict=True)),
        None,
        encode,
    )


def update_model(
    base: Bundle,
    ds: Dataset,
    cfg: CaprankConfig,
    encode: Encoder,
    cutoff: datetime,
    features: pa.Table | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Bundle, UpdateReport]:
    """The warm-started, updated bundle and its report (see the module doc); ``on_log``
    gets the trainer's metrics (an MLflow run's ``Tracker.log_metrics``)."""
    from caprank.training.stage import _make_bundle

    start = time.perf_counter()
    u = cfg.update
    inputs = catalog_through(base, ds, encode)
    prep = prepare(
        ds,
        cfg,
        inputs.tool_ids,
        inputs.tool_vectors,
        inputs.capability_ids,
        inputs.capability_text,
        features,
        encode,
        # keep the base's vocabulary: the warm model then starts as the very function the
        # base computes (a refit lexicon would move every idf); a full retrain refreshes it
        lexicon=base.lexicon,
    )
    torch.manual_seed(cfg.training.seed)  # fresh rows (new tools) the same in any process
    model, warm = warm_model(base, prep)
    exp = prep.data.experiences
    group, new = _groups(exp, ds.interactions, cutoff)
    if not new.any():
        raise NothingToUpdate(
            f"no interaction logged after the base model's cut-off {cutoff.isoformat()}"
        )
    old_rows = np.flatnonzero(~new)
    prio = np.zeros(len(exp))
    if old_rows.size and u.replay_ratio > 0:
        prio[old_rows] = priorities(model, prep.data, old_rows)
    per = cfg.training.per
    replayed = replay_sample(
        group, new, prio, u.replay_ratio, per.alpha, per.eps, cfg.training.seed
    )
    rows = np.concatenate([np.flatnonzero(new), replayed])
    data = replace(prep.data, experiences=subset(exp, rows))
    tc = cfg.training.model_copy(
        update={
            "max_steps": u.steps,
            "lr": u.lr,
            "t_max": u.steps,
            "eval_every": u.eval_every,
        }
    )
    refit = refit_heads(
        model, prep.data, rows, cfg.training.temperature, u.refit_iterations, u.refit_l2
    )
    if u.steps > 0:
        torch.manual_seed(tc.seed)
        fit: FitResult = Trainer(model, data, tc, on_log=on_log, linear_start=False).fit()
    else:  # the refit alone: report its validation MRR as the trainer would
        w = tc.without_evidence_weight(evidence_free_share(data.graph))
        mrr = validation_mrr(model, data, without_evidence=w)
        history = [{"step": 0, "valid_mrr": mrr}]
        fit = FitResult(0, 0, mrr, 0.0, 0.0, False, None, history, valid_without_evidence=w)
        if on_log is not None:
            on_log(0, {"valid_mrr": mrr})
    bundle = _make_bundle(model.cpu().eval(), prep, cfg, base.text_model, fit)
    now = datetime.now(UTC)
    bundle.meta["version"] = f"updated-{now.strftime('%Y%m%dT%H%M%SZ')}"
    new_cut = data_cutoff(ds)
    bundle.meta["data_cutoff"] = new_cut.isoformat() if new_cut else None
    bundle.meta["base_version"] = str(base.meta.get("version", ""))

    known = set(base.capability_ids)
    old_test, n_guard = old_test_metrics(
        ds, cfg, {"base": base, "updated": bundle}, inputs, known, encode
    )
    accepted, drop = guard(old_test, u.max_regression)
    report = UpdateReport(
        accepted=accepted,
        base_version=str(base.meta.get("version", "")),
        cutoff=cutoff.isoformat(),
        new_cutoff=bundle.meta["data_cutoff"],
        new_experiences=int(new.sum()),
        replayed=len(replayed),
        new_capabilities=[c for c in inputs.capability_ids if c not in known],
        new_tools=[t for t in inputs.tool_ids if t not in set(base.tool_ids)],
        warm=warm,
        guard_intents=n_guard,
        old_test=old_test,
        drop=drop,
        max_regression=u.max_regression,
        seconds=round(time.perf_counter() - start, 3),
        fit={
            "steps": fit.steps,
            "best_step": fit.best_step,
            "best_valid_mrr": fit.best_valid_mrr,
            "refit": asdict(refit),
        },
    )
    bundle.meta["update"] = {k: v for k, v in report.to_dict().items() if k not in ("warm",)}
    return bundle, report


def find_bundle(path: str | Path) -> Path:
    """The directory holding ``bundle.json`` at or under ``path`` (a registry download
    nests it)."""
    from caprank.model.bundle import BUNDLE_FILE

    path = Path(path)
    if (path / BUNDLE_FILE).is_file():
        return path
    found = sorted(path.rglob(BUNDLE_FILE))
    if not found:
        raise DataError(str(path), "no bundle.json at or under this path")
    return found[0].parent


def resolve_base(cfg: CaprankConfig, ref: str, work_dir: Path) -> Path:
    """A bundle directory, or a registry version/alias (``production``) downloaded."""
    if Path(ref).exists():
        return find_bundle(ref)
    from caprank.registry import download_version, resolve_version

    version = resolve_version(cfg, ref)
    return find_bundle(
        download_version(cfg, version.version, work_dir / f"base-v{version.version}")
    )


def update(
    ds: Dataset,
    cfg: CaprankConfig,
    base: str | Path,
    out_dir: str | Path,
    features_path: str | Path | None = None,
    *,
    since: datetime | None = None,
    track: bool = False,
) -> UpdateReport:
    """The update stage: ``<out_dir>/bundle`` when accepted, ``<out_dir>/update.json`` always.

    ``track``: record the update as an MLflow run (``report.run_id``) that logs the
    accepted bundle as its model, as ``train`` does, so the evaluate stage can register
    it; a rejected update is recorded too, without a model."""
    from caprank.embeddings import cache
    from caprank.model.bundle import load_bundle
    from caprank.training.stage import BUNDLE_DIR, _save, read_features

    out_dir = Path(out_dir)
    base_bundle = load_bundle(resolve_base(cfg, str(base), out_dir))
    encode = cache.cached_encoder(cfg, base_bundle.text_model)

    features = read_features(features_path)
    cutoff = base_cutoff(base_bundle, since)
    with _tracker(cfg, track) as tracker:
        on_log = None if tracker is None else tracker.log_metrics
        bundle, report = update_model(base_bundle, ds, cfg, encode, cutoff, features, on_log)
        bundle_dir = None
        if report.accepted:
            bundle_dir = _save(bundle, ds, out_dir, features)
        elif (out_dir / BUNDLE_DIR).exists():
            import shutil

            shutil.rmtree(out_dir / BUNDLE_DIR)
        if tracker is not None:
            _track(tracker, cfg, ds, report, bundle_dir)
    atomic_write_json(out_dir / REPORT_FILE, report.to_dict())
    return report


def _tracker(cfg: CaprankConfig, track: bool):
    """An MLflow run (``caprank.registry.Tracker``, ended FAILED on an exception), or none."""
    import contextlib

    if not track:
        return contextlib.nullcontext()
    from caprank.registry import Tracker

    return Tracker(cfg, run_name=f"update-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")


def _track(tracker, cfg: CaprankConfig, ds: Dataset, report: UpdateReport, bundle_dir) -> None:
    """Config, lineage tags, the update's figures and guard drops, its report, the model."""
    from caprank import __version__
    from caprank.data.dataset import dataset_hash
    from caprank.registry import git_revision

    tracker.log_config(cfg)
    tracker.set_tags(
        {
            "run_kind": "update",
            "base_version": report.base_version,
            "data_cutoff": report.cutoff,
            "new_data_cutoff": report.new_cutoff or "",
            "accepted": str(report.accepted).lower(),
            "git_revision": git_revision(),
            "dataset_hash": dataset_hash(ds.root) if ds.root is not None else "in-memory",
            "caprank_version": __version__,
        }
    )
    steps = int(report.fit.get("steps", 0))
    tracker.log_metrics(
        steps,
        {
            "best_valid_mrr": report.fit.get("best_valid_mrr", 0.0),
            "update_seconds": report.seconds,
            "new_experiences": report.new_experiences,
            "replayed": report.replayed,
            "new_capabilities": len(report.new_capabilities),
            "new_tools": len(report.new_tools),
            "accepted": float(report.accepted),
            "refit_iterations": report.fit.get("refit", {}).get("iterations", 0),
        },
    )
    if report.drop:
        tracker.log_metrics(steps, report.drop, prefix="guard.drop.")
    report.run_id = tracker.run_id
    tracker.log_dict(report.to_dict(), REPORT_FILE)
    if bundle_dir is not None:
        tracker.log_model(bundle_dir)


def dataset_as_of(ds: Dataset, cutoff: datetime) -> Dataset:
    """``ds`` as it stood at ``cutoff``: capabilities created by then, the tools they use,
    their labels, and the interactions logged by then (what a base model had seen)."""
    import pyarrow.compute as pc

    cut = pa.scalar(cutoff, type=ds.capabilities["created_at"].type)
    created = ds.capabilities["created_at"]
    caps = ds.capabilities.filter(pc.or_kleene(pc.is_null(created), pc.less_equal(created, cut)))
    used = {t for tools in caps["tool_ids"].to_pylist() for t in tools or []}
    tools = ds.tools.filter(pa.array([t in used for t in ds.tools["tool_id"].to_pylist()]))
    cap_set = set(caps["capability_id"].to_pylist())
    labels = ds.labels.filter(
        pa.array([c in cap_set for c in ds.labels["capability_id"].to_pylist()])
    )
    ev = ds.interactions
    ev = ev.filter(pc.less_equal(ev["timestamp"], pa.scalar(cutoff, type=ev["timestamp"].type)))
    ev = ev.filter(pa.array([c in cap_set for c in ev["selected_capability"].to_pylist()]))
    return Dataset(tools, caps, ds.intents, labels, ev, dict(ds.manifest), None)
