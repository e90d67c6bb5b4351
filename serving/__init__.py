"""The caprank KServe predictor: a thin HTTP adapter over ``caprank.online``.

``python -m serving --model_name caprank --model_dir /mnt/models --http_port 8080`` is
what the ServingRuntime in ``manifests/base`` runs; ``caprank serve`` starts the same
server on the embedded defaults. API and design: docs/serving.md.
"""

from caprank.online.ranker import DenseRanker, Ranker, RankerBuilder

__all__ = ["DenseRanker", "Ranker", "RankerBuilder"]
