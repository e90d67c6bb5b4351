"""The training loop (seed 002 §2.4): PER batches, InfoNCE + IS-weighted TD value loss.

Per step: sample a stratified batch from the replay buffer with importance weights; run
message passing over the catalog; rank every allowed capability for each positive
experience (InfoNCE with temperature, on the full score and on the id-free part so the
content channel learns to rank on its own); regress the value head on TD(lambda)
targets; update priorities from |TD error|. Adam + cosine annealing; validation MRR
every ``eval_every`` steps with early stopping, the prior alone (learned residual off)
validated first as the state to beat (``on_validate`` hears every later validation:
hyperparameter search reports and prunes there); a checkpoint every ``checkpoint_every``
steps holds everything (weights, optimizer, scheduler, replay, RNGs, history), so a
killed run resumes and ends exactly where an uninterrupted one would on CPU.

Imports only torch, torch-geometric (through the model), numpy (validation MRR comes
from ``caprank.evaluation.metrics``, which needs nothing more): it runs in the slim GPU
image.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from caprank.config import TrainingConfig
from caprank.evaluation.metrics import mean_reciprocal_rank
from caprank.files import atomic_path
from caprank.learning.experiences import LOGS, Experiences
from caprank.learning.per import PrioritizedReplay
from caprank.model.inputs import intent_batch, select_bags
from caprank.model.shgat import SHGAT, Graph
from caprank.training.linear_start import FittedStart, linear_start, start_ranks, write_start

CHECKPOINT_FILE = "checkpoint.pt"
LogFn = Callable[[int, dict[str, float]], None]
ValidateFn = Callable[[int, float], None]  # (step, validation MRR); may raise to stop


@dataclass
class TrainData:
    graph: Graph
    intent_dense: np.ndarray  # (I, d) the intent table's unit text vectors
    intent_bags: tuple[np.ndarray, np.ndarray, np.ndarray]  # lexical bags of the table
    experiences: Experiences
    rankable: np.ndarray  # (C,) bool: may appear as an InfoNCE negative
    valid_intents: np.ndarray  # (V,) rows of the intent table
    valid_relevant: list[np.ndarray]  # relevant capability rows per validation intent


@dataclass
class FitResult:
    steps: int
    best_step: int
    best_valid_mrr: float
    seconds: float
    experiences_per_s: float
    stopped_early: bool
    resumed_from: int | None
    history: list[dict] = field(default_factory=list)
    linear_start: dict | None = None  # what the linear start did (None: not run)
    valid_without_evidence: float = 0.0  # the validation mixture's weight it ran with


def weighted_infonce(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, blocked: torch.Tensor
) -> torch.Tensor:
    """Self-normalized weighted InfoNCE: row i ranks ``target[i]`` among the unblocked
    columns of ``logits[i]``, weighted by ``weight[i]`` (replay importance x positive
    weight, which carries the logs' clipped inverse propensity)."""
    ce = F.cross_entropy(logits.masked_fill(blocked, -1e9), target, reduction="none")
    return (ce * weight).sum() / weight.sum().clamp(min=1e-8)


@torch.no_grad()
def validation_mrr(
    model: SHGAT, data: TrainData, graph: Graph | None = None, without_evidence: float = 0.0
) -> float:
    """MRR of ``model`` (left in eval mode) on the validation intents; ``graph``: the
    catalog already on the model's device (default ``data.graph``).

    ``without_evidence`` (the trainer passes ``validation_without_evidence``) mixes in,
    with that weight, the MRR when each intent's right answers score by their prior alone, as
    capabilities without evidence do: the validation intents' answers all have evidence,
    so without it the best state is chosen for them only, and the cold start that
    evidence dropout trains for goes unseen (docs/training.md, "Validation sees the cold
    start")."""
    if len(data.valid_intents) == 0:
        return 0.0
    graph = data.graph if graph is None else graph
    device = graph.cap_id.device
    model.eval()
    _, caps = model.encode(graph)
    keys = model.keys(graph, caps)
    p = model.prior_columns()
    scores, priors = [], []
    for a in range(0, len(data.valid_intents), 2048):
        rows = data.valid_intents[a : a + 2048]
        batch = intent_batch(data.intent_dense[rows], select_bags(data.intent_bags, rows))
        q = model.query(batch.to(device))
        scores.append((q @ keys.T).float().cpu().numpy())
        if without_evidence > 0:
            priors.append((q[:, :p] @ keys[:, :p].T).float().cpu().numpy())
    full = np.concatenate(scores)
    mrr = mean_reciprocal_rank(full, data.valid_relevant)
    if without_evidence <= 0:
        return mrr
    prior = np.concatenate(priors)
    for i, rel in enumerate(data.valid_relevant):
        full[i, rel] = prior[i, rel]
    masked = mean_reciprocal_rank(full, data.valid_relevant)
    return (1.0 - without_evidence) * mrr + without_evidence * masked


def evidence_free_share(graph: Graph) -> float:
    """The share of the catalog's capabilities without training evidence (no id row):
    ``validation_without_evidence: auto`` weighs the validation mixture by it."""
    return float((graph.cap_id < 0).float().mean()) if graph.cap_id.numel() else 0.0


def resolve_device(preference: str) -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    return torch.device(preference)


class Trainer:
    def __init__(
        self,
        model: SHGAT,
        data: TrainData,
        cfg: TrainingConfig,
        checkpoint_dir: str | Path | None = None,
        on_log: LogFn | None = None,
        on_validate: ValidateFn | None = None,
        linear_start: bool = True,
    ):
        """``linear_start``: whether a fresh fit may start the id channel at the
        logistic-regression optimum (``cfg.linear_start`` decides; an update of a trained
        model passes False: its id channel is already trained)."""
        self.cfg = cfg
        self.linear_start = linear_start and cfg.linear_start
        self.linear_result: dict | None = None
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.data = data
        self.graph = data.graph.to(self.device)
        self.without_evidence = cfg.without_evidence_weight(evidence_free_share(data.graph))
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.on_log = on_log
        self.on_validate = on_validate  # hyperparameter search reports and prunes here
        self.opt = torch.optim.Adam(
            model.parameters(),
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            weight_decay=cfg.weight_decay,
            foreach=True,
        )
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.opt, T_max=cfg.t_max, eta_min=cfg.eta_min
        )
        n = len(data.experiences)
        if n == 0:
            raise ValueError("no experiences to train on")
        cap = min(cfg.per.capacity, n)
        self.replay = PrioritizedReplay(cfg.per, capacity=cap)
        self.slot_exp = data.experiences.most_recent(cap)  # by time: the newest fit
        self.replay.add(cap)
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.targets = data.experiences.reward.astype(np.float32)
        self.autocast = self.device.type == "cuda"
        self.step = 0
        self.best = (-1.0, 0)
        self.best_state: dict | None = None
        self.bad_evals = 0
        self.history: list[dict] = []
        rankable = torch.as_tensor(data.rankable, dtype=torch.bool, device=self.device)
        self.blocked = ~rankable

    # ------------------------------------------------------------------ helpers
    def _intents(self, rows: np.ndarray):
        d = self.data
        return intent_batch(d.intent_dense[rows], select_bags(d.intent_bags, rows)).to(self.device)

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        self.history.append({"step": step, **metrics})
        if self.on_log is not None:
            self.on_log(step, metrics)

    @torch.no_grad()
    def refresh_targets(self) -> None:
        """TD(lambda) targets of log experiences from the current value estimates."""
        exp = self.data.experiences
        logs = np.flatnonzero((exp.source == LOGS) & ~exp.session_end)
        if logs.size == 0:
            return
        self.model.eval()
        _, caps = self.model.encode(self.graph)
        nxt = logs + 1
        next_values = np.zeros(len(exp), dtype=np.float64)
        for a in range(0, len(nxt), 4096):
            rows = nxt[a : a + 4096]
            state = self.model.intent_state(self._intents(exp.intent[rows]))
            cap_rows = torch.as_tensor(exp.capability[rows], device=self.device)
            v = self.model.value(state, caps[cap_rows], self.graph.cap_feat[cap_rows])
            next_values[logs[a : a + 4096]] = v.float().cpu().numpy()
        self.model.train()
        self.targets = exp.td_targets(next_values, self.cfg.td).astype(np.float32)

    def validate(self) -> float:
        mrr = validation_mrr(self.model, self.data, self.graph, self.without_evidence)
        self.model.train()
        return mrr

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        cfg, exp = self.cfg, self.data.experiences
        slots, weights = self.replay.sample(cfg.batch_size, self.rng)
        rows = self.slot_exp[slots]
        w = torch.as_tensor(weights, device=self.device)
        cap_idx = torch.as_tensor(exp.capability[rows], device=self.device)
        pos_w = torch.as_tensor(exp.positive[rows], dtype=torch.float32, device=self.device)
        target = torch.as_tensor(self.targets[rows], device=self.device)
        batch = self._intents(exp.intent[rows])
        n_caps = self.graph.cap_id.shape[0]
        id_mask = lex_keep = gate_mask = None
        if cfg.id_dropout > 0:
            id_mask = torch.rand(n_caps, device=self.device) >= cfg.id_dropout
        if cfg.evidence_dropout > 0:  # rows whose answer now has no evidence teach the
            # residuals of the others not to lift them over it (what cold start needs)
            gate_mask = torch.rand(n_caps, device=self.device) >= cfg.evidence_dropout
        if cfg.lexical_dropout > 0:
            lex_keep = torch.rand(len(rows), device=self.device) >= cfg.lexical_dropout

        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            _, caps = self.model.encode(self.graph)
            keys = self.model.keys(self.graph, caps, id_mask, gate_mask)
            query = self.model.query(batch, lex_keep)
            no_id, _ = self.model.split_points()
            full = (query @ keys.T).float() / cfg.temperature
            content = (query[:, :no_id] @ keys[:, :no_id].T).float() / cfg.temperature
            state = self.model.intent_state(batch)
            cap_repr = caps[cap_idx]
            if cfg.value_detach:
                state, cap_repr = state.detach(), cap_repr.detach()
            value = self.model.value(state, cap_repr, self.graph.cap_feat[cap_idx]).float()

        blocked = self.blocked.unsqueeze(0).expand(len(rows), -1).clone()
        blocked[torch.arange(len(rows), device=self.device), cap_idx] = False
        rank_w = w * pos_w
        rank_loss = weighted_infonce(full, cap_idx, rank_w, blocked)
        content_loss = weighted_infonce(content, cap_idx, rank_w, blocked)
        td_error = target - value
        value_loss = (w * td_error.pow(2)).mean()
        loss = (
            rank_loss + cfg.content_loss_weight * content_loss + cfg.value_loss_weight * value_loss
        )

        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.replay.update(slots, td_error.detach().float().cpu().numpy())
        return {
            "loss": float(loss.detach()),
            "rank_loss": float(rank_loss.detach()),
            "content_loss": float(content_loss.detach()),
            "value_loss": float(value_loss.detach()),
            "lr": float(self.sched.get_last_lr()[0]),
            "beta": float(self.replay.beta),
        }

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "replay": self.replay.state_dict(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "targets": self.targets,
            "best": self.best,
            "best_state": self.best_state,
            "bad_evals": self.bad_evals,
            "history": self.history,
        }

    def save_checkpoint(self) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        path = self.checkpoint_dir / CHECKPOINT_FILE
        with atomic_path(path) as tmp:
            torch.save(self._state(), tmp)
        return path

    def load_checkpoint(self) -> int | None:
        if self.checkpoint_dir is None or not (self.checkpoint_dir / CHECKPOINT_FILE).is_file():
            return None
        state = torch.load(
            self.checkpoint_dir / CHECKPOINT_FILE, map_location=self.device, weights_only=False
        )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.replay.load_state_dict(state["replay"])
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.targets = state["targets"]
        self.best = tuple(state["best"])
        self.best_state = state["best_state"]
        self.bad_evals = state["bad_evals"]
        self.history = state["history"]
        self.step = state["step"]
        return self.step

    # ------------------------------------------------------------------ loop
    def fit(self) -> FitResult:
        cfg = self.cfg
        resumed = self.load_checkpoint()
        if resumed is None:
            fresh = fitted = None
            if self.linear_start:
                d = self.data
                fresh = copy.deepcopy(self.model.state_dict())
                started = linear_start(
                    self.model, self.graph, d.intent_dense, d.intent_bags, d.experiences, cfg
                )
                self.linear_result, fitted = started.to_json(), started.fitted
            self._evaluate_prior(fresh, fitted)
            self.refresh_targets()
        start = time.perf_counter()
        first = self.step
        stopped = False
        while self.step < cfg.max_steps:
            metrics = self.train_step()
            self.step += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                self._log(self.step, metrics)
            if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                stopped = self._evaluate()
            if self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if stopped:
                break
        seconds = time.perf_counter() - start
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.save_checkpoint()
        done = self.step - first
        return FitResult(
            steps=self.step,
            best_step=self.best[1],
            best_valid_mrr=self.best[0],
            seconds=seconds,
            experiences_per_s=done * cfg.batch_size / seconds if seconds > 0 else 0.0,
            stopped_early=stopped,
            resumed_from=resumed,
            history=list(self.history),
            linear_start=self.linear_result,
            valid_without_evidence=self.without_evidence,
        )

    def _evaluate_prior(self, fresh: dict | None = None, fitted: FittedStart | None = None) -> None:
        """Step 0: the prior alone (residual off) is the first candidate for the best
        state, so a run whose training never beats it on validation keeps the prior.
        After a linear start the started state is validated next, its lexical part at
        each rank of ``start_ranks`` (the best is kept): SGD goes on from it only when it
        beats the prior, else from ``fresh`` (the weights before the start), as without
        one (logs of a biased policy can fit a start worse than the prior)."""
        if len(self.data.valid_intents) == 0:
            return
        self.model.residual_on.fill_(0.0)
        mrr = self.validate()
        self._log(0, {"valid_mrr": mrr, "prior": 1.0})
        self.best = (mrr, 0)
        self.best_state = copy.deepcopy(self.model.state_dict())
        self.model.residual_on.fill_(1.0)
        if self.linear_result is not None and not self.linear_result["skipped"]:
            mrr = self._choose_start_rank(fitted)
            kept = mrr > self.best[0]
            self.linear_result["kept"] = kept
            if kept:
                self.best = (mrr, 0)
                self.best_state = copy.deepcopy(self.model.state_dict())
            elif fresh is not None:
                self.model.load_state_dict(fresh)

    def _choose_start_rank(self, fitted: FittedStart | None) -> float:
        """Validate the started state at each lexical rank of ``start_ranks`` (the rank
        the start wrote first) and leave the best written; its validation figure."""
        written = self.linear_result["rank"]
        ranks = [written]
        if fitted is not None:
            ranks += [
                r
                for r in start_ranks(self.model.dims.lexical_dim, self.cfg.linear_start_min_rank)
                if r < written
            ]
        tried: dict[int, float] = {}
        for r in ranks:
            if r != written:
                written = write_start(self.model, self.graph, fitted, r)
            tried[r] = self.validate()
            self._log(0, {"valid_mrr": tried[r], "linear_start": 1.0, "rank": float(r)})
        best = max(tried, key=lambda r: (tried[r], r))  # ties: the higher rank
        if best != written:
            write_start(self.model, self.graph, fitted, best)
        self.linear_result["rank"] = best
        self.linear_result["rank_valid_mrr"] = {str(r): round(v, 4) for r, v in tried.items()}
        return tried[best]

    def _evaluate(self) -> bool:
        mrr = self.validate()
        self._log(self.step, {"valid_mrr": mrr})
        if mrr > self.best[0]:
            self.best = (mrr, self.step)
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        if self.on_validate is not None:
            self.on_validate(self.step, mrr)
        self.refresh_targets()
        return self.bad_evals >= self.cfg.patience
