"""A/B experiments between two served model versions (docs/experiments.md).

``design`` sizes an experiment, ``assignment`` keeps a unit in one arm, ``analysis`` holds
the peeking-safe statistics (mSPRT), ``readout`` turns the feedback log into an analysis,
``decision`` says ship / keep control / continue, ``store`` keeps the record, ``report``
and ``gauges`` publish it, ``service`` is what the CLI calls, and ``canary`` is the deploy
stage's quality guardrail on the same test.
"""

from caprank.experiments.service import Status, start, status, stop
from caprank.experiments.store import Experiment, ExperimentError

__all__ = ["Experiment", "ExperimentError", "Status", "start", "status", "stop"]
