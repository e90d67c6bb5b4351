"""The MLflow pyfunc face of a bundle: intent texts in, top-k capabilities out.

Serving does not go through this class (it loads the bundle directory that MLflow stores
under the model's ``artifacts/``), but it makes the logged model usable on its own with
``mlflow.pyfunc.load_model`` and gives it a signature. ``caprank.registry.Tracker``
logs it.

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
        from caprank.model.bundle import load_bundle
        from caprank.model.serving import BundleBuilder
        from caprank.online.catalog import read_catalog

        root = context.artifacts["bundle"]
        self.builder = BundleBuilder(load_bundle(root))
        self.catalog = read_catalog(f"{root}/catalog")
        self.ranker = self.builder.build(self.catalog, None)

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        from caprank.embeddings.text import encode_texts

        texts = [str(t) for t in model_input["intent"].tolist()]
        vecs = encode_texts(texts, self.builder.text_model)
        rows = []
        for text, vec in zip(texts, vecs, strict=True):
            scores = self.ranker.score(self.ranker.query(vec, text), None)
            top = np.argsort(-scores, kind="stable")[:TOP_K]
            rows += [
                {
                    "intent": text,
                    "rank": r + 1,
                    "capability_id": self.catalog.ids[c],
                    "score": float(scores[c]),
                }
                for r, c in enumerate(top)
            ]
        return pd.DataFrame(rows, columns=["intent", "rank", "capability_id", "score"])
