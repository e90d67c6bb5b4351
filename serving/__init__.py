"""The caprank KServe predictor, ``python -m serving``: a thin adapter over
``caprank.online`` (docs/serving.md)."""
