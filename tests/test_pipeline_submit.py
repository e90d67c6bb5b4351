"""Submission, nightly schedule and GPU placement, on a small pipeline compiled here.

The KFP endpoint is a fake object implementing the kfp.Client methods submission calls,
returning kfp_server_api's own model objects, so the create-or-update logic is checked
without a cluster.
"""

# no `from __future__ import annotations`: KFP reads component annotations as types
import itertools
import json

import pytest
import yaml
from click.testing import CliRunner
from kfp import compiler, dsl
from kfp_server_api import models as m

from caprank.cli import cli
from caprank.config import load_config
from caprank.cron import CronError, validate_kfp_cron
from pipelines.gpu import on_gpu_pool
from pipelines.submit import SubmitError, schedule_nightly, set_caching, submit_run

CFG = load_config()
IMAGE = CFG.pipeline.image(CFG.pipeline.component_image)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def make_number(seed: int) -> int:
    return seed + 1


@dsl.component(
    base_image=CFG.pipeline.image(CFG.pipeline.training_image), install_kfp_package=False
)
def train(x: int) -> int:
    return x * 2


@dsl.pipeline(name="tiny")
def tiny(seed: int = 1):
    first = make_number(seed=seed)
    with dsl.If(first.output > 0):
        on_gpu_pool(train(x=first.output), CFG.pipeline)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return path


def test_gpu_placement_compiles_onto_the_train_task(package):
    text = package.read_text()
    assert "pip install" not in text
    pipeline_spec, platform = list(yaml.safe_load_all(text))
    resources = pipeline_spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    assert (
        "resources"
        not in pipeline_spec["deploymentSpec"]["executors"]["exec-make-number"]["container"]
    )
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train"]["nodeSelector"] == {"labels": {"caprank.io/pool": "gpu"}}
    assert k8s["exec-train"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "exec-make-number" not in k8s


def test_gpu_count_zero_places_without_accelerator(tmp_path):
    cfg = load_config(overrides=["pipeline.gpu_count=0"])

    @dsl.pipeline(name="tiny-kind")
    def kind_pipeline():
        on_gpu_pool(train(x=1), cfg.pipeline)

    compiler.Compiler().compile(kind_pipeline, str(tmp_path / "kind.yaml"))
    spec, platform = yaml.safe_load_all((tmp_path / "kind.yaml").read_text())
    assert "resources" not in spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train"]["nodeSelector"] == {"labels": {"caprank.io/pool": "gpu"}}


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("0 2 * * *", "did you mean '0 0 2 * * *'"),
        ("0 0 25 * * *", "hour value 25 is out of range 0-23"),
        ("0 0 2 * * * *", "has 7 fields"),
        ("0 0 2 ? * ?x", "day of week field has '?x'"),
        ("0 */0 * * * *", "step '0' must be a positive integer"),
        ("0 0 2 * 13 *", "month value 13"),
        ("0 0 5-2 * * *", "runs backwards"),
        ("@sometimes", "unknown descriptor"),
        ("", "empty"),
    ],
)
def test_cron_rejected_with_field_named(expr, fragment):
    with pytest.raises(CronError, match=None) as err:
        validate_kfp_cron(expr)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "expr",
    ["0 0 2 * * *", "0 30 1 ? * MON-FRI", "0 0 */6 1,15 JAN-JUN *", "@daily", "@every 1h30m"],
)
def test_cron_accepted(expr):
    assert validate_kfp_cron(f"  {expr} ") == expr


class FakeKfp:
    """The handful of kfp.Client methods submission uses, with in-memory state."""

    def __init__(self) -> None:
        self.ids = (f"id-{i}" for i in itertools.count(1))
        self.pipelines: dict[str, str] = {}
        self.versions: dict[str, list[m.V2beta1PipelineVersion]] = {}
        self.uploaded: list[dict] = []
        self.runs: list[dict] = []
        self.jobs: dict[str, m.V2beta1RecurringRun] = {}
        self.created_jobs: list[dict] = []
        self.deleted: list[str] = []
        self.experiments: dict[str, str] = {}

    def get_pipeline_id(self, name):
        return self.pipelines.get(name)

    def _version(self, pipeline_id, name, path):
        with open(path) as fh:
            self.uploaded.append(next(yaml.safe_load_all(fh.read())))
        v = m.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=next(self.ids), display_name=name
        )
        self.versions.setdefault(pipeline_id, []).append(v)
        return v

    def upload_pipeline(self, pipeline_package_path, pipeline_name=None, **kw):
        pid = next(self.ids)
        self.pipelines[pipeline_name] = pid
        self._version(pid, pipeline_name, pipeline_package_path)
        return m.V2beta1Pipeline(pipeline_id=pid, display_name=pipeline_name)

    def upload_pipeline_version(self, pipeline_package_path, pipeline_version_name, **kw):
        return self._version(kw["pipeline_id"], pipeline_version_name, pipeline_package_path)

    def list_pipeline_versions(self, pipeline_id, filter=None, **kw):
        versions = self.versions.get(pipeline_id, [])
        if filter:
            want = json.loads(filter)["predicates"][0]["stringValue"]
            versions = [v for v in versions if v.display_name == want]
        return m.V2beta1ListPipelineVersionsResponse(pipeline_versions=versions or None)

    def create_experiment(self, name, **kw):
        eid = self.experiments.setdefault(name, next(self.ids))
        return m.V2beta1Experiment(experiment_id=eid, display_name=name)

    def run_pipeline(self, experiment_id, job_name, **kw):
        self.runs.append({"experiment_id": experiment_id, "name": job_name, **kw})
        return m.V2beta1Run(run_id=next(self.ids), display_name=job_name)

    def list_recurring_runs(
        self, page_token="", page_size=10, experiment_id=None, filter=None, **kw
    ):
        want = json.loads(filter)["predicates"][0]["stringValue"]
        jobs = [j for j in self.jobs.values() if j.display_name == want]
        jobs = [j for j in jobs if j.experiment_id == experiment_id]
        start = int(page_token or 0)
        page = jobs[start : start + page_size]
        nxt = str(start + page_size) if start + page_size < len(jobs) else None
        return m.V2beta1ListRecurringRunsResponse(recurring_runs=page or None, next_page_token=nxt)

    def create_recurring_run(self, experiment_id, job_name, **kw):
        self.created_jobs.append(kw)
        job = m.V2beta1RecurringRun(
            recurring_run_id=next(self.ids),
            display_name=job_name,
            experiment_id=experiment_id,
            pipeline_version_reference=m.V2beta1PipelineVersionReference(
                pipeline_id=kw["pipeline_id"], pipeline_version_id=kw["version_id"]
            ),
            runtime_config=m.V2beta1RuntimeConfig(parameters=kw["params"]),
            max_concurrency=str(kw["max_concurrency"]),
            no_catchup=kw["no_catchup"],
            trigger=m.V2beta1Trigger(
                cron_schedule=m.V2beta1CronSchedule(cron=kw["cron_expression"])
            ),
            mode="ENABLE" if kw["enabled"] else "DISABLE",
        )
        self.jobs[job.recurring_run_id] = job
        return job

    def delete_recurring_run(self, recurring_run_id):
        self.deleted.append(recurring_run_id)
        del self.jobs[recurring_run_id]


def _all_tasks(spec: dict):
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return [t for d in dags for t in d["tasks"].values()]


def test_submit_uploads_once_then_reuses_the_version(package):
    kfp = FakeKfp()
    first = submit_run(kfp, CFG, package=package, params={"seed": 3})
    second = submit_run(kfp, CFG, package=package)
    assert first.version.created and not second.version.created
    assert first.version.version_id == second.version.version_id
    assert first.version.version_name.startswith("caprank-training-")
    assert len(kfp.uploaded) == 2  # KFP's default version of a new pipeline, and ours
    assert len(kfp.runs) == 2
    assert kfp.runs[0]["params"] == {"seed": 3}
    assert kfp.runs[0]["version_id"] == first.version.version_id
    tasks = _all_tasks(kfp.uploaded[0])
    assert len(tasks) == 3  # make-number, the condition, and train inside it
    assert all(t.get("cachingOptions") == {} for t in tasks)


def test_a_mode_the_dag_has_no_branch_for_is_refused_before_kfp(package):
    kfp = FakeKfp()
    with pytest.raises(SubmitError, match="mode='udpate'"):
        submit_run(kfp, CFG, package=package, params={"mode": "udpate"})
    with pytest.raises(SubmitError, match="expected one of"):
        schedule_nightly(kfp, CFG, package=package, params={"mode": "Update"})
    assert not kfp.runs and not kfp.created_jobs and not kfp.uploaded
    submit_run(kfp, CFG, package=package, params={"mode": "update"})
    assert kfp.runs[0]["params"] == {"mode": "update"}


def test_changed_package_becomes_a_new_version(package, tmp_path):
    kfp = FakeKfp()
    submit_run(kfp, CFG, package=package)
    docs = list(yaml.safe_load_all(package.read_text()))
    docs[0]["root"]["inputDefinitions"]["parameters"]["seed"]["defaultValue"] = 5
    changed = tmp_path / "caprank-training.yaml"
    changed.write_text(yaml.safe_dump_all(docs))
    again = submit_run(kfp, CFG, package=changed)
    assert again.version.created and len(kfp.versions[again.version.pipeline_id]) == 3


def test_schedule_create_then_unchanged_then_update(package):
    kfp = FakeKfp()
    created = schedule_nightly(kfp, CFG, package=package)
    assert created.action == "created"
    kw = kfp.created_jobs[0]
    assert kw["cron_expression"] == "0 0 2 * * *"
    assert kw["max_concurrency"] == 1 and kw["no_catchup"] is True
    assert all(t.get("cachingOptions") == {} for t in _all_tasks(kfp.uploaded[0]))

    same = schedule_nightly(kfp, CFG, package=package)
    assert same.action == "unchanged" and same.recurring_run_id == created.recurring_run_id
    assert len(kfp.created_jobs) == 1 and kfp.deleted == []

    moved = schedule_nightly(kfp, CFG, package=package, cron="0 30 3 * * *")
    assert moved.action == "updated" and moved.removed == (created.recurring_run_id,)
    assert list(kfp.jobs) == [moved.recurring_run_id]


def test_schedule_cleans_duplicates_left_by_a_crash(package):
    kfp = FakeKfp()
    schedule_nightly(kfp, CFG, package=package)
    # a crash between create and delete leaves an outdated job beside the current one
    stale = kfp.create_recurring_run(
        kfp.experiments[CFG.pipeline.experiment],
        CFG.pipeline.schedule_name,
        cron_expression="0 0 4 * * *",
        max_concurrency=1,
        no_catchup=True,
        params={},
        pipeline_id="old",
        version_id="old",
        enabled=True,
    )
    result = schedule_nightly(kfp, CFG, package=package)
    assert result.action == "unchanged" and result.removed == (stale.recurring_run_id,)
    assert len(kfp.jobs) == 1


def test_schedule_validates_cron_before_calling_kfp(package):
    kfp = FakeKfp()
    with pytest.raises(CronError):
        schedule_nightly(kfp, CFG, package=package, cron="0 2 * * *")
    assert kfp.uploaded == [] and kfp.created_jobs == []


def test_missing_or_bad_package_is_a_clear_error(tmp_path):
    with pytest.raises(SubmitError, match="caprank pipeline compile"):
        submit_run(FakeKfp(), CFG, package=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\n")
    with pytest.raises(SubmitError, match="not a compiled KFP pipeline"):
        submit_run(FakeKfp(), CFG, package=bad)


def test_set_caching_enables_everywhere(package):
    docs = set_caching(list(yaml.safe_load_all(package.read_text())), True)
    assert all(t["cachingOptions"] == {"enableCache": True} for t in _all_tasks(docs[0]))


def test_cli_rejects_bad_cron_and_missing_host():
    res = CliRunner().invoke(cli, ["pipeline", "schedule", "--cron", "61 0 2 * * *"], env={})
    assert res.exit_code != 0 and "second value 61" in str(res.exception)
    res = CliRunner().invoke(cli, ["pipeline", "submit"], env={})
    assert "services.kfp_host" in str(res.exception)


def test_compile_submit_and_schedule_share_one_path(tmp_path, monkeypatch):
    """Without --package, submit and schedule upload what compile wrote: compiled_path."""
    import pipelines
    import pipelines.submit

    cfg = CFG.model_copy(deep=True)
    cfg.pipeline.name = "one-path"
    monkeypatch.setattr(pipelines, "COMPILED_DIR", tmp_path)
    assert pipelines.compiled_path(cfg) == tmp_path / "one-path.yaml"
    with pytest.raises(SubmitError, match=r"one-path\.yaml"):
        submit_run(FakeKfp(), cfg)
    written = tmp_path / "one-path.yaml"
    compiler.Compiler().compile(tiny, str(written))
    kfp = FakeKfp()
    assert submit_run(kfp, cfg).version.created
    assert schedule_nightly(kfp, cfg).action == "created"
    assert len(kfp.uploaded) == 2  # the default version and ours, reused by schedule
    assert kfp.uploaded[0]["pipelineInfo"]["name"] == "tiny"
    assert pipelines.submit.compiled_path is pipelines.compiled_path


def test_cli_compile_writes_where_asked(tmp_path):
    out = tmp_path / "p.yaml"
    res = CliRunner().invoke(cli, ["pipeline", "compile", "--out", str(out)], env={})
    assert res.exit_code == 0, res.output
    assert str(out) in res.output and "root" in next(yaml.safe_load_all(out.read_text()))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def configured(config_yaml: str) -> str:
    return config_yaml


@dsl.pipeline(name="tiny-configured")
def tiny_configured(config_yaml: str = ""):
    configured(config_yaml=config_yaml)


@pytest.fixture(scope="module")
def configured_package(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "configured.yaml"
    compiler.Compiler().compile(tiny_configured, str(path))
    return path


def test_submit_and_schedule_pass_the_resolved_config(configured_package):
    cfg = load_config(overrides=["training.max_steps=7", "pipeline.gpu_count=0"])
    kfp = FakeKfp()
    submit_run(kfp, cfg, package=configured_package)
    sent = kfp.runs[0]["params"]["config_yaml"]
    assert load_config(extra_yaml=sent) == cfg  # the pods resolve what was submitted
    schedule_nightly(kfp, cfg, package=configured_package)
    assert load_config(extra_yaml=kfp.created_jobs[0]["params"]["config_yaml"]) == cfg
    # a changed config is a changed schedule; an explicit config_yaml is kept as given
    changed = load_config(overrides=["training.max_steps=8"])
    assert schedule_nightly(kfp, changed, package=configured_package).action == "updated"
    submit_run(kfp, cfg, package=configured_package, params={"config_yaml": "x: 1"})
    assert kfp.runs[1]["params"] == {"config_yaml": "x: 1"}


def test_submitted_config_leaves_out_urls_with_passwords(configured_package):
    secret_url = "postgresql+psycopg://u:hunter2@db:5432/feast"
    cfg = load_config(
        overrides=[f"services.feast_registry={secret_url}", "services.redis_url=redis://r:6379/0"]
    )
    kfp = FakeKfp()
    submit_run(kfp, cfg, package=configured_package)
    sent = kfp.runs[0]["params"]["config_yaml"]
    assert "hunter2" not in sent
    resolved = load_config(extra_yaml=sent)
    assert resolved.services.feast_registry == ""  # from the Secret's env in the pod
    assert resolved.services.redis_url == "redis://r:6379/0"


def test_cli_submit_says_what_the_config_leaves_out(configured_package, monkeypatch):
    import kfp as kfp_module

    fake = FakeKfp()
    monkeypatch.setattr(kfp_module, "Client", lambda host: fake)
    env = {"CAPRANK_SERVICES__FEAST_REGISTRY": "postgresql://u:pw@db/feast"}
    res = CliRunner().invoke(
        cli,
        ["pipeline", "submit", "--host", "http://kfp", "--package", str(configured_package)],
        env=env,
    )
    assert res.exit_code == 0, res.output
    assert "leaves out services.feast_registry" in res.output
    assert (
        "config_yaml" in fake.runs[0]["params"]
        and "pw@" not in fake.runs[0]["params"]["config_yaml"]
    )
