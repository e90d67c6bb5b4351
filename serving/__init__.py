"""The caprank KServe predictor: a thin adapter over ``caprank.online``, started as
``python -m serving`` (``serving.__main__``): a ``kserve.Model`` (``serving.model``) on
KServe's ``ModelServer``, with the library's feedback and admin router mounted on its app
(``serving.server``). API and design: docs/serving.md."""
