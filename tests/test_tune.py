"""Automatic tuning (caprank.training.tune): a seeded study, validation only, pruning,
budgets, and the best trial's settings through MLflow into the train stage."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from caprank.config import load_config
from caprank.errors import ConfigError, DataError
from caprank.training import tune as tune_mod
from caprank.training.tune import pseudo_cold, run_study
from tests.train_fixtures import tiny_prepared, tiny_training_cfg

torch.set_num_threads(1)  # the shared 2-core machine

SPACE = {
    "lr": {"low": 1e-5, "high": 1.0, "log": True},
    "temperature": {"low": 0.01, "high": 10.0, "log": True},
}
GOOD = [{"lr": 1e-4, "temperature": 0.05}, {"lr": 1e-5, "temperature": 10.0}]
BAD = {"lr": 1.0, "temperature": 0.01}  # Adam at lr 1: the ranking falls apart


def study_cfg(tiny_cfg, **tuning):
    cfg = tiny_training_cfg(tiny_cfg, max_steps=20, eval_every=10)
    cfg.tuning.space = SPACE
    cfg.tuning.startup_trials = 2
    for key, value in tuning.items():
        setattr(cfg.tuning, key, value)
    return cfg


def prepared_datasets():
    """A ``make_prep`` (fake vectors) that remembers every dataset it prepared."""
    seen = []

    def make_prep(ds, cfg):
        seen.append(ds)
        return tiny_prepared(ds, cfg)

    return make_prep, seen


def test_study_is_deterministic_for_a_seed(tiny_cfg, tiny_dataset):
    cfg = study_cfg(tiny_cfg)

    def once():
        r = run_study(tiny_dataset, cfg, prepared_datasets()[0], trials=4, minutes=10)
        return [(t["state"], t["params"], t["value"], t["intermediate"]) for t in r.trials]

    first = once()
    assert len(first) == 4 and first == once()
    # the first trial is the config's own values; the sampler's draws follow the seed
    assert first[0][1] == {"lr": cfg.training.lr, "temperature": cfg.training.temperature}
    cfg.tuning.seed = 1
    other = run_study(tiny_dataset, cfg, prepared_datasets()[0], trials=4, minutes=10)
    assert [t["params"] for t in other.trials][1:] != [p for _, p, _, _ in first][1:]


def test_objective_never_reads_the_test_split(tiny_cfg, tiny_dataset):
    """Warm: every trial is prepared from the dataset without its test labels, and test
    labels that could not even be read (unknown intents) change nothing."""
    cfg = study_cfg(tiny_cfg)
    make_prep, seen = prepared_datasets()
    clean = run_study(tiny_dataset, cfg, make_prep, trials=2, minutes=10)
    assert seen and all("test" not in ds.labels["split"].to_pylist() for ds in seen)
    assert "test" in tiny_dataset.labels["split"].to_pylist()  # there was one to drop

    labels = tiny_dataset.labels
    is_test = np.asarray(labels["split"].to_pylist()) == "test"
    ids = np.where(is_test, "no-such-intent", np.asarray(labels["intent_id"].to_pylist()))
    poisoned = dataclasses.replace(
        tiny_dataset,
        labels=labels.set_column(
            labels.schema.get_field_index("intent_id"), "intent_id", pa.array(ids.tolist())
        ),
    )
    again = run_study(poisoned, cfg, prepared_datasets()[0], trials=2, minutes=10)
    assert [t["value"] for t in again.trials] == [t["value"] for t in clean.trials]
    assert clean.valid_intents > 0


def test_cold_tunes_on_a_pseudo_cold_split_of_train(tiny_cfg, tiny_dataset):
    cfg = study_cfg(tiny_cfg)
    make_prep, seen = prepared_datasets()
    result = run_study(tiny_dataset, cfg, make_prep, trials=1, minutes=10, setting="cold")
    ds = seen[0]
    held = set(ds.manifest["pseudo_cold_held_out"])
    split = np.asarray(ds.labels["split"].to_pylist())
    caps = np.asarray(ds.labels["capability_id"].to_pylist())
    assert set(split) == {"train", "valid"}  # real valid and test labels dropped
    assert set(caps[split == "valid"]) == held  # validation: the held-out capabilities
    assert not held & set(caps[split == "train"])  # never trained on
    assert not held & set(ds.interactions["selected_capability"].to_pylist())
    orig = tiny_dataset.labels
    orig_train = np.asarray(orig["split"].to_pylist()) == "train"
    assert len(ds.labels) == int(orig_train.sum())  # exactly the train labels, re-split
    assert result.valid_intents > 0
    # the same seeded carve every time; a labels-free dataset cannot be carved
    again = pseudo_cold(tiny_dataset, cfg.tuning.cold_fraction, cfg.tuning.seed)
    assert again.manifest["pseudo_cold_held_out"] == ds.manifest["pseudo_cold_held_out"]
    empty = dataclasses.replace(tiny_dataset, labels=tiny_dataset.labels.slice(0, 0))
    with pytest.raises(DataError, match="needs train labels"):
        pseudo_cold(empty, 0.2, 0)


@pytest.mark.parametrize("pruner", ["median", "halving"])
def test_a_bad_trial_is_pruned_at_its_first_validation(tiny_cfg, tiny_dataset, pruner):
    # successive halving promotes everyone until a rung has more trials than its
    # reduction factor (4): it needs more finished trials to compare with
    more = [{"lr": 3e-5, "temperature": 0.05}, {"lr": 3e-4, "temperature": 0.05}]
    goods = GOOD if pruner == "median" else [*GOOD, *more]
    cfg = study_cfg(tiny_cfg, start_from_config=False, pruner=pruner, startup_trials=len(goods))

    def study():
        return run_study(
            tiny_dataset, cfg, prepared_datasets()[0], trials=len(goods) + 1, minutes=10,
            setting="cold", enqueue=[*goods, BAD],
        )  # fmt: skip

    result = study()
    good, bad = result.trials[:-1], result.trials[-1]
    assert [t["state"] for t in good] == ["COMPLETE"] * len(goods)
    assert bad["params"] == BAD and bad["state"] == "PRUNED"
    assert list(bad["intermediate"]) == ["10"]  # stopped at its first validation
    assert bad["value"] < min(t["intermediate"]["10"] for t in good)
    assert result.best_trial < len(goods) and result.count("PRUNED") == 1
    cfg.tuning.pruner = "none"  # the same trial runs to the end without a pruner
    assert [t["state"] for t in study().trials] == ["COMPLETE"] * (len(goods) + 1)


def test_budget_in_trials_and_minutes(tiny_cfg, tiny_dataset, monkeypatch):
    cfg = study_cfg(tiny_cfg, pruner="none")
    assert len(run_study(tiny_dataset, cfg, prepared_datasets()[0], trials=3).trials) == 3

    clock = [0.0]  # each preparation takes 40 s of a 1-minute budget
    monkeypatch.setattr(tune_mod.time, "monotonic", lambda: clock[0])
    make_prep, seen = prepared_datasets()

    def slow_prep(ds, c):
        clock[0] += 40.0
        return make_prep(ds, c)

    result = run_study(tiny_dataset, cfg, slow_prep, trials=50, minutes=1.0)
    assert [t["state"] for t in result.trials] == ["COMPLETE", "PRUNED"]
    assert result.trials[1]["stopped"] == "budget" and len(seen) == 2
    cfg.tuning.minutes = 0.5  # the very first trial runs out: no result
    with pytest.raises(DataError, match="no trial completed"):
        run_study(tiny_dataset, cfg, slow_prep, trials=50)


def test_tuning_space_accepts_numeric_training_settings_only():
    cfg = load_config(overrides=["tuning.space={per.alpha: {low: 0.1, high: 0.9}}"])
    assert cfg.tuning.space["per.alpha"].high == 0.9
    for bad in (
        "tuning.space={value_detach: {low: 0, high: 1}}",
        "tuning.space={nope: {low: 0, high: 1}}",
        "tuning.space={lr: {low: 0, high: 1, log: true}}",
        "tuning.space={lr: {low: 1, high: 0.5}}",
    ):
        with pytest.raises(ConfigError, match=r"tuning\.space"):
            load_config(overrides=[bad])


def test_the_scheduled_run_carries_tuned_from_to_its_train_step():
    """`caprank --set training.tuned_from=latest pipeline schedule`: the run's
    config_yaml holds it, and the train step resolves it from there."""
    from pipelines.submit import run_config_yaml

    text = run_config_yaml(load_config(overrides=["training.tuned_from=latest"]))[0]
    assert load_config(extra_yaml=text).training.tuned_from == "latest"
    assert load_config().training.tuned_from == ""  # off unless asked


@pytest.mark.slow
def test_best_config_round_trips_through_mlflow_into_the_train_stage(
    tiny_cfg, tiny_dataset_dir, tmp_path, capsys
):
    """`tune` records the best trial in MLflow (SQLite under tmp); `training.tuned_from`
    (latest, or the run id) makes the train stage apply it and say so in its run."""
    from caprank.cli import main
    from caprank.config import dump_yaml
    from caprank.data.dataset import load_dataset
    from caprank.embeddings.stage import embed
    from caprank.registry import RegistryError, client, tuned_overrides
    from caprank.training.stage import apply_tuned, train
    from caprank.training.tune import tune

    cfg = tiny_training_cfg(tiny_cfg, max_steps=10, eval_every=5)
    cfg.paths.home = tmp_path / "home"
    cfg.tuning.space = {"lr": SPACE["lr"], "max_steps": {"low": 6, "high": 14}}
    ds = load_dataset(tiny_dataset_dir)
    with pytest.raises(RegistryError, match="no finished tuning run"):
        apply_tuned(cfg.model_copy(update={"training": cfg.training.model_copy(
            update={"tuned_from": "latest"})}))  # fmt: skip
    embed(ds, cfg, tmp_path / "emb")
    result = tune(ds, cfg, tmp_path / "emb", None, tmp_path / "tune", trials=3, minutes=10)
    assert result.run_id and (tmp_path / "tune" / "tuning.json").is_file()
    assert set(result.overrides) == {"training.lr", "training.max_steps"}
    run_id, overrides = tuned_overrides(cfg, "latest")
    assert run_id == result.run_id and overrides == result.overrides
    assert tuned_overrides(cfg, run_id)[1] == overrides

    for ref in ("latest", run_id):
        tuned = cfg.model_copy(deep=True)
        tuned.training.tuned_from = ref
        applied, source = apply_tuned(tuned)
        assert source == run_id
        assert applied.training.lr == overrides["training.lr"]
        assert applied.training.max_steps == overrides["training.max_steps"]

    # the CLI: the same study, cold, untracked (so "latest" stays the run above)
    (tmp_path / "cfg.yaml").write_text(dump_yaml(cfg))
    argv = ["--config", str(tmp_path / "cfg.yaml"), "tune", "--data", str(tiny_dataset_dir)]
    argv += ["--embeddings", str(tmp_path / "emb"), "--trials", "2", "--minutes", "5"]
    argv += ["--setting", "cold", "--no-track", "--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["setting"] == "cold" and printed["trials"] == 2 and printed["run_id"] is None
    assert (tmp_path / "cli" / "tuning.json").is_file()
    assert tuned_overrides(cfg, "latest")[0] == run_id

    cfg.training.tuned_from = "latest"
    trained = train(ds, cfg, tmp_path / "emb", tmp_path / "model", resume=False)
    assert trained.fit.steps <= overrides["training.max_steps"]
    # the train stage reproduces the best trial: same data, settings and seed
    assert trained.fit.best_valid_mrr == pytest.approx(result.best_value, abs=1e-9)
    assert trained.summary["tuned_from"] == run_id
    run = client(cfg).get_run(trained.run_id).data
    assert run.tags["tuned_from_run"] == run_id
    assert float(run.params["training.lr"]) == overrides["training.lr"]
    assert int(run.params["training.max_steps"]) == overrides["training.max_steps"]
    with pytest.raises(RegistryError, match="not a tuning run"):
        tuned_overrides(cfg, trained.run_id)
