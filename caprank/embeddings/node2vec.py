"""Node2Vec in plain torch: second-order biased random walks, then skip-gram.

Written here because torch-geometric's ``Node2Vec`` needs pyg-lib/torch-cluster, which do
not install here. The walk is vectorized over all walkers at once:

* the graph is CSR with each row's neighbours sorted, so "is x a neighbour of t" is one
  ``searchsorted`` over the sorted edge keys ``row * n + col``;
* a step from ``v`` (having come from ``t``) proposes ``x`` with probability proportional
  to the edge weight ``w(v, x)`` and accepts it with probability ``alpha / max(alpha)``,
  where ``alpha`` is ``1/p`` if ``x == t``, ``1`` if ``x`` neighbours ``t``, else ``1/q``
  (rejection sampling: exact node2vec transition probabilities, no per-node alias tables);
  rejected walkers propose again until all have moved.

Skip-gram with negative sampling (noise distribution: weighted degree ** 0.75) is trained
with sparse embeddings and ``SparseAdam``. All draws come from one seeded generator, so
the same graph, config and seed give the same vectors on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from caprank.config import Node2VecConfig

# Walkers generated together before their skip-gram steps: bounds memory on big graphs
# (65,536 walks of 15 steps are 8 MB) while keeping each vectorized step large.
WALK_CHUNK = 1 << 16


@dataclass(frozen=True)
class Graph:
    """An undirected graph in CSR form (both directions stored, neighbours sorted)."""

    num_nodes: int
    rowptr: torch.Tensor  # int64 [num_nodes + 1]
    col: torch.Tensor  # int64 [num_edges]
    weight: torch.Tensor | None = None  # float64 [num_edges]; None: every edge weighs 1

    @classmethod
    def from_edges(
        cls,
        num_nodes: int,
        src: np.ndarray | torch.Tensor,
        dst: np.ndarray | torch.Tensor,
        weight: np.ndarray | torch.Tensor | None = None,
    ) -> Graph:
        """Symmetrize, drop self loops, merge duplicate edges (summing weights), sort."""
        src = torch.as_tensor(np.asarray(src), dtype=torch.int64).reshape(-1)
        dst = torch.as_tensor(np.asarray(dst), dtype=torch.int64).reshape(-1)
        if src.shape != dst.shape:
            raise ValueError(f"{src.numel()} edge sources but {dst.numel()} targets")
        if src.numel() and (
            min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes
        ):
            raise ValueError(f"edge endpoints must lie in [0, {num_nodes})")
        w = (
            torch.ones(src.numel(), dtype=torch.float64)
            if weight is None
            else torch.as_tensor(np.asarray(weight), dtype=torch.float64).reshape(-1)
        )
        if w.shape != src.shape:
            raise ValueError(f"{w.numel()} edge weights for {src.numel()} edges")
        if w.numel() and not bool(torch.isfinite(w).all() and (w > 0).all()):
            raise ValueError("edge weights must be finite and > 0")
        keep = src != dst
        rows = torch.cat([src[keep], dst[keep]])
        cols = torch.cat([dst[keep], src[keep]])
        ws = torch.cat([w[keep], w[keep]])
        keys, inverse = torch.unique(rows * num_nodes + cols, sorted=True, return_inverse=True)
        merged = torch.zeros(keys.numel(), dtype=torch.float64).index_add_(0, inverse, ws)
        rows, cols = keys // num_nodes, keys % num_nodes
        counts = torch.bincount(rows, minlength=num_nodes)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
        rowptr[1:] = torch.cumsum(counts, 0)
        uniform = bool((merged == 1.0).all())
        return cls(num_nodes, rowptr, cols, None if uniform else merged)

    @property
    def num_edges(self) -> int:
        """Undirected edges (each is stored twice)."""
        return self.col.numel() // 2

    def degree(self) -> torch.Tensor:
        return self.rowptr[1:] - self.rowptr[:-1]

    def weighted_degree(self) -> torch.Tensor:
        if self.weight is None:
            return self.degree().to(torch.float64)
        rows = torch.repeat_interleave(
            torch.arange(self.num_nodes, device=self.col.device), self.degree()
        )
        return torch.zeros(self.num_nodes, dtype=torch.float64, device=self.col.device).index_add_(
            0, rows, self.weight
        )

    def to(self, device: str | torch.device) -> Graph:
        w = None if self.weight is None else self.weight.to(device)
        return Graph(self.num_nodes, self.rowptr.to(device), self.col.to(device), w)


@dataclass
class _Sampler:
    """Per-graph tensors the walk needs, computed once."""

    graph: Graph
    deg: torch.Tensor
    edge_keys: torch.Tensor
    cum_weight: torch.Tensor | None = None
    row_base: torch.Tensor | None = None
    row_total: torch.Tensor | None = None

    @classmethod
    def build(cls, graph: Graph) -> _Sampler:
        deg = graph.degree()
        rows = torch.repeat_interleave(torch.arange(graph.num_nodes, device=deg.device), deg)
        s = cls(graph, deg, rows * graph.num_nodes + graph.col)
        if graph.weight is not None:
            s.cum_weight = torch.cumsum(graph.weight, 0)
            before = torch.cat(
                [torch.zeros(1, dtype=torch.float64, device=deg.device), s.cum_weight]
            )
            s.row_base = before[graph.rowptr[:-1]]
            s.row_total = before[graph.rowptr[1:]] - s.row_base
        return s

    def propose(self, nodes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One neighbour per node, drawn in proportion to edge weight (nodes need deg > 0)."""
        u = torch.rand(nodes.numel(), generator=gen, device=nodes.device, dtype=torch.float64)
        start, deg = self.graph.rowptr[nodes], self.deg[nodes]
        if self.cum_weight is None:
            offset = (u * deg).to(torch.int64)
        else:
            target = self.row_base[nodes] + u * self.row_total[nodes]
            offset = torch.searchsorted(self.cum_weight, target, right=True) - start
        return self.graph.col[start + offset.clamp(min=0).minimum(deg - 1)]

    def is_edge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        keys = a * self.graph.num_nodes + b
        pos = torch.searchsorted(self.edge_keys, keys).clamp(max=max(self.edge_keys.numel() - 1, 0))
        return (
            self.edge_keys[pos] == keys
            if self.edge_keys.numel()
            else torch.zeros_like(a, dtype=torch.bool)
        )


def random_walks(
    graph: Graph,
    starts: torch.Tensor,
    length: int,
    p: float,
    q: float,
    generator: torch.Generator,
    sampler: _Sampler | None = None,
) -> torch.Tensor:
    """Node2vec walks of ``length`` nodes from each start; [len(starts), length] int64.

    A walker on a node without neighbours stays where it is.
    """
    if length < 1:
        raise ValueError("walk length must be >= 1")
    s = sampler or _Sampler.build(graph)
    starts = starts.to(device=graph.col.device, dtype=torch.int64)
    walks = torch.empty(starts.numel(), length, dtype=torch.int64, device=starts.device)
    walks[:, 0] = starts
    alive = torch.nonzero(s.deg[starts] > 0).squeeze(1)
    unbiased = p == 1.0 and q == 1.0
    alphas = (1.0 / p, 1.0, 1.0 / q)
    # proposals drawn per walker per round: about one acceptance expected in the worst case
    tries = min(8, math.ceil(max(alphas) / min(alphas)))
    for t in range(1, length):
        cur = walks[:, t - 1]
        nxt = cur.clone()
        if t == 1 or unbiased:
            nxt[alive] = s.propose(cur[alive], generator)
        else:
            _biased_step(s, walks[:, t - 2], cur, nxt, alive, alphas, tries, generator)
        walks[:, t] = nxt
    return walks


def _biased_step(s, prev, cur, nxt, pending, alphas, tries, generator) -> None:
    """Fill ``nxt[pending]`` by rejection sampling; each walker's first accepted proposal
    wins, so the result is exact whatever ``tries`` is (it only saves rounds)."""
    inv_p, _, inv_q = alphas
    alpha_max = max(alphas)
    while pending.numel():
        rep = pending.repeat_interleave(tries)  # walker-major: tries of a walker adjacent
        x = s.propose(cur[rep], generator)
        alpha = torch.full(x.shape, inv_q, dtype=torch.float64, device=x.device)
        alpha[s.is_edge(prev[rep], x)] = 1.0
        alpha[x == prev[rep]] = inv_p
        u = torch.rand(rep.numel(), generator=generator, device=x.device, dtype=torch.float64)
        ok = (u * alpha_max < alpha).view(-1, tries)
        hit = ok.any(1)
        first = ok.to(torch.int8).argmax(1)
        chosen = x.view(-1, tries)[torch.arange(pending.numel(), device=x.device), first]
        nxt[pending[hit]] = chosen[hit]
        pending = pending[~hit]


@dataclass
class Node2VecResult:
    """The trained vectors (row = node) and what training saw."""

    vectors: np.ndarray
    epoch_losses: list[float] = field(default_factory=list)
    walks_per_epoch: int = 0
    pairs_per_epoch: int = 0
    isolated_nodes: int = 0


class SkipGram:
    """Skip-gram with negative sampling over whole walks, with hand-written gradients.

    For a batch of walks ``[B, L]`` the centre/context scores of every position pair are
    one batched matmul ``[B, L, L]``, of which the band ``1 <= j - i <= window`` are the
    positive pairs. (One direction suffices: a walk on an undirected graph is as likely
    read backwards.) Each walk draws ``negatives * window`` noise nodes (weighted degree **
    0.75) shared by its centres, each weighed so that every positive pair counts as many
    negatives as ``negatives``. Updates are lazy Adam: only the rows a batch touched move,
    as ``torch.optim.SparseAdam`` does, so a step costs what the batch touches, not the
    table size. Everything is gathers, batched matmuls and scatter-adds: no autograd
    graph.
    """

    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, graph: Graph, cfg: Node2VecConfig, gen: torch.Generator):
        self.cfg, self.gen, self.n = cfg, gen, graph.num_nodes
        device = graph.col.device
        init = torch.rand(self.n, cfg.dim, generator=gen, device=device) - 0.5
        self.inp = init / cfg.dim
        self.out = torch.zeros(self.n, cfg.dim, device=device)
        self.noise_cdf = torch.cumsum(graph.weighted_degree().pow(0.75), 0)
        self.n_noise = cfg.negatives * cfg.window
        lag = torch.arange(cfg.walk_length, device=device)
        lag = lag[None, :] - lag[:, None]
        self.band = ((lag >= 1) & (lag <= cfg.window)).to(torch.float32)
        contexts = self.band.sum(1)
        self.noise_weight = (contexts * cfg.negatives / self.n_noise)[None, :, None]
        self.pairs_per_walk = int(contexts.sum())
        self.moments = {
            name: (torch.zeros_like(self.out), torch.zeros_like(self.out), [0])
            for name in ("inp", "out")
        }

    def _noise(self, rows: int) -> torch.Tensor:
        u = torch.rand(rows * self.n_noise, generator=self.gen, device=self.inp.device)
        idx = torch.searchsorted(self.noise_cdf, u.double() * self.noise_cdf[-1], right=True)
        return idx.clamp(max=self.n - 1).view(rows, self.n_noise)

    def _apply(self, name: str, idx: torch.Tensor, grad: torch.Tensor, lr: float):
        """Adam on the touched rows (duplicates summed first), as SparseAdam does."""
        table = getattr(self, name)
        m, v, t = self.moments[name]
        t[0] += 1
        rows, inverse = torch.unique(idx, return_inverse=True)
        # scatter_add_, not index_add_: on CPU the latter is ~100x slower when many
        # indices hit the same few rows (small catalogs, hub nodes)
        g = torch.zeros(rows.numel(), grad.shape[1], device=grad.device)
        g.scatter_add_(0, inverse.unsqueeze(1).expand_as(grad), grad)
        b1, b2 = self.betas
        m_rows = m.index_select(0, rows).mul_(b1).add_(g, alpha=1.0 - b1)
        v_rows = v.index_select(0, rows).mul_(b2).addcmul_(g, g, value=1.0 - b2)
        m.index_copy_(0, rows, m_rows)
        v.index_copy_(0, rows, v_rows)
        denom = v_rows.div_(1.0 - b2 ** t[0]).sqrt_().add_(self.eps)
        step = m_rows.div_(denom).mul_(-lr / (1.0 - b1 ** t[0]))
        table.index_add_(0, rows, step)

    def step(self, walks: torch.Tensor, lr: float) -> float:
        """One SGD step on a batch of full-length walks; returns the mean loss per pair."""
        b, length = walks.shape
        band = self.band[:length, :length]
        noise_w = self.noise_weight[:, :length]
        flat = walks.reshape(-1)
        noise = self._noise(b).reshape(-1)
        dim = self.cfg.dim
        ci = self.inp.index_select(0, flat).view(b, length, dim)
        co = self.out.index_select(0, flat).view(b, length, dim)
        cn = self.out.index_select(0, noise).view(b, self.n_noise, dim)
        pos = torch.bmm(ci, co.transpose(1, 2))
        neg = torch.bmm(ci, cn.transpose(1, 2))
        loss = -(F.logsigmoid(pos) * band).sum() - (F.logsigmoid(-neg) * noise_w).sum()
        g_pos = (torch.sigmoid(pos) - 1.0) * band
        g_neg = torch.sigmoid(neg) * noise_w
        g_in = torch.bmm(g_pos, co).add_(torch.bmm(g_neg, cn))
        g_out = torch.bmm(g_pos.transpose(1, 2), ci).reshape(-1, dim)
        g_noise = torch.bmm(g_neg.transpose(1, 2), ci).reshape(-1, dim)
        self._apply("inp", flat, g_in.reshape(-1, dim), lr)
        self._apply("out", torch.cat([flat, noise]), torch.cat([g_out, g_noise]), lr)
        return float(loss) / (b * int(band.sum()))


def node2vec_embeddings(
    graph: Graph, cfg: Node2VecConfig, seed: int, device: str = "cpu"
) -> Node2VecResult:
    """Train node2vec on ``graph``; one ``cfg.dim`` vector per node (not normalized).

    Walks start from every node with a neighbour, ``cfg.walks_per_node`` times per epoch,
    freshly drawn each epoch. Isolated nodes keep their seeded random initial vector.
    """
    graph = graph.to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    sampler = _Sampler.build(graph)
    model = SkipGram(graph, cfg, gen)
    connected = torch.nonzero(sampler.deg > 0).squeeze(1)
    result = Node2VecResult(vectors=np.empty(0), isolated_nodes=graph.num_nodes - connected.numel())
    starts_all = connected.repeat(cfg.walks_per_node)
    result.walks_per_epoch = starts_all.numel()
    result.pairs_per_epoch = starts_all.numel() * model.pairs_per_walk
    for _ in range(cfg.epochs if connected.numel() else 0):
        order = starts_all[torch.randperm(starts_all.numel(), generator=gen, device=device)]
        losses = []
        for lo in range(0, order.numel(), WALK_CHUNK):
            walks = random_walks(
                graph, order[lo : lo + WALK_CHUNK], cfg.walk_length, cfg.p, cfg.q, gen, sampler
            )
            for b in range(0, walks.shape[0], cfg.batch_size):
                batch = walks[b : b + cfg.batch_size]
                losses.append(model.step(batch, cfg.lr) * batch.shape[0])
        result.epoch_losses.append(sum(losses) / starts_all.numel())
    result.vectors = model.inp.cpu().numpy().astype(np.float32)
    return result
