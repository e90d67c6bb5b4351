"""Prioritized Experience Replay (Schaul et al. 2016; seed 002 §2.2) over a sum-tree.

P(i) = p_i^alpha / sum_k p_k^alpha with p_i = |TD error_i| + eps; new items get the
largest priority seen so far, so each is replayed at least once soon. Importance-sampling
weights w_i = (N P(i))^-beta / max_k w_k correct the bias; beta is annealed towards 1 by
``beta_increment`` per sampled batch. Sampling is stratified (one draw per equal slice of
the total mass) and vectorized: a batch descends the tree level by level in numpy.
"""

from __future__ import annotations

import numpy as np

from caprank.config import PERConfig


class SumTree:
    """A complete binary tree whose leaves hold priorities and inner nodes their sums."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.leaves = 1 << max(0, (capacity - 1).bit_length())
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def get(self, idx: np.ndarray) -> np.ndarray:
        return self.tree[self.leaves + np.asarray(idx, dtype=np.int64)]

    def set(self, idx: np.ndarray, values: np.ndarray) -> None:
        idx = np.asarray(idx, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if idx.size == 0:
            return
        if np.any((idx < 0) | (idx >= self.capacity)):
            raise IndexError("sum-tree index out of range")
        nodes = self.leaves + idx
        self.tree[nodes] = values  # duplicates: the last value wins, as in a loop
        nodes = np.unique(nodes // 2)
        while nodes.size and nodes[0] >= 1:
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative-sum interval holds each ``mass`` in [0, total)."""
        mass = np.array(mass, dtype=np.float64)
        node = np.ones(mass.shape, dtype=np.int64)
        for _ in range(self.leaves.bit_length() - 1):  # depth of the leaves
            left = 2 * node
            go_right = mass >= self.tree[left]
            mass = np.where(go_right, mass - self.tree[left], mass)
            node = left + go_right
        return node - self.leaves


class PrioritizedReplay:
    """A PER buffer of item indices (the experiences themselves live in arrays)."""

    def __init__(self, cfg: PERConfig | None = None, capacity: int | None = None):
        self.cfg = cfg or PERConfig()
        self.tree = SumTree(capacity or self.cfg.capacity)
        self.size = 0
        self.next = 0
        self.beta = self.cfg.beta
        self.max_priority = 1.0

    @property
    def capacity(self) -> int:
        return self.tree.capacity

    def __len__(self) -> int:
        return self.size

    def add(self, n: int) -> np.ndarray:
        """Make room for ``n`` new items at the highest priority; returns their slots
        (oldest slots are overwritten once the buffer is full)."""
        slots = (self.next + np.arange(n)) % self.capacity
        self.tree.set(slots, np.full(n, self.max_priority**self.cfg.alpha))
        self.next = int((self.next + n) % self.capacity)
        self.size = int(min(self.capacity, self.size + n))
        return slots

    def probabilities(self) -> np.ndarray:
        """P(i) of every stored slot."""
        p = self.tree.get(np.arange(self.size))
        return p / p.sum()

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(slots, importance weights) of a stratified batch; anneals beta afterwards."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        total = self.tree.total
        edges = np.arange(batch, dtype=np.float64) * (total / batch)
        mass = np.minimum(edges + rng.random(batch) * (total / batch), np.nextafter(total, 0))
        slots = np.minimum(self.tree.find(mass), self.size - 1)
        probs = self.tree.get(slots) / total
        p_min = self.tree.get(np.arange(self.size)).min() / total
        weights = (self.size * probs) ** (-self.beta)
        weights /= (self.size * p_min) ** (-self.beta)  # largest possible weight -> 1
        self.beta = min(1.0, self.beta + self.cfg.beta_increment)
        return slots, weights.astype(np.float32)

    def update(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        """New priorities (|TD error| + eps)^alpha for sampled slots."""
        p = np.abs(np.asarray(td_errors, dtype=np.float64)) + self.cfg.eps
        self.max_priority = max(self.max_priority, float(p.max(initial=0.0)))
        self.tree.set(slots, p**self.cfg.alpha)

    def state_dict(self) -> dict:
        return {
            "tree": self.tree.tree.copy(),
            "size": self.size,
            "next": self.next,
            "beta": self.beta,
            "max_priority": self.max_priority,
        }

    def load_state_dict(self, state: dict) -> None:
        tree = np.asarray(state["tree"], dtype=np.float64)
        if tree.shape != self.tree.tree.shape:
            raise ValueError("replay state was saved with another capacity")
        self.tree.tree[:] = tree
        self.size = int(state["size"])
        self.next = int(state["next"])
        self.beta = float(state["beta"])
        self.max_priority = float(state["max_priority"])
