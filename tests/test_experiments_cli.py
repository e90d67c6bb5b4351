"""`caprank experiment start|status|stop` on a temp home: the record, the report, the
gauges, the MLflow run; bad input is one readable error."""

from __future__ import annotations

import json
import time

import numpy as np
from click.testing import CliRunner
from experiment_events import outcome_table, rates, write_outcomes

from caprank.cli import cli, main
from caprank.config import CaprankConfig
from caprank.registry import client


def test_start_status_stop(tmp_path):
    home = ["--set", f"paths.home={tmp_path}", "--set", "experiments.mde=0.1"]
    run = CliRunner()
    res = run.invoke(
        cli, [*home, "experiment", "start", "cli-exp", "--control", "v1", "--treatment", "v2",
              "--baseline", "0.5"], env={},
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    record = json.loads(res.output)
    assert record["planned_n_control"] > record["fixed_n_control"] > 0
    cfg = CaprankConfig.model_validate({"paths": {"home": str(tmp_path)}})
    rng, began = np.random.default_rng(0), record["started_at"]
    for version, p in (("v1", 0.5), ("v2", 0.65)):  # outcomes since the start (wall clock)
        table = outcome_table(version, rates(rng, 1500, p, 0.1), began + rng.uniform(0, 0.2, 1500))
        write_outcomes(cfg.feedback_dir(), version, table)
    time.sleep(max(0.0, began + 0.25 - time.time()))
    res = run.invoke(cli, [*home, "experiment", "status", "cli-exp"], env={})
    assert res.exit_code == 0, res.output
    assert res.output.startswith("decision: ship: treatment is better")
    res = run.invoke(cli, [*home, "experiment", "status", "cli-exp", "--json"], env={})
    assert json.loads(res.output)["analysis"]["arms"]["treatment"]["n"] == 1500
    res = run.invoke(cli, [*home, "experiment", "stop", "cli-exp"], env={})
    assert res.exit_code == 0, res.output
    run_id = res.output.strip().splitlines()[-1].removeprefix("mlflow run: ")
    mlrun = client(cfg).get_run(run_id)
    assert mlrun.data.tags["experiment.decision"] == "ship"
    assert mlrun.data.metrics["experiment.treatment.n"] == 1500
    stored = json.loads((tmp_path / "experiments" / "cli-exp" / "experiment.json").read_text())
    assert stored["status"] == "stopped" and stored["mlflow_run_id"] == run_id
    again = run.invoke(cli, [*home, "experiment", "status", "cli-exp"], env={})
    assert again.output.startswith("decision: ship")  # a stopped experiment keeps its verdict
    assert (tmp_path / "experiments" / "cli-exp" / "metrics.prom").is_file()


def test_unknown_experiment_is_one_readable_error(tmp_path, capsys):
    code = main(["--set", f"paths.home={tmp_path}", "experiment", "status", "missing"])
    assert code == 2
    assert "no experiment 'missing'" in capsys.readouterr().err


def test_status_pushes_the_gauges_to_the_pushgateway(tmp_path):
    """`status` runs as a short process nothing scrapes: with services.pushgateway_url
    its gauges go to the Pushgateway, one group per experiment."""
    import threading
    from http.server import HTTPServer

    from tests.test_alerts import _Gateway

    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = ["--set", f"paths.home={tmp_path}", "--set",
            f"services.pushgateway_url=http://127.0.0.1:{server.server_port}"]  # fmt: skip
    run = CliRunner()
    try:
        res = run.invoke(cli, [*home, "experiment", "start", "push-exp", "--control", "v1",
                               "--treatment", "v2", "--baseline", "0.5"], env={})  # fmt: skip
        assert res.exit_code == 0, res.output
        res = run.invoke(cli, [*home, "experiment", "status", "push-exp"], env={})
        assert res.exit_code == 0, res.output
    finally:
        server.shutdown()
        server.server_close()
    method, path, body = _Gateway.received[-1]
    assert method == "PUT" and path == "/metrics/job/caprank-experiment/experiment/push-exp"
    assert b'caprank_experiment_decision{decision="continue",experiment="push-exp"} 1.0' in body
