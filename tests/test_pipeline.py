"""The KFP pipeline: compiled YAML is current, components run through python_func, and the
whole DAG runs locally with the SubprocessRunner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Model

from caprank import registry
from caprank.config import dump_yaml, resolve
from caprank.data.dataset import load_dataset
from caprank.online.catalog import load_catalog
from caprank.online.models import (
    download_registry_model,
    find_model_root,
    load_model_dir,
)
from pipelines import compiled_path
from pipelines.local import LocalRunResult, StageOutcome, outcome_line
from pipelines.training import compile_pipeline, make_components

ROOT = Path(__file__).resolve().parents[1]


def _default_cfg():
    return resolve(environ={}).config


# Fields that name the SDK that wrote the package, not what the package runs: a patch
# release of kfp changes them and nothing else.
VERSION_ONLY_KEYS = frozenset({"sdkVersion"})


def _without_versions(node):
    """``node`` with every version-only key removed, at any depth."""
    if isinstance(node, dict):
        return {k: _without_versions(v) for k, v in node.items() if k not in VERSION_ONLY_KEYS}
    if isinstance(node, list):
        return [_without_versions(v) for v in node]
    return node


def test_version_only_fields_are_ignored_and_the_rest_is_not():
    spec = {"sdkVersion": "kfp-2.17.0", "root": {"dag": {"tasks": {"a": {"x": 1}}}}}
    patched = {**spec, "sdkVersion": "kfp-2.17.3"}
    assert _without_versions(spec) == _without_versions(patched)
    changed = {**spec, "root": {"dag": {"tasks": {"a": {"x": 2}}}}}
    assert _without_versions(spec) != _without_versions(changed)


def test_checked_in_pipeline_is_current(tmp_path):
    """The DAG, executors, images and parameters match a fresh compile; the SDK version
    string may differ (a fresh install can resolve a newer kfp patch release)."""
    cfg = _default_cfg()
    fresh = compile_pipeline(cfg, tmp_path / "p.yaml")
    checked_in = compiled_path(cfg)
    assert checked_in.exists(), "run `caprank pipeline compile` and commit the YAML"
    # Two documents: the pipeline spec, then kfp-kubernetes' platform spec (GPU pool).
    fresh_docs = _without_versions(list(yaml.safe_load_all(fresh.read_text())))
    assert fresh_docs == _without_versions(list(yaml.safe_load_all(checked_in.read_text()))), (
        "pipelines/compiled is out of date: run `make compile` and commit the result"
    )


def test_compiled_pipeline_has_no_runtime_installs_and_no_caching():
    spec = next(yaml.safe_load_all(compiled_path(_default_cfg()).read_text()))
    text = compiled_path(_default_cfg()).read_text()
    assert "pip install" not in text
    # Tasks of the root DAG and of the condition sub-DAGs (retrain, improved).
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    tasks = {name: task for dag in dags for name, task in dag["tasks"].items()}
    stages = {"ingest", "validate", "build-features", "monitor", "embed", "train", "evaluate"}
    assert stages | {"deploy", "update", "evaluate-2", "deploy-2"} <= set(tasks)
    conditions = {
        name: task["triggerPolicy"]["condition"]
        for name, task in tasks.items()
        if "condition" in task.get("triggerPolicy", {})
    }
    # retrain (monitor), train or update (mode: If/Else), improved (evaluate, per branch)
    assert len(conditions) == 5, conditions
    for name, task in tasks.items():
        assert task.get("cachingOptions", {}).get("enableCache") is not True, name
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert all(img.startswith("ghcr.io/caprank/") for img in images)


def _artifact(cls, path: Path):
    return cls(name=path.name, uri=str(path), metadata={})


@pytest.mark.slow
@pytest.mark.e2e
def test_components_through_python_func(tiny_cfg, tiny_dataset_dir, tmp_path):
    """ingest -> validate -> build_features -> embed -> train -> evaluate, as python_func:
    train logs to MLflow, evaluate registers, and the registered version's artifacts hold
    the bundle that serving loads by version."""
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"
    small = {"hidden_dim": 32, "heads": 2, "layers": 1, "lexical_dim": 16, "batch_size": 64}
    steps = {"max_steps": 20, "eval_every": 10, "checkpoint_every": 10, "baselines": ["bm25"]}
    for key, value in {**small, **steps}.items():
        setattr(cfg.training, key, value)
    ops = make_components(cfg)
    config_yaml = dump_yaml(cfg)

    dataset = _artifact(Dataset, tmp_path / "dataset")
    ops.ingest.python_func(
        data_uri=str(tiny_dataset_dir),
        config_yaml=config_yaml,
        dataset=dataset,
        summary=_artifact(Markdown, tmp_path / "ingest.md"),
    )
    assert load_dataset(dataset.path).interactions.num_rows > 0
    assert dataset.metadata["content_hash"]

    metrics = _artifact(Metrics, tmp_path / "metrics.json")
    ops.validate.python_func(
        dataset=dataset,
        config_yaml=config_yaml,
        report=_artifact(HTML, tmp_path / "report.html"),
        summary=_artifact(Markdown, tmp_path / "validate.md"),
        metrics=metrics,
    )
    assert "PASSED" in (tmp_path / "validate.md").read_text()
    assert metrics.metadata["failed_checks"] == 0.0

    features = _artifact(Dataset, tmp_path / "features")
    ops.build_features.python_func(
        dataset=dataset,
        config_yaml=config_yaml,
        features=features,
        summary=_artifact(Markdown, tmp_path / "features.md"),
        metrics=_artifact(Metrics, tmp_path / "fmetrics.json"),
    )
    assert (Path(features.path) / "capability_features.parquet").exists()
    assert (cfg.paths.home / "feast" / "online_store.db").exists()

    embeddings = _artifact(Dataset, tmp_path / "embeddings")
    emb_metrics = _artifact(Metrics, tmp_path / "emetrics.json")
    ops.embed.python_func(
        dataset=dataset,
        features=features,
        config_yaml=config_yaml,
        embeddings=embeddings,
        summary=_artifact(Markdown, tmp_path / "embed.md"),
        metrics=emb_metrics,
    )
    assert emb_metrics.metadata["capabilities"] == 60.0
    from caprank.features.store import open_store

    some = load_dataset(dataset.path).capabilities["capability_id"][0].as_py()
    online = (
        open_store(cfg)
        .get_online_features(
            features=["capability_embeddings:hybrid_embedding", "capability_features:tool_count"],
            entity_rows=[{"capability_id": some}],
        )
        .to_dict()
    )
    vec = online["hybrid_embedding"][0]
    assert vec is not None and abs(sum(v * v for v in vec) - 1.0) < 1e-3
    assert online["tool_count"][0] >= 1

    model = _artifact(Model, tmp_path / "model")
    train_metrics = _artifact(Metrics, tmp_path / "tmetrics.json")
    ops.train.python_func(
        dataset=dataset,
        embeddings=embeddings,
        features=features,
        config_yaml=config_yaml,
        model=model,
        summary=_artifact(Markdown, tmp_path / "train.md"),
        metrics=train_metrics,
    )
    assert (Path(model.path) / "bundle" / "bundle.json").is_file()
    assert train_metrics.metadata["steps"] == 20.0
    assert 0.0 < train_metrics.metadata["valid_shgat.mrr"] <= 1.0
    assert "valid_bm25.mrr" in train_metrics.metadata
    assert not [k for k in train_metrics.metadata if k.startswith("test")]  # evaluate's job
    client = registry.client(cfg)
    run = client.get_run(model.metadata["mlflow_run_id"])
    assert run.data.tags["git_revision"] and run.data.tags["dataset_hash"]
    assert "best_valid_mrr" in run.data.metrics and "training.lr" in run.data.params
    assert [m.step for m in client.get_metric_history(run.info.run_id, "rank_loss")]
    assert registry.latest_version(cfg) is None  # train logs the model, evaluate registers

    registered = _artifact(Model, tmp_path / "registered")
    ops.evaluate.python_func(
        dataset=dataset,
        model=model,
        config_yaml=config_yaml,
        pipeline_run_id="kfp-run-1",
        metrics=_artifact(Metrics, tmp_path / "evmetrics.json"),
        report=_artifact(HTML, tmp_path / "evreport.html"),
        summary=_artifact(Markdown, tmp_path / "evaluate.md"),
        registered=registered,
        embeddings=embeddings,
    )
    version = registered.metadata["version"]
    assert version == "1" and registry.challenger_version(cfg).version == "1"
    local = download_registry_model(cfg, version)
    root = find_model_root(local)
    assert (root / "bundle.json").is_file() and (root / "catalog").is_dir()
    catalog = load_catalog(cfg, root)
    loaded = load_model_dir(local, cfg, catalog, None, version=version)
    unit = np.ones(384, dtype=np.float32) / np.sqrt(384.0)
    q = loaded.ranker.query(unit, "convert a document")
    assert loaded.ranker.score(q, None).shape == (len(catalog),)


@pytest.mark.slow
@pytest.mark.e2e
def test_local_pipeline_run(tiny_cfg, tiny_dataset_dir, tmp_path):
    from pipelines.local import run_local

    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"
    cfg.training.max_steps, cfg.training.hidden_dim, cfg.training.baselines = 20, 32, []
    # a short local canary: 400 synthetic requests, topped up to 20 per arm
    c = cfg.canary
    c.window_s, c.poll_s, c.local_requests, c.local_intents = 3.0, 1.0, 400, 40
    c.min_requests = 20
    result = run_local(cfg, str(tiny_dataset_dir))
    assert result.ok, result.log_path.read_text()[-3000:]
    names = [s.name for s in result.stages]
    # monitor and embed both follow build-features; the runner may take either first
    assert names[:3] == ["ingest", "validate", "build-features"]
    assert sorted(names[3:5]) == ["embed", "monitor"]
    assert names[5:] == ["train", "evaluate", "deploy"]
    assert (cfg.paths.home / "feast" / "online_store.db").exists()
    by_name = {s.name: s for s in result.stages}
    assert "PASSED" in by_name["validate"].summary
    assert by_name["validate"].metrics["failed_checks"] == 0
    assert by_name["build-features"].metrics["rows"] > 0
    # no production model yet: the calibrated value head passes the ECE guardrail, the
    # candidate is improved and the local canary decides with a reason
    assert by_name["evaluate"].metrics["improved"] == 1
    assert by_name["evaluate"].metrics["ece"] <= cfg.evaluation.max_ece
    assert by_name["train"].metrics["valid_ece"] <= by_name["train"].metrics["valid_ece_raw"]
    deploy = by_name["deploy"]
    assert "**promoted**" in deploy.summary or "**rolled_back**" in deploy.summary, deploy.summary
    assert "| reason |" in deploy.summary
    promoted = deploy.metrics["promoted"] == 1.0
    assert outcome_line(result).startswith(
        "outcome: version 1 promoted" if promoted else "outcome: version 1 not promoted"
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_local_pipeline_update_run(tiny_cfg, tiny_dataset_dir, tmp_path):
    """mode update through KFP's local runner: the update branch warm-starts the
    registry's ``production`` (trained on the first six days) on the logs since, and its
    own evaluate registers the result; train does not run."""
    from datetime import timedelta

    import pyarrow.compute as pc

    from caprank.embeddings.stage import embed
    from caprank.features.stage import build_features
    from caprank.model.bundle import load_bundle
    from caprank.training.stage import train
    from caprank.training.update import dataset_as_of
    from pipelines.local import run_local

    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"
    cfg.training.max_steps, cfg.training.hidden_dim, cfg.training.baselines = 20, 32, []
    cfg.update.steps, cfg.update.eval_every, cfg.update.max_regression = 6, 3, 1.0
    c = cfg.canary
    c.window_s, c.poll_s, c.local_requests, c.local_intents = 3.0, 1.0, 400, 40
    c.min_requests = 20
    ds = load_dataset(tiny_dataset_dir)
    start = pc.min(ds.interactions["timestamp"]).as_py()
    old = dataset_as_of(ds, start.replace(hour=0, minute=0, second=0) + timedelta(days=6))
    embed(old, cfg, tmp_path / "emb")
    build_features(old, cfg, tmp_path / "feat")
    base = train(old, cfg, tmp_path / "emb", tmp_path / "base", tmp_path / "feat")
    lineage = registry.make_lineage(cfg, {"dataset": "first six days"})
    v1 = registry.register_version(cfg, base.run_id, lineage=lineage, alias=None)
    registry.set_alias(cfg, "production", v1.version)

    result = run_local(cfg, str(tiny_dataset_dir), mode="update")
    assert result.ok, result.log_path.read_text()[-3000:]
    by_name = {s.name: s for s in result.stages}
    assert "train" not in by_name and {"update", "evaluate-2"} <= set(by_name)
    assert by_name["update"].metrics["new_experiences"] > 0
    assert by_name["update"].metrics["accepted"] == 1
    assert "## Update" in by_name["update"].summary
    assert by_name["evaluate-2"].metrics["version"] == 2  # the update, registered
    run = registry.client(cfg).get_run(registry.get_version(cfg, "2").run_id)
    assert run.data.tags["run_kind"] == "update"
    assert run.data.tags["base_version"] == load_bundle(base.bundle_dir).meta["version"]


def _stage(name: str, metrics: dict, summary: str = "") -> StageOutcome:
    return StageOutcome(name, Path(name), {}, summary, metrics)


def test_outcome_line_says_why_a_run_did_not_promote(tmp_path):
    def run(*stages, ok=True):
        return LocalRunResult(tmp_path, tmp_path / "log", ok, list(stages))

    evaluate = _stage("evaluate", {"version": 3.0, "improved": 0.0}, "## E\n\nGate: p99 42 > 30\n")
    assert outcome_line(run(_stage("monitor", {}), evaluate)) == (
        "outcome: version 3 registered as `challenger`, not improved (p99 42 > 30); "
        "deploy skipped, `production` unchanged"
    )
    promoted = _stage("deploy", {"promoted": 1.0})
    assert outcome_line(run(evaluate, promoted)).startswith("outcome: version 3 promoted")
    assert "not promoted" in outcome_line(run(evaluate, _stage("deploy", {"promoted": 0.0})))
    assert "no reason to retrain" in outcome_line(run(_stage("monitor", {})))
    assert "failed" in outcome_line(run(evaluate, ok=False))
    # mode update: the DAG's second evaluate and deploy (the update branch's)
    updated = _stage("evaluate-2", {"version": 4.0, "improved": 1.0})
    assert outcome_line(run(updated, _stage("deploy-2", {"promoted": 1.0}))).startswith(
        "outcome: version 4 promoted"
    )


def test_local_run_refuses_a_mode_without_a_branch(tiny_cfg):
    from pipelines.local import PipelineRunError, run_local

    with pytest.raises(PipelineRunError, match="expected one of"):
        run_local(tiny_cfg, None, mode="incremental")


def _compiled_docs(cfg) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(compiled_path(cfg).read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict) -> dict[str, dict]:
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {
        name: task
        for dag in dags
        for name, task in dag["tasks"].items()
        if not name.startswith("condition-")
    }


def test_every_task_gets_the_config_and_the_cluster_env():
    """Each step is its own pod: every task reads the run's config_yaml parameter, and
    its executor attaches the endpoints ConfigMap and the credentials Secret (named by
    the config) as env vars, not optional."""
    cfg = _default_cfg()
    spec, k8s = _compiled_docs(cfg)
    tasks = _tasks(spec)
    assert len(tasks) == 11, sorted(tasks)  # evaluate and deploy in both mode branches
    for name, task in tasks.items():
        params = task["inputs"]["parameters"]
        # inside a condition's sub-DAG the root parameter arrives as a pipeline channel
        source = params["config_yaml"]["componentInputParameter"]
        assert source in ("config_yaml", "pipelinechannel--config_yaml"), name
        executor = k8s[spec["components"][task["componentRef"]["name"]]["executorLabel"]]
        [cm] = executor["configMapAsEnv"]
        assert cm["configMapName"] == cfg.pipeline.config_map and cm["optional"] is False
        assert [e["configMapKey"] for e in cm["keyToEnv"]] == cfg.pipeline.config_map_keys
        assert all(e["envVar"] == e["configMapKey"] for e in cm["keyToEnv"])
        [secret] = executor["secretAsEnv"]
        assert secret["secretName"] == cfg.pipeline.secret and secret["optional"] is False
        assert [e["secretKey"] for e in secret["keyToEnv"]] == cfg.pipeline.secret_keys
    assert any(k.startswith("CAPRANK_SERVICES__MLFLOW") for k in cfg.pipeline.config_map_keys)
    assert "CAPRANK_SERVICES__FEAST_REGISTRY" in cfg.pipeline.secret_keys


def test_mode_runs_train_or_update_and_either_model_feeds_evaluate_and_deploy():
    """``mode: update`` (and only that value) swaps train for update; each branch's
    evaluate and deploy read that branch's model, with the same executors."""
    cfg = _default_cfg()
    spec, _ = _compiled_docs(cfg)
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["mode"]["defaultValue"] == "train"
    assert root["update_base"]["defaultValue"] == "production"
    comps = spec["components"]
    branches = {}
    for comp in comps.values():
        for task in comp.get("dag", {}).get("tasks", {}).values():
            cond = task.get("triggerPolicy", {}).get("condition", "")
            if "pipelinechannel--mode" in cond:
                branches[cond] = comps[task["componentRef"]["name"]]["dag"]["tasks"]
    mode = "inputs.parameter_values['pipelinechannel--mode'] != 'update'"
    assert set(branches) == {mode, f"!({mode})"}
    pairs = ((mode, "train", "evaluate"), (f"!({mode})", "update", "evaluate-2"))
    for cond, producer, evaluate in pairs:
        tasks = branches[cond]
        assert {producer, evaluate} <= set(tasks), (cond, sorted(tasks))
        model = tasks[evaluate]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
        assert model == {"outputArtifactKey": "model", "producerTask": producer}
    update = next(c for c in comps.values() if c.get("executorLabel") == "exec-update")
    assert (
        update["outputDefinitions"]["artifacts"]["model"]
        == (comps["comp-train"]["outputDefinitions"]["artifacts"]["model"])
    )
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-update"]["container"]["image"] == cfg.pipeline.image(
        cfg.pipeline.component_image
    )
    for name in ("evaluate", "deploy"):
        a, b = executors[f"exec-{name}"]["container"], executors[f"exec-{name}-2"]["container"]
        assert a == b, name


def test_every_task_carries_its_steps_resources():
    cfg = _default_cfg()
    spec, k8s = _compiled_docs(cfg)
    executors = spec["deploymentSpec"]["executors"]
    for step, res in cfg.pipeline.resources.items():
        container = executors[f"exec-{step.replace('_', '-')}"]["container"]
        got = container["resources"]
        assert got["resourceCpuRequest"] == res.cpu_request, step
        assert got["resourceCpuLimit"] == res.cpu_limit, step
        assert got["resourceMemoryRequest"] == res.memory_request, step
        assert got["resourceMemoryLimit"] == res.memory_limit, step
    train = executors["exec-train"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == cfg.pipeline.gpu_accelerator  # pipelines/gpu
    assert k8s["exec-train"]["nodeSelector"] == {"labels": cfg.pipeline.gpu_node_selector}


def test_resources_and_env_names_come_from_the_config(tmp_path):
    cfg = resolve(
        environ={},
        overrides=[
            "pipeline.resources={deploy: {cpu_limit: 3, memory_limit: 5Gi}}",
            "pipeline.config_map=other-endpoints",
            "pipeline.secret=other-credentials",
            "pipeline.secret_keys=[DB_URL]",
        ],
    ).config
    assert cfg.pipeline.resources["ingest"] == _default_cfg().pipeline.resources["ingest"]
    spec, platform = yaml.safe_load_all(compile_pipeline(cfg, tmp_path / "p.yaml").read_text())
    deploy = spec["deploymentSpec"]["executors"]["exec-deploy"]["container"]["resources"]
    assert deploy["resourceCpuLimit"] == "3" and deploy["resourceMemoryLimit"] == "5Gi"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in executors.values():
        assert executor["configMapAsEnv"][0]["configMapName"] == "other-endpoints"
        assert executor["secretAsEnv"][0]["secretName"] == "other-credentials"
        assert executor["secretAsEnv"][0]["keyToEnv"] == [
            {"secretKey": "DB_URL", "envVar": "DB_URL"}
        ]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("pipeline.resources={trian: {}}", "unknown step"),
        ("pipeline.resources={train: {cpu_limit: 2x}}", "pipeline.resources.train.cpu_limit"),
        ("pipeline.resources={train: {memory_limit: 2GB}}", "memory_limit"),
        ("pipeline.secret_keys=[not-an-env]", "not valid env var names"),
    ],
)
def test_bad_pipeline_wiring_is_rejected_with_the_key(override, fragment):
    from caprank.errors import ConfigError

    with pytest.raises(ConfigError, match=fragment):
        resolve(environ={}, overrides=[override])
