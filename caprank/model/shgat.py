"""SHGAT: hypergraph attention over tools (nodes) and capabilities (hyperedges), scored
against an intent by one dot product between a query vector and precomputed keys.

Message passing (``layers`` x): each capability attends over its tools, then each tool
over its capabilities, with ``heads``-head scaled dot-product attention normalized per
target (``torch_geometric.utils.softmax``), residual connections and layer norm. Tools
start from their hybrid embedding plus a learned tool embedding; capabilities from their
text embedding and standardized features.

The score of capability c for an intent q is a fixed prior plus gated learned residuals
(docs/training.md, "Channels that cannot hurt")::

    score(q, c) = prior(q, c) + g(n_c) * residual(q, c),   g(n) = n / (n + evidence_k)

* prior: ``cos_weight`` (fixed, not learned) times cos(intent text vector, capability
  text vector): what an untrained ranker does;
* n_c: the capability's training positives (``Graph.cap_evidence``), so g(0) = 0 exactly:
  a capability without evidence scores exactly its prior, and one with much evidence is
  ranked by what was learned;
* residual, the sum of four learned channels:
  content (mean over heads of the cosine between projected intent and capability
  representation, times a learned scale), cosine correction (a learned weight, from 0,
  times the text cosine), features (a per-capability term plus an intent-conditioned
  one), id (a per-capability embedding against [intent vector, lexical bag] plus a bias,
  rows only for capabilities with training positives). The buffer ``residual_on`` (1)
  is 0 in a model whose training kept the prior: it then ranks exactly as the prior.

Every channel is a dot product and the gate is one scalar per capability folded into its
key, so ``keys(graph)`` (C, K) and ``query(intent)`` (B, K) concatenate the parts and
``scores = query @ keys.T`` ranks: what serving precomputes. A value head (hidden
256-128-64) estimates the expected reward Q(intent, capability).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch_geometric.utils import scatter, softmax


@dataclass(frozen=True)
class ModelDims:
    text_dim: int
    tool_dim: int
    n_features: int
    n_tools: int  # learned tool embeddings (unknown tools: none)
    n_id_caps: int  # capabilities with an id embedding
    vocab: int
    hidden: int = 256
    heads: int = 4
    layers: int = 2
    lexical_dim: int = 128
    dropout: float = 0.0
    cos_weight: float = 1.0  # fixed weight of the text cosine prior
    evidence_k: float = 3.0  # positives at which the learned residual gets half weight
    value_hidden: tuple[int, ...] = (256, 128, 64)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ModelDims:
        data = dict(data)
        data["value_hidden"] = tuple(data.get("value_hidden", (256, 128, 64)))
        return cls(**data)


@dataclass
class Graph:
    """One catalog as tensors: tool and capability inputs and the membership edges."""

    tool_x: torch.Tensor  # (T, tool_dim)
    tool_id: torch.Tensor  # (T,) learned-embedding row, -1: none
    cap_text: torch.Tensor  # (C, text_dim), unit rows
    cap_feat: torch.Tensor  # (C, F) standardized
    cap_id: torch.Tensor  # (C,) id-channel row, -1: none (neutral)
    edge_tool: torch.Tensor  # (E,)
    edge_cap: torch.Tensor  # (E,)
    cap_evidence: torch.Tensor  # (C,) float: training positives (0: none, prior only)

    def to(self, device) -> Graph:
        return Graph(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


@dataclass
class Intents:
    """A batch of intents: text vectors and lexical bags (EmbeddingBag triples)."""

    dense: torch.Tensor  # (B, text_dim)
    lex_idx: torch.Tensor
    lex_off: torch.Tensor
    lex_w: torch.Tensor

    def to(self, device) -> Intents:
        return Intents(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


class HyperAttention(nn.Module):
    """Multi-head attention from ``src`` rows to ``dst`` rows along edges (src -> dst)."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, hidden // heads
        self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.out = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, src, dst, edge_src, edge_dst):
        e, h, d = edge_src.numel(), self.heads, self.head_dim
        q = self.q(dst)[edge_dst].view(e, h, d)
        k = self.k(src)[edge_src].view(e, h, d)
        v = self.v(src)[edge_src].view(e, h, d)
        att = softmax((q * k).sum(-1) / math.sqrt(d), edge_dst, num_nodes=dst.size(0))
        msg = scatter(att.unsqueeze(-1) * v, edge_dst, dim=0, dim_size=dst.size(0), reduce="sum")
        return self.norm(dst + self.drop(self.out(msg.reshape(dst.size(0), h * d))))


class SHGAT(nn.Module):
    def __init__(self, dims: ModelDims):
        super().__init__()
        self.dims = dims
        h = dims.hidden
        self.tool_in = nn.Linear(dims.tool_dim, h)
        self.tool_emb = nn.Embedding(dims.n_tools + 1, h, padding_idx=dims.n_tools)
        nn.init.normal_(self.tool_emb.weight, std=0.02)
        with torch.no_grad():
            self.tool_emb.weight[dims.n_tools].zero_()
        self.cap_in = nn.Linear(dims.text_dim + dims.n_features, h)
        self.to_cap = nn.ModuleList(
            HyperAttention(h, dims.heads, dims.dropout) for _ in range(dims.layers)
        )
        self.to_tool = nn.ModuleList(
            HyperAttention(h, dims.heads, dims.dropout) for _ in range(dims.layers)
        )
        # content channel
        self.q_dense = nn.Linear(dims.text_dim, h)
        self.q_lex = nn.EmbeddingBag(max(1, dims.vocab), h, mode="sum")
        nn.init.normal_(self.q_lex.weight, std=0.02)
        self.q_proj = nn.Linear(h, h)
        self.k_proj = nn.Linear(h, h)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        if dims.evidence_k <= 0:
            raise ValueError(f"evidence_k must be > 0, got {dims.evidence_k}")
        # 0: the residual is switched off and the model ranks exactly as its prior (what
        # training keeps when the prior beat every trained state on validation)
        self.register_buffer("residual_on", torch.ones(()))
        # cosine correction (the prior's weight is fixed) and feature channels
        self.cos_residual = nn.Parameter(torch.zeros(()))
        self.feat_bias = nn.Linear(dims.n_features, 1, bias=False)
        self.feat_query = nn.Linear(dims.text_dim, dims.n_features, bias=False)
        nn.init.zeros_(self.feat_bias.weight)
        nn.init.zeros_(self.feat_query.weight)
        # id channel (LR-like): zero-initialized, so an unseen capability matches its start
        self.id_lex = nn.EmbeddingBag(max(1, dims.vocab), dims.lexical_dim, mode="sum")
        nn.init.normal_(self.id_lex.weight, std=0.02)
        self.id_emb = nn.Parameter(torch.zeros(dims.n_id_caps, dims.text_dim + dims.lexical_dim))
        self.id_bias = nn.Parameter(torch.zeros(dims.n_id_caps))
        # value head Q(intent, capability)
        layers: list[nn.Module] = []
        width = 2 * h + dims.n_features
        for out in dims.value_hidden:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        self.value_mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    # ------------------------------------------------------------------ graph side
    def encode(self, g: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """(tool states, capability representations) after message passing."""
        tool_row = torch.where(
            g.tool_id >= 0, g.tool_id, torch.full_like(g.tool_id, self.dims.n_tools)
        )
        tools = self.tool_in(g.tool_x) + self.tool_emb(tool_row)
        caps = self.cap_in(torch.cat([g.cap_text, g.cap_feat], dim=1))
        for to_cap, to_tool in zip(self.to_cap, self.to_tool, strict=True):
            caps = to_cap(tools, caps, g.edge_tool, g.edge_cap)
            tools = to_tool(caps, tools, g.edge_cap, g.edge_tool)
        return tools, caps

    def _heads_unit(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = x.view(b, self.dims.heads, -1)
        return nn.functional.normalize(x, dim=-1).view(b, -1)

    def gate(self, g: Graph) -> torch.Tensor:
        """(C,) g(n) = n / (n + evidence_k): 0 exactly without evidence, -> 1 with much."""
        n = g.cap_evidence.clamp(min=0)
        return n / (n + self.dims.evidence_k) * self.residual_on

    def keys(
        self,
        g: Graph,
        cap_repr: torch.Tensor | None = None,
        id_mask: torch.Tensor | None = None,
        gate_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(C, K): [prior | gated: content | text | features | feature bias | id bias | id].

        ``id_mask`` (C,) zeroes the id channel of some capabilities (id dropout);
        ``gate_mask`` (C,) zeroes the whole residual of some: they score as a capability
        without evidence does, the prior alone (evidence dropout)."""
        if cap_repr is None:
            cap_repr = self.encode(g)[1]
        content = self._heads_unit(self.k_proj(cap_repr))
        has_id = g.cap_id >= 0
        row = g.cap_id.clamp(min=0)
        keep = has_id.to(content.dtype)
        if id_mask is not None:
            keep = keep * id_mask.to(content.dtype)
        ident = self.id_emb[row] * keep[:, None]
        id_bias = (self.id_bias[row] * keep)[:, None]
        residual = torch.cat(
            [content, g.cap_text, g.cap_feat, self.feat_bias(g.cap_feat), id_bias, ident], dim=1
        )
        gate = self.gate(g).to(residual.dtype)
        if gate_mask is not None:
            gate = gate * gate_mask.to(residual.dtype)
        return torch.cat([g.cap_text.to(residual.dtype), residual * gate[:, None]], dim=1)

    # ------------------------------------------------------------------ intent side
    def intent_state(self, x: Intents) -> torch.Tensor:
        return self.q_dense(x.dense) + self.q_lex(x.lex_idx, x.lex_off, per_sample_weights=x.lex_w)

    def query(self, x: Intents, lex_keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) matching ``keys``; ``lex_keep`` (B,) drops the id channel's lexical bag."""
        h = self.dims.heads
        content = self._heads_unit(self.q_proj(self.intent_state(x))) * (self.log_scale.exp() / h)
        lex = self.id_lex(x.lex_idx, x.lex_off, per_sample_weights=x.lex_w)
        if lex_keep is not None:
            lex = lex * lex_keep[:, None].to(lex.dtype)
        ones = torch.ones(x.dense.shape[0], 1, dtype=x.dense.dtype, device=x.dense.device)
        return torch.cat(
            [
                self.dims.cos_weight * x.dense,
                content,
                self.cos_residual * x.dense,
                self.feat_query(x.dense),
                ones,
                ones,
                x.dense,
                lex,
            ],
            dim=1,
        )

    def channel_slices(self) -> dict[str, slice]:
        """Columns of ``keys``/``query`` per score channel, counted back from where the id
        channel starts (``split_points``); columns before the content channel, if any, are
        the ``prior``. A channel's score is the dot product over its columns, and the
        channels add up to the score."""
        d = self.dims
        no_id, end = self.split_points()
        features = no_id - d.n_features - 1  # intent-conditioned + feature bias
        cosine = features - d.text_dim
        content = cosine - d.hidden
        prior = {"prior": slice(0, content)} if content > 0 else {}
        return {
            **prior,
            "content": slice(content, cosine),
            "cosine": slice(cosine, features),
            "features": slice(features, no_id),
            "id": slice(no_id, end),  # bias + embedding
        }

    def split_points(self) -> tuple[int, int]:
        """Column where the id channel starts (everything before it is id-free)."""
        d = self.dims
        no_id = self.prior_columns() + d.hidden + d.text_dim + d.n_features + 1
        return no_id, no_id + 1 + d.text_dim + d.lexical_dim

    def prior_columns(self) -> int:
        """Keys and queries start with the prior's columns; the gated residual follows."""
        return self.dims.text_dim

    # ------------------------------------------------------------------ value head
    def value(self, intent_state: torch.Tensor, cap_repr: torch.Tensor, cap_feat: torch.Tensor):
        """Expected reward for aligned rows of intents and capabilities."""
        return self.value_mlp(torch.cat([intent_state, cap_repr, cap_feat], dim=1)).squeeze(-1)
