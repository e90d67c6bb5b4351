"""Config layering: defaults < file < env < --set, with errors that name the key."""

from __future__ import annotations

import pytest

from caprank.config import describe_allowed, leaf_keys, resolve
from caprank.errors import ConfigError


def test_defaults_and_sources():
    r = resolve(environ={})
    assert r.config.training.per.alpha == 0.6
    assert r.config.embedding.node2vec.walk_length == 15
    assert r.source_of("training.lr") == "default"
    assert len(r.rows()) == len(leaf_keys(type(r.config)))


def test_layer_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("training:\n  lr: 0.01\n  batch_size: 32\n  per:\n    alpha: 0.5\n")
    env = {"CAPRANK_TRAINING__BATCH_SIZE": "64", "CAPRANK_TRAINING__PER__ALPHA": "0.7"}
    r = resolve(f, environ=env, overrides=["training.per.alpha=0.8"])
    assert r.config.training.lr == 0.01
    assert r.source_of("training.lr") == f"file {f}"
    assert r.config.training.batch_size == 64
    assert r.source_of("training.batch_size") == "env CAPRANK_TRAINING__BATCH_SIZE"
    assert r.config.training.per.alpha == 0.8
    assert r.source_of("training.per.alpha") == "--set training.per.alpha"


def test_config_file_from_env(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  seed: 5\n")
    assert resolve(environ={"CAPRANK_CONFIG": str(f)}).config.data.seed == 5


def test_extra_yaml_between_file_and_env():
    r = resolve(
        environ={"CAPRANK_DATA__SEED": "9"},
        extra_yaml="data: {seed: 3}\nfeatures: {feature_version: 2}",
    )
    assert r.config.data.seed == 9
    assert r.config.features.feature_version == 2


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("training.bogus=1", "training.bogus", "unknown key"),
        ("nosuch.x=1", "nosuch", "unknown key"),
        ("training.per.alpha=1.5", "training.per.alpha", "<= 1.0"),
        ("training.batch_size=abc", "training.batch_size", "int"),
        ("data.simulate.policy=greedy", "data.simulate.policy", "'bm25' | 'popularity'"),
        ("training=3", "training", "section"),
    ],
)
def test_bad_values_name_key_and_allowed(override, key, fragment):
    with pytest.raises(ConfigError) as err:
        resolve(environ={}, overrides=[override])
    assert err.value.key == key
    assert fragment in str(err.value)


def test_unknown_env_key_is_an_error():
    with pytest.raises(ConfigError, match=r"training\.nope"):
        resolve(environ={"CAPRANK_TRAINING__NOPE": "1"})


def test_secret_env_vars_are_not_config_overrides():
    cfg = resolve(environ={"CAPRANK_SECRET_ID_HASH_KEY": "s3cret"}).config
    assert cfg.privacy.id_hash_key_env == "CAPRANK_SECRET_ID_HASH_KEY"


def test_env_variables_that_name_no_field_are_not_config():
    """The admin token's variable (and other CAPRANK_ names without ``__``) is no key."""
    env = {"CAPRANK_ADMIN_TOKEN": "s3cret", "CAPRANK_GIT_REVISION": "abc"}
    assert resolve(environ=env).config.serving.admin_token_env == "CAPRANK_ADMIN_TOKEN"


def test_bad_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve(f, environ={})
    f.write_text("serving:\n  port: 70000\n")
    with pytest.raises(ConfigError, match=r"serving.port.*<= 65535"):
        resolve(f, environ={})
    with pytest.raises(ConfigError, match="not found"):
        resolve(tmp_path / "missing.yaml", environ={})


def test_describe_allowed():
    assert describe_allowed("training.per.alpha") == "float, >= 0.0, <= 1.0"
    assert "'split'" in describe_allowed("canary.mode")


def test_derived_locations(tmp_path):
    cfg = resolve(environ={}, overrides=[f"paths.home={tmp_path}"]).config
    assert cfg.mlflow_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cfg.feedback_dir() == tmp_path / "feedback"


@pytest.mark.parametrize(
    "retired",
    [
        "paths.feature_repo=x",  # unused
        "evaluation.ope_temperature=0.1",  # unused
        "privacy.opt_out_enabled=false",  # an empty opt_out_users list is the off switch
        "monitoring.retrain_on_drift=false",  # retrain_policy: never
        "monitoring.max_staleness_hours=1",  # features.max_staleness_hours
        "serving.max_feature_staleness_hours=1",  # features.max_staleness_hours
        "services.model_name=x",  # services.registered_model
        "serving.model_name=x",  # serving.endpoint_name
        "evaluation.ks=[1]",  # evaluation.cutoffs
    ],
)
def test_retired_keys_are_errors(retired):
    with pytest.raises(ConfigError, match="unknown key"):
        resolve(environ={}, overrides=[retired])


def test_primary_metric_needs_its_cutoff():
    assert resolve(environ={}, overrides=["evaluation.cutoffs=[1, 3]"]).config  # mrr: no cutoff
    with pytest.raises(ConfigError, match="cutoffs"):
        resolve(
            environ={},
            overrides=["evaluation.primary_metric=ndcg@10", "evaluation.cutoffs=[1]"],
        )
