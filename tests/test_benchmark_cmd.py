"""`caprank benchmark --data DIR` (issue 14, item 5): any dataset in the data contract is
a benchmark; the same JSON as `make bench-quality`, Hit@5 included, on a tiny dataset
with a small training budget."""

from __future__ import annotations

import json

import pytest

from caprank.cli import main
from caprank.data.dataset import load_dataset, write_dataset
from caprank.data.schemas import INTERACTIONS

TINY_MODEL = [
    "training.hidden_dim=16",
    "training.heads=2",
    "training.layers=1",
    "training.lexical_dim=8",
    "training.batch_size=32",
    "training.eval_every=2",
    "training.device=cpu",
    "embedding.node2vec.walks_per_node=4",
    "embedding.node2vec.epochs=1",
    "evaluation.bootstrap_samples=50",
]


@pytest.mark.slow
def test_benchmark_any_labeled_dataset(tiny_cfg, tiny_dataset, tmp_path, capsys):
    ds = load_dataset(tiny_dataset.root)
    ds.interactions = INTERACTIONS.empty_table()  # a catalog with judgements, no logs
    data = write_dataset(ds, tmp_path / "my-catalog")
    overrides = [f"paths.home={tmp_path / 'home'}", *TINY_MODEL]
    overrides.append(f"embedding.cache_dir={tiny_cfg.embedding_cache_dir()}")
    argv = [x for o in overrides for x in ("--set", o)]
    argv += ["benchmark", "--data", str(data), "--work", str(tmp_path / "work")]
    assert main([*argv, "--max-steps", "4", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = out["my-catalog"]
    assert {"shgat", "bm25", "dense", "logreg"} <= set(row) and "machine" in out
    for ranker in ("shgat", "bm25", "dense", "logreg"):
        m = row[ranker]
        assert set(m) == {"mrr", "hit@1", "hit@3", "hit@5", "hit@10", "ndcg@10"}
        assert m["hit@1"] <= m["hit@3"] <= m["hit@5"] <= m["hit@10"]
        assert 0.0 < m["mrr"] <= 1.0
        low = row["ci"][ranker]["hit@5"]
        assert low[1] <= low[0] <= low[2]
    assert row["train"]["steps"] == 4 and row["train"]["sources"] == ["labels"]
    assert row["test"]["queries"] > 0 and row["test"]["from"] == "test labels"
    assert row["test"]["items"] == ds.capabilities.num_rows
    # every test capability of the tiny catalog has train labels: one segment, all queries
    assert set(row["segments"]) == {"with evidence"}
    assert row["segments"]["with evidence"]["queries"] == row["test"]["queries"]
    assert row["segments"]["with evidence"]["shgat"] == row["ci"]["shgat"]["mrr"]

    # a log without labels: tested on the log's latest period, no logreg (nothing labeled)
    from caprank.config import load_config
    from caprank.data.schemas import LABELS
    from caprank.evaluation.benchmark import benchmark_dataset

    logs = load_dataset(tiny_dataset.root)
    logs.labels = LABELS.empty_table()
    logs_dir = write_dataset(logs, tmp_path / "my-logs")
    cfg = load_config(overrides=[*overrides, "training.max_steps=4", "training.torch_threads=1"])
    emb = tmp_path / "work" / "data" / "my-catalog" / "embeddings"  # same catalog
    row = benchmark_dataset(logs_dir, cfg, tmp_path / "work-logs", emb_dir=emb)
    assert {"shgat", "bm25", "dense"} <= set(row) and "logreg" not in row
    assert row["train"]["sources"] == ["interactions"] and row["train"]["best_valid_mrr"] > 0
    assert row["test"]["from"].startswith("temporal split of the interactions")
    assert 0.0 < row["shgat"]["mrr"] <= 1.0


def test_evidence_segments_split_the_queries_by_their_answer():
    import numpy as np
    import scipy.sparse as sp

    from caprank.config import CaprankConfig
    from caprank.evaluation.benchmark import evidence_segments
    from caprank.evaluation.queries import QuerySet

    # four queries over items a, b, c; a has evidence, b and c do not
    rel = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float))
    q = QuerySet(np.arange(4), np.array(["w", "x", "y", "z"]), rel, ("a", "b", "c"))
    ranks_a_first = np.tile([3.0, 2.0, 1.0], (4, 1))  # a, then b, then c, for every query
    cfg = CaprankConfig.model_validate({"evaluation": {"bootstrap_samples": 20}})
    out = evidence_segments({"r": ranks_a_first}, q, {"a"}, cfg)
    assert out["with evidence"]["queries"] == 2 and out["with evidence"]["r"][0] == 1.0
    assert out["without evidence"]["queries"] == 2
    assert out["without evidence"]["r"][0] == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-4)
