"""Putting a KFP task on the GPU node pool, from the config.

The pool is a node label (``pipeline.gpu_node_selector``) plus a taint that only GPU
work tolerates (``pipeline.gpu_toleration_key``); the accelerator request makes the
device plugin hand the pod a GPU. With ``pipeline.gpu_count: 0`` (kind, no device) the
task still lands on the labelled, tainted pool but asks for no accelerator.
"""

from __future__ import annotations

from kfp import dsl, kubernetes

from caprank.config import PipelineConfig


def on_gpu_pool(task: dsl.PipelineTask, cfg: PipelineConfig) -> dsl.PipelineTask:
    """Apply node selector, toleration and accelerator type/limit to ``task``."""
    for key, value in cfg.gpu_node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    kubernetes.add_toleration(
        task,
        key=cfg.gpu_toleration_key,
        operator="Exists",
        effect=cfg.gpu_toleration_effect,
    )
    if cfg.gpu_count > 0:
        task.set_accelerator_type(cfg.gpu_accelerator)
        task.set_accelerator_limit(cfg.gpu_count)
    return task
