"""What every pipeline pod gets from the cluster: service endpoints, credentials, resources.

Each step runs in its own pod, so nothing it needs may come from another step's disk.
The run's config travels as the ``config_yaml`` parameter; the endpoints and the
credentials come from a ConfigMap and a Secret (``pipeline.config_map`` /
``pipeline.secret``) attached to every task as ``CAPRANK_SERVICES__*`` (and ``AWS_*``)
env vars, which outrank ``config_yaml`` in the config layers. CPU and memory come from
``pipeline.resources.<step>``; train's accelerator and pool stay in ``pipelines.gpu``.
"""

from __future__ import annotations

from kfp import dsl, kubernetes

from caprank.config import PipelineConfig


def with_cluster_env(task: dsl.PipelineTask, cfg: PipelineConfig) -> dsl.PipelineTask:
    """Attach ``cfg.config_map_keys`` and ``cfg.secret_keys`` as same-named env vars.

    Not optional: a pod whose ConfigMap or Secret is missing does not start, rather than
    running against its own embedded SQLite stores.
    """
    if cfg.config_map_keys:
        kubernetes.use_config_map_as_env(
            task, cfg.config_map, {key: key for key in cfg.config_map_keys}
        )
    if cfg.secret_keys:
        kubernetes.use_secret_as_env(task, cfg.secret, {key: key for key in cfg.secret_keys})
    return task


def with_resources(task: dsl.PipelineTask, cfg: PipelineConfig, step: str) -> dsl.PipelineTask:
    """CPU/memory requests and limits of ``step`` (a key of ``pipeline.resources``)."""
    res = cfg.resources[step]
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    return task


def in_cluster(task: dsl.PipelineTask, cfg: PipelineConfig, step: str) -> dsl.PipelineTask:
    """A task as it must run in a pod: env from the cluster, resources from the config,
    and no caching (every step reads data or services that change between runs)."""
    with_cluster_env(task, cfg)
    with_resources(task, cfg, step)
    task.set_caching_options(False)
    return task
