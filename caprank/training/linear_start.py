"""Start the id channel at a convex optimum: a multinomial logistic regression.

The id channel is a per-capability linear model over [intent vector, lexical bag], the
model family of the logistic-regression baseline; trained only by a few hundred noisy SGD
steps through a low-rank lexical projection it ended below that baseline on ToolLens
warm (docs/training.md, "The linear start"). So before SGD the linear model is fit to
convergence by full-batch L-BFGS on the positive experiences (with their weights), as a
residual over what the untrained model scores without it, and written into the channel:
the dense part as it is, the lexical part (vocabulary x capabilities, full rank)
factorized by SVD into the channel's lexical projection and capability embeddings (exact
when ``lexical_dim`` covers the capabilities). The fixed cosine prior is left out of the
fit and cancelled in the dense part of each capability's id row: fit over it, a linear
model of this size cannot outweigh it (validation MRR 0.86 against 0.96 on ToolLens
warm). The untrained content channel is silenced first (``SILENT_LOG_SCALE``): its
random projections would be noise the fit works around. The trainer validates the
started state beside the prior; SGD goes on from it and the best of them on validation
is kept.

Imports only torch and numpy: it runs in the slim GPU image.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from caprank.config import TrainingConfig
from caprank.model.inputs import intent_batch, select_bags
from caprank.model.shgat import SHGAT, Graph


@dataclass(frozen=True)
class FittedStart:
    """The fitted logistic regression, kept so that it can be written into the channel
    again at another lexical rank (``write_start``)."""

    id_rows: torch.Tensor
    w_dense: torch.Tensor
    w_lex: torch.Tensor
    bias: torch.Tensor
    lex_before: torch.Tensor  # the lexical projection before the start
    temperature: float

    @functools.cached_property
    def lexical_svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``w_lex``'s thin SVD, computed once for every rank it is written at."""
        return torch.linalg.svd(self.w_lex, full_matrices=False)


@dataclass(frozen=True)
class LinearStart:
    """What the fit did: ``skipped`` names why it did not run (empty when it ran)."""

    pairs: int
    capabilities: int
    iterations: int
    cross_entropy: float  # the fitted model's weighted cross-entropy (no L2, no dropout)
    rank: int
    seconds: float
    skipped: str = ""
    fitted: FittedStart | None = None  # None when skipped

    def to_json(self) -> dict:
        return {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in vars(self).items()
            if k != "fitted"
        }


def start_ranks(lexical_dim: int, min_rank: int) -> list[int]:
    """The lexical ranks a start is validated at: ``lexical_dim``, then halved while at
    least ``min_rank`` (a lower rank regularizes the lexical part: the embedded default
    validates its start better at 128 than at 512, ToolLens warm at 512)."""
    ranks = [lexical_dim]
    while ranks[-1] // 2 >= max(1, min_rank):
        ranks.append(ranks[-1] // 2)
    return ranks


# the content channel's scale after a start (10 at initialization): its random
# projections of the text are noise the fit would otherwise work around (ToolLens warm:
# test MRR 0.951 fit over them, 0.960 with them silenced, lexical_dim 512 and no
# evidence dropout; docs/training.md)
SILENT_LOG_SCALE = math.log(1e-3)


def _skip(why: str) -> LinearStart:
    return LinearStart(0, 0, 0, float("nan"), 0, 0.0, skipped=why)


def _sparse_bags(bags, rows: np.ndarray, vocab: int, device) -> torch.Tensor:
    """The lexical bags of ``rows`` as a (N, vocab) sparse CSR matrix."""
    idx, off, w = select_bags(bags, rows)
    crow = np.append(off, len(idx)).astype(np.int64)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": what we use works
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(idx),
            torch.from_numpy(w),
            size=(len(rows), vocab),
            device=device,
        )


def linear_start(
    model: SHGAT,
    graph: Graph,
    intent_dense: np.ndarray,
    intent_bags,
    experiences,
    tc: TrainingConfig,
) -> LinearStart:
    """Fit the id channel of ``model`` (in place) to the weighted logistic-regression
    optimum over its positive experiences; see the module doc. Skipped, with the reason,
    when there is nothing to fit or the problem exceeds ``linear_start_max_cells``."""
    start = time.perf_counter()
    d = model.dims
    pos = np.flatnonzero(experiences.positive > 0)
    n_id = d.n_id_caps
    if pos.size == 0 or n_id < 2:
        return _skip("fewer than two capabilities with positives")
    cells = max(len(pos), d.vocab) * n_id
    if cells > tc.linear_start_max_cells:
        return _skip(f"{cells:,} cells over linear_start_max_cells {tc.linear_start_max_cells:,}")
    device = graph.cap_id.device
    intents = experiences.intent[pos]
    caps = torch.as_tensor(experiences.capability[pos], device=device)
    target = graph.cap_id[caps]  # positives always have an id row
    weight = torch.as_tensor(experiences.positive[pos], dtype=torch.float32, device=device)
    id_rows = torch.argsort(torch.where(graph.cap_id >= 0, graph.cap_id, n_id + 1))[:n_id]
    batch = intent_batch(intent_dense[intents], select_bags(intent_bags, intents)).to(device)
    no_id, _ = model.split_points()
    p = model.prior_columns()
    with torch.no_grad():  # the untrained content channel is noise to the fit: silence it
        model.log_scale.fill_(SILENT_LOG_SCALE)
    model.eval()
    with torch.no_grad():  # what the untrained residual scores without its id channel:
        # the offset the fit is over (the prior is left out: ``write_start`` cancels it)
        keys = model.keys(graph)[id_rows, p:no_id]
        offset = (model.query(batch)[:, p:no_id] @ keys.T) / tc.temperature
    x = batch.dense
    lex = _sparse_bags(intent_bags, intents, max(1, d.vocab), device)
    w_dense = torch.zeros(n_id, d.text_dim, device=device, requires_grad=True)
    w_lex = torch.zeros(max(1, d.vocab), n_id, device=device, requires_grad=True)
    bias = torch.zeros(n_id, device=device, requires_grad=True)
    l2 = 1.0 / (tc.linear_start_c * float(weight.sum()))  # scikit-learn's C, per weight
    total = weight.sum()

    # evidence dropout, as the trainer applies it to the answer: with probability
    # ``evidence_dropout`` the answer scores by its prior alone and the others' fitted
    # scores must stay below it (without this term the start lifts every trained
    # capability over the unseen ones: ToolLens cold MRR 0.28 against 0.41)
    rho = tc.evidence_dropout
    answer_prior = d.cos_weight * (x * graph.cap_text[caps]).sum(1) / tc.temperature
    # capabilities without evidence score by their prior alone, in the catalog the model
    # serves; they are constant competitors here, so the fitted scores land on the
    # prior's scale instead of below it (never negatives of the trainer's loss: nothing
    # here moves their scores)
    unseen = torch.nonzero(graph.cap_id < 0).flatten()
    unseen_prior = d.cos_weight * (x @ graph.cap_text[unseen].T) / tc.temperature

    def cross_entropy(with_dropout: bool = True) -> torch.Tensor:
        logits = torch.cat([offset + x @ w_dense.T + lex @ w_lex + bias, unseen_prior], dim=1)
        ce = F.cross_entropy(logits, target, reduction="none")
        if rho > 0 and with_dropout:
            dropped = logits.scatter(1, target[:, None], answer_prior[:, None])
            ce = (1 - rho) * ce + rho * F.cross_entropy(dropped, target, reduction="none")
        return (ce * weight).sum() / total

    def objective() -> torch.Tensor:
        return cross_entropy() + 0.5 * l2 * (w_dense.pow(2).sum() + w_lex.pow(2).sum())

    opt = torch.optim.LBFGS(
        [w_dense, w_lex, bias],
        lr=1.0,
        max_iter=tc.linear_start_iterations,
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    iterations = int(opt.state_dict()["state"].get(0, {}).get("n_iter", 0))
    fitted = FittedStart(
        id_rows,
        w_dense.detach(),
        w_lex.detach(),
        bias.detach(),
        model.id_lex.weight.detach().clone(),
        tc.temperature,
    )
    with torch.no_grad():
        loss = float(cross_entropy(with_dropout=False))
    rank = write_start(model, graph, fitted, d.lexical_dim)
    model.train()
    seconds = time.perf_counter() - start
    return LinearStart(len(pos), n_id, iterations, loss, rank, seconds, fitted=fitted)


@torch.no_grad()
def write_start(model: SHGAT, graph: Graph, fitted: FittedStart, max_rank: int) -> int:
    """Put the fitted logits into the id channel; the lexical rank written (at most
    ``max_rank``). Keys carry the residual gate and scores are divided by the
    temperature, so each capability's weights are scaled by temperature / gate; its dense
    part also takes minus its prior (cosine weight x its text vector, over the gate), so
    a capability with evidence starts ranked by the fit alone, whatever its gate. The
    lexical matrix is split by SVD into projection x embedding (exact when the rank
    covers the capabilities, else its best low-rank part); the projection's columns past
    the rank keep their values from before the start."""
    d, t = model.dims, fitted.temperature
    gate = model.gate(graph)[fitted.id_rows].clamp(min=1e-6)[:, None]
    prior = d.cos_weight * graph.cap_text[fitted.id_rows]
    u, s, vh = fitted.lexical_svd
    r = min(max_rank, d.lexical_dim, int((s > s.max() * 1e-6).sum()) if s.numel() else 0)
    root = s[:r].sqrt()
    emb = torch.zeros_like(model.id_emb)  # column j of the fit is id row j
    emb[:, : d.text_dim] = (fitted.w_dense * t - prior) / gate
    emb[:, d.text_dim : d.text_dim + r] = (vh[:r].T * root) * t / gate
    model.id_emb.copy_(emb)
    model.id_bias.copy_(fitted.bias * t / gate[:, 0])
    model.id_lex.weight.copy_(fitted.lex_before)
    if r:
        model.id_lex.weight[:, :r] = u[:, :r] * root
    return r
