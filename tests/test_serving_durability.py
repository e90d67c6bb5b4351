"""Durability: a predictor process receiving feedback from concurrent clients is killed
with SIGKILL mid-stream and restarted; every acknowledged event is stored exactly once.

This is ``make bench-feedback`` with a short duration (the same code path)."""

from __future__ import annotations

import pytest

from benchmarks.bench_feedback import run


@pytest.mark.slow
@pytest.mark.e2e
def test_kill_9_mid_stream_loses_no_acknowledged_event(tmp_path):
    result = run(duration_s=3.0, rate_per_min=6000, threads=4, home=tmp_path)
    assert result["acknowledged"] >= 150
    assert result["acknowledged_missing"] == 0
    assert result["duplicates"] == 0
    # what was stored but not acknowledged was in flight when the kill landed
    assert result["stored_without_ack"] <= 4
