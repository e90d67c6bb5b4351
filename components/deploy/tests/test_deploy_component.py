"""deploy through ``python_func``: it rolls out exactly the version ``registered`` names,
and refuses one that is not a registry version before touching any traffic.

The rollout scenarios through this component (promote and set ``production``, roll back,
resume after a crash, cluster mode against a fake KServe API) are in
tests/test_deploy_stage.py, beside the MLflow store and canary settings they share."""

import pytest
from kfp.dsl import Markdown, Metrics, Model

from caprank.config import dump_yaml
from caprank.registry import RegistryError
from components.testing import artifact, component, isolated


@pytest.mark.parametrize("version", ["latest", ""])
def test_deploy_refuses_what_is_not_a_registry_version(tiny_cfg, tmp_path, version):
    cfg = isolated(tiny_cfg, tmp_path / "home")
    cfg.canary.target = "local"
    with pytest.raises(RegistryError, match="must be a number"):
        component(cfg, "deploy").python_func(
            model=artifact(Model, tmp_path / "model"),
            registered=artifact(Model, tmp_path / "registered", version=version),
            config_yaml=dump_yaml(cfg),
            summary=artifact(Markdown, tmp_path / "summary.md"),
            metrics=artifact(Metrics, tmp_path / "m.json"),
        )
    assert not (tmp_path / "summary.md").exists()
