"""The caprank KServe predictor, ``python -m serving``: a thin adapter over
``caprank.online`` (docs/serving.md).

A replica is one process (``--workers 1``), so its metrics live in that process's memory.
Feast sets ``PROMETHEUS_MULTIPROC_DIR`` in every process that imports it, and a server
started from such a process (``caprank serve``, a benchmark, a test harness) inherits it:
prometheus_client then keeps every metric value in an mmap file, checked against the pid
on each update (a tenth of a cache hit's time in a profile of the server) and with label
removal disabled. The variables are dropped here, before anything imports
prometheus_client.
"""

import os

PROMETHEUS_MULTIPROCESS_ENV = (
    "PROMETHEUS_MULTIPROC_DIR",
    "prometheus_multiproc_dir",
    "PROMETHEUS_MULTIPROCESS_DIR",
)
for _name in PROMETHEUS_MULTIPROCESS_ENV:
    os.environ.pop(_name, None)
