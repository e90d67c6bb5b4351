"""The serving process keeps its metrics in memory whatever its parent imported: Feast sets
``PROMETHEUS_MULTIPROC_DIR`` in any process that imports it, and a server started from
there would otherwise put every metric update through an mmap file (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.serving_proc import ROOT, ServerProcess

PROBE = "import serving, prometheus_client.values as v; print(v.ValueClass.__name__)"


def test_an_inherited_multiprocess_dir_is_dropped_before_prometheus_loads(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "PROMETHEUS_MULTIPROCESS_DIR": str(tmp_path)}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "MutexValue"
    assert not list(tmp_path.iterdir())  # no metric file was written


def test_a_benchmark_server_is_not_handed_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    server = ServerProcess(tmp_path / "model", tmp_path)
    assert "PROMETHEUS_MULTIPROC_DIR" not in server.env
    assert "PROMETHEUS_MULTIPROCESS_DIR" not in server.env
