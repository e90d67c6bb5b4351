"""The training DAG: ingest -> validate -> build_features -> ... as KFP v2 components.

Images come from the config (``pipeline.image_registry``/``image_tag`` and the image
names), so ``build_pipeline(cfg)`` is called at compile time. Every task gets the run's
``config_yaml``, the endpoint ConfigMap and credentials Secret as env, its step's
CPU/memory (``pipelines.pods``) and no caching: each reads data or services (logs,
Feast, MLflow) that change between runs.
"""

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from kfp import compiler, dsl

from caprank.config import CaprankConfig
from components.build_features.component import build_features
from components.deploy.component import deploy
from components.embed.component import embed
from components.evaluate.component import evaluate
from components.ingest.component import ingest
from components.monitor.component import monitor
from components.train.component import train
from components.update.component import update
from components.validate.component import validate
from pipelines import compiled_path
from pipelines.gpu import on_gpu_pool
from pipelines.pods import in_cluster


def _component(func: Callable, image: str):
    """Wrap a plain function as a lightweight component that runs in our prebuilt image.

    ``install_kfp_package=False``: the image already has kfp and caprank, so nothing is
    pip-installed when the step runs on a cluster.
    """
    return dsl.component(func, base_image=image, install_kfp_package=False)


def make_components(cfg: CaprankConfig) -> SimpleNamespace:
    """Every component of the DAG, bound to the images ``cfg`` names."""
    cpu = cfg.pipeline.image(cfg.pipeline.component_image)
    return SimpleNamespace(
        ingest=_component(ingest, cpu),
        validate=_component(validate, cpu),
        build_features=_component(build_features, cpu),
        embed=_component(embed, cpu),
        evaluate=_component(evaluate, cpu),
        monitor=_component(monitor, cpu),
        train=_component(train, cfg.pipeline.image(cfg.pipeline.training_image)),
        deploy=_component(deploy, cpu),
        update=_component(update, cpu),
    )


def build_pipeline(cfg: CaprankConfig):
    """The pipeline function for ``cfg``'s images and name."""
    ops = make_components(cfg)

    @dsl.pipeline(
        name=cfg.pipeline.name,
        description="caprank: ingest and validate interaction logs, build features, "
        "embed, train the SHGAT ranker (or update the production one), evaluate it and "
        "roll it out.",
    )
    def caprank_training(
        data_uri: str = "",
        config_yaml: str = "",
        retrain_policy: str = "",
        mode: str = "train",
        update_base: str = "production",
    ):
        ingested = ops.ingest(data_uri=data_uri, config_yaml=config_yaml)
        ingested.set_display_name("ingest")
        checked = ops.validate(dataset=ingested.outputs["dataset"], config_yaml=config_yaml)
        checked.set_display_name("validate")
        features = ops.build_features(dataset=ingested.outputs["dataset"], config_yaml=config_yaml)
        features.set_display_name("build features").after(checked)
        watched = ops.monitor(
            dataset=ingested.outputs["dataset"],
            features=features.outputs["features"],
            config_yaml=config_yaml,
            retrain_policy=retrain_policy,
        )
        watched.set_display_name("monitor")
        embedded = ops.embed(
            dataset=ingested.outputs["dataset"],
            features=features.outputs["features"],
            config_yaml=config_yaml,
        )
        embedded.set_display_name("embed")
        steps = zip(
            ("ingest", "validate", "build_features", "monitor", "embed"),
            (ingested, checked, features, watched, embedded),
            strict=True,
        )
        for step, task in steps:
            in_cluster(task, cfg.pipeline, step)

        def evaluate_and_deploy(model) -> None:
            """evaluate the candidate ``model``; deploy it when it improved."""
            evaluated = ops.evaluate(
                dataset=ingested.outputs["dataset"],
                model=model,
                embeddings=embedded.outputs["embeddings"],
                drift_report=watched.outputs["drift_report"],
                config_yaml=config_yaml,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            evaluated.set_display_name("evaluate")
            in_cluster(evaluated, cfg.pipeline, "evaluate")
            with dsl.If(evaluated.outputs["Output"] == True, name="improved"):  # noqa: E712
                deployed = ops.deploy(
                    model=model, registered=evaluated.outputs["registered"], config_yaml=config_yaml
                )
                deployed.set_display_name("deploy")
                in_cluster(deployed, cfg.pipeline, "deploy")

        # The monitor decides whether this run retrains (retrain_policy: always / on_drift);
        # ``mode`` whether it trains from scratch or updates the production model. Each
        # branch has its own evaluate and deploy: KFP's local runner cannot resolve a
        # dsl.OneOf of artifacts (kfp 2.17), and `make run` must run the same DAG.
        with dsl.If(watched.outputs["Output"] == True, name="retrain"):  # noqa: E712
            with dsl.If(mode != "update", name="full-train"):
                trained = ops.train(
                    dataset=ingested.outputs["dataset"],
                    embeddings=embedded.outputs["embeddings"],
                    features=features.outputs["features"],
                    config_yaml=config_yaml,
                )
                trained.set_display_name("train")
                on_gpu_pool(trained, cfg.pipeline)
                in_cluster(trained, cfg.pipeline, "train")
                evaluate_and_deploy(trained.outputs["model"])
            with dsl.Else(name="incremental-update"):
                updated = ops.update(
                    dataset=ingested.outputs["dataset"],
                    features=features.outputs["features"],
                    config_yaml=config_yaml,
                    base=update_base,
                )
                updated.set_display_name("update")
                in_cluster(updated, cfg.pipeline, "update")
                evaluate_and_deploy(updated.outputs["model"])

    return caprank_training


def compile_pipeline(cfg: CaprankConfig, path: str | Path | None = None) -> Path:
    """Compile to ``compiled_path(cfg)`` (or ``path``)."""
    out = Path(path) if path else compiled_path(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), package_path=str(out))
    return out
