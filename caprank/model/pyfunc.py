"""The MLflow pyfunc face of a bundle: intent texts in, top-k capabilities out.

Serving does not go through this class (it loads the bundle directory that MLflow stores
under the model's ``artifacts/``), but the class ranks exactly as the server does, through
``caprank.online.offline.OfflineRanker`` (the server's loader, text runtime, rules and
tie order; the features the bundle was trained with): the same intent gets the same
ranking from ``mlflow models predict`` and from the KServe predictor. The config is the
defaults plus ``CAPRANK_*`` environment variables, as in the server.
``caprank.registry.Tracker`` logs it with the caprank package as code and exact pins.

This is the one module besides ``caprank.registry`` that imports MLflow: the class must
subclass ``mlflow.pyfunc.PythonModel`` at import time, and logged models pickle it by
reference (``caprank.model.pyfunc.BundlePyfunc``), so it keeps this import path for the
models already in a registry.
"""

from __future__ import annotations

import mlflow.pyfunc

TOP_K = 10


class BundlePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from caprank.config import load_config
        from caprank.online.offline import OfflineRanker

        self.ranker = OfflineRanker(context.artifacts["bundle"], load_config())

    def predict(self, context, model_input, params=None):
        import pandas as pd

        rows = []
        for text in (str(t) for t in model_input["intent"].tolist()):
            rows += [
                {"intent": text, "rank": r + 1, "capability_id": cid, "score": score}
                for r, (cid, score) in enumerate(self.ranker.rank(text, TOP_K))
            ]
        return pd.DataFrame(rows, columns=["intent", "rank", "capability_id", "score"])
