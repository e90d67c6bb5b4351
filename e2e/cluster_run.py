"""``make e2e``: the production loop as it runs on a cluster, on one machine.

Every pipeline step runs in its own process (KFP's local SubprocessRunner) and its own
new empty directory (``CAPRANK_POD_SANDBOX``), so steps share nothing but the artifacts
KFP passes and the services in their env (``Services.pod_env``: the ConfigMap and the
Secret): a real ``mlflow server`` on PostgreSQL with proxied artifacts, Feast with the
Redis online store and the PostgreSQL registry, the PostgreSQL feedback sink. Two
``caprank serve`` replicas, each in its own directory, load from the registry.

The run: pipeline run 1 (a short bootstrap training) is canaried on the replicas
(``canary.target: fleet``) under user traffic and promoted; users keep ranking, each
feedback post going to the replica that did not serve the ranking; pipeline run 2
ingests that feedback (every acknowledged event is counted in its dataset), trains
longer, and is canaried against version 1 with the same guardrails. Then a version whose
weights are NaN (it loads, and fails every request) is rolled out by hand (``caprank
deploy`` in its own pod) and must be rolled back with `production` unchanged.

The last line is one JSON object: ``steps_ok``, ``feedback_sent``, ``feedback_ingested``,
``run2_promoted``, ``failing_canary_rolled_back``, ``wall_s`` and the details. Exit 0 only
when all of it held. ``python -m e2e.cluster_run [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from caprank.sandbox import POD_SANDBOX_ENV
from e2e.services import Replica, Services
from e2e.traffic import Traffic

ROOT = Path(__file__).resolve().parents[1]

# The run's config (the pipeline's config_yaml parameter): a small synthetic world, a
# short canary with a 50% split so both arms gather outcomes in seconds, a generous p99
# ceiling (the steps train on the same two cores the replicas serve from), no watch.
RUN_CONFIG = {
    "data": {
        "seed": 7,
        "synth": {
            "n_tools": 60,
            "n_categories": 8,
            "n_capabilities": 120,
            "intents_per_capability": 6,
            "days": 10,
        },
        "simulate": {"events_per_day": 400, "n_users": 60},
    },
    "training": {"hidden_dim": 32, "batch_size": 64, "baselines": []},
    "canary": {
        "target": "fleet",
        "traffic_percent": 50,
        "window_s": 30.0,
        "poll_s": 3.0,
        "ready_timeout_s": 240.0,
        "min_requests": 40,
        "min_feedback": 20,
        "max_p99_latency_ms": 5000.0,
        "max_success_rate_drop": 0.15,
        "allow_unmeasured": [],
        "watch": {"period_s": 0.0},
    },
}
RUN1_STEPS, RUN2_STEPS = 15, 200


def run_config(replicas: list[str], steps: int) -> str:
    cfg = json.loads(json.dumps(RUN_CONFIG))
    cfg["training"]["max_steps"] = steps
    cfg.setdefault("services", {})["replica_urls"] = replicas
    return yaml.safe_dump(cfg, sort_keys=True)


def test_cases(config_yaml: str) -> list[tuple[str, str]]:
    """(intent text, relevant capability) of the test split of the run's synthetic world
    (the same seed the ingest step synthesizes from)."""
    from caprank.config import load_config
    from caprank.data.synth import synthesize

    ds = synthesize(load_config(extra_yaml=config_yaml))
    ids, texts = ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist()
    text = dict(zip(ids, texts, strict=True))
    rows = ds.labels.to_pylist()
    return [(text[r["intent_id"]], r["capability_id"]) for r in rows if r["split"] == "test"]


def pipeline_run(name: str, root: Path, config_yaml: str):
    from caprank.config import load_config
    from pipelines.local import outcome_line, run_local

    t0 = time.monotonic()
    result = run_local(load_config(), None, config_yaml=config_yaml, runs=root / "kfp" / name)
    stages = {s.name: s for s in result.stages}
    print(f"[e2e] {name}: {outcome_line(result)} ({time.monotonic() - t0:.0f}s)", flush=True)
    if not result.ok:
        print(result.log_path.read_text()[-4000:], flush=True)
    return result, stages


def ingested_ids(stage) -> set[str]:
    from caprank.data.dataset import load_dataset

    ds = load_dataset(stage.outputs["dataset"])
    return set(ds.interactions["event_id"].to_pylist())


def register_failing_copy(version: str, work: Path) -> str:
    """A copy of ``version`` whose weights are NaN, registered without an alias: it loads,
    and every request it answers fails (non-finite scores). Its version number."""
    import torch

    from caprank import registry
    from caprank.config import load_config
    from caprank.model.bundle import WEIGHTS_FILE

    cfg = load_config()
    files = registry.download_version(cfg, version, work / "download")
    copy = work / "failing"
    shutil.copytree(files, copy)
    for weights in copy.rglob(WEIGHTS_FILE):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        nan = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
               for k, v in state.items()}  # fmt: skip
        torch.save(nan, weights)
    client = registry.client(cfg)
    run_id = client.get_model_version(cfg.services.registered_model, version).run_id
    experiment = client.get_run(run_id).info.experiment_id
    run = client.create_run(experiment, run_name="e2e-failing-canary")
    registry.log_model_dir(cfg, run.info.run_id, copy)
    client.set_terminated(run.info.run_id)
    lineage = registry.make_lineage(cfg, {"dataset": f"version {version} with NaN weights"})
    return registry.register_version(cfg, run.info.run_id, lineage=lineage, alias=None).version


def deploy_by_hand(version: str, root: Path, env: dict[str, str], replicas: list[str]) -> dict:
    """``caprank deploy`` in a pod of its own; its JSON result."""
    pod = Path(tempfile.mkdtemp(prefix="pod-deploy-", dir=root / "pods"))
    config = pod / "run.yaml"
    config.write_text(run_config(replicas, RUN2_STEPS), encoding="utf-8")
    argv = [
        sys.executable,
        "-m",
        "caprank",
        "--config",
        str(config),
        "deploy",
        "--version",
        version,
    ]
    proc = subprocess.run(argv, cwd=pod, env={**os.environ, **env, "HOME": str(pod)},
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"caprank deploy printed no result (exit {proc.returncode}): {proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def production() -> str | None:
    from caprank.config import load_config
    from caprank.deploy.stage import production_of

    return production_of(load_config())


def primary_of(url: str, token: str) -> str | None:
    """The version a replica's primary is (its admin status)."""
    from caprank.deploy.fleet import Replica as AdminApi

    return (AdminApi(url, token).must("GET", "/admin/status").get("primary") or {}).get("version")


def wait_for_feedback(traffic: Traffic, more: int, timeout_s: float = 120.0) -> None:
    target, deadline = len(traffic.acked) + more, time.monotonic() + timeout_s
    while len(traffic.acked) < target and time.monotonic() < deadline:
        time.sleep(0.5)


def promoted(stages: dict) -> bool:
    deploy = stages.get("deploy")
    return bool(deploy is not None and deploy.metrics.get("promoted") == 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run under DIR and keep it (logs, artifacts)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    root = Path(args.keep or tempfile.mkdtemp(prefix="caprank-e2e-")).resolve()
    (root / "pods").mkdir(parents=True, exist_ok=True)
    services, replicas, traffic = Services(root), [], None
    out: dict = {"steps_ok": False, "feedback_sent": 0, "feedback_ingested": 0,
                 "run2_promoted": False, "failing_canary_rolled_back": False}  # fmt: skip
    try:
        services.start()
        env = services.pod_env()
        os.environ.update(env)
        os.environ[POD_SANDBOX_ENV] = str(root / "pods")
        serve = [
            "serving.model_ref=production",
            "serving.missing_model=dense",  # before the first promotion: the dense ranker
            "serving.rate_limit.predict_per_s=0",
            "serving.rate_limit.feedback_per_s=0",
        ]
        for i in (1, 2):
            pod = root / "pods" / f"replica-{i}"
            pod.mkdir(parents=True)
            (pod / "run.yaml").write_text(run_config([], RUN1_STEPS), encoding="utf-8")
            args = ["--config_file", str(pod / "run.yaml")]
            replicas.append(Replica(pod, env, args, serve).start())
        urls = [r.url for r in replicas]
        print(
            f"[e2e] services and replicas {urls} up ({time.monotonic() - start:.0f}s)", flush=True
        )
        traffic = Traffic(urls, test_cases(run_config(urls, RUN1_STEPS))).start()

        run1, stages1 = pipeline_run("run-1", root, run_config(urls, RUN1_STEPS))
        out["run1_promoted"] = promoted(stages1)
        wait_for_feedback(traffic, 100)  # users go on ranking with version 1
        traffic.pause()
        sent = list(traffic.acked)
        out["feedback_sent"] = len(sent)
        traffic.resume()  # run 2's canary needs users too

        run2, stages2 = pipeline_run("run-2", root, run_config(urls, RUN2_STEPS))
        if "ingest" in stages2:
            out["feedback_ingested"] = len(set(sent) & ingested_ids(stages2["ingest"]))
        out["run2_promoted"] = promoted(stages2)
        out["run2_canary"] = stages2["deploy"].metrics if "deploy" in stages2 else None
        out["steps_ok"] = run1.ok and run2.ok
        out["production_after_run2"] = production()

        if out["production_after_run2"]:
            failing = register_failing_copy(out["production_after_run2"], root / "failing")
            result = deploy_by_hand(failing, root, env, urls)
            out["failing_canary"] = {
                k: result.get(k) for k in ("model_version", "outcome", "reason")
            }
            serving = [primary_of(url, services.admin_token) for url in urls]
            out["replicas_serve_after_rollback"] = serving
            out["failing_canary_rolled_back"] = (
                result["outcome"] == "rolled_back"
                and production() == out["production_after_run2"]
                and serving == [out["production_after_run2"]] * len(urls)
            )
        out["traffic"] = {"served": traffic.served, "errors": len(traffic.errors),
                          "first_errors": traffic.errors[:3]}  # fmt: skip
        ok = out["steps_ok"] and out["run2_promoted"] and out["failing_canary_rolled_back"]
        ok = ok and out["feedback_sent"] > 0 and out["feedback_ingested"] == out["feedback_sent"]
        return 0 if ok else 1
    finally:
        if traffic is not None:
            traffic.stop()
        for r in replicas:
            r.stop()
        services.stop()
        out["wall_s"] = round(time.monotonic() - start, 1)
        print(json.dumps(out, sort_keys=True, default=str), flush=True)


if __name__ == "__main__":
    sys.exit(main())
