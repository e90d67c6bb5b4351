"""Hyperparameter search over ``training`` (`caprank tune`): Optuna, on validation only.

A study draws ``training`` settings from ``tuning.space`` with a seeded TPE sampler,
trains each trial as the train stage does (same preparation, model and trainer, no
checkpoints, no bundle) and scores it by the trainer's best validation MRR: the number
the train stage keeps its best state by. Every periodic validation is reported to the
pruner (``tuning.pruner``), which stops a trial that trails the earlier ones at the same
step. The budget is ``tuning.trials`` and ``tuning.minutes``: no trial starts after
the deadline and a running one stops (pruned) at its next validation.

Data: the test labels are dropped before anything is prepared (``objective_dataset``),
so no trial can read them. ``setting="cold"`` tunes for capabilities never seen in
training on a pseudo-cold split carved from train (``pseudo_cold``): a seeded share of
the training capabilities, whose train labels become the validation, the real valid
(warm) labels dropped too; with ``embedding.finetune.enabled`` the catalog is embedded
again with an encoder fine-tuned on that split's train labels alone
(``pseudo_cold_embeddings``), so the held-out capabilities stay unseen by the encoder too.
The best trial's settings are a dotted-key override dict
(``{"training.lr": 0.003}``) that ``caprank.registry.log_tuning`` records and
``training.tuned_from`` applies to later training runs.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import CaprankConfig, SearchRange, tunable_type, with_overrides
from caprank.data.dataset import Dataset
from caprank.errors import DataError
from caprank.files import atomic_write_json
from caprank.training.stage import PrepareFn, new_model, read_features
from caprank.training.trainer import Trainer

Setting = Literal["warm", "cold"]
SETTINGS: tuple[str, ...] = ("warm", "cold")
RESULT_FILE = "tuning.json"


@dataclass
class TuneResult:
    setting: str
    best_value: float  # validation MRR of the best trial
    best_trial: int
    overrides: dict[str, Any]  # {"training.lr": 0.003, ...}: what tuned_from applies
    trials: list[dict]  # number, state, value, params, last_step, seconds
    seconds: float
    budget: dict[str, float]  # trials and minutes
    valid_intents: int  # what the objective scores on
    run_id: str | None = None
    extra: dict = field(default_factory=dict)

    def count(self, state: str) -> int:
        return sum(t["state"] == state for t in self.trials)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_markdown(self) -> str:
        lines = [
            f"## Tune ({self.setting})\n",
            f"{len(self.trials)} trials ({self.count('COMPLETE')} complete, "
            f"{self.count('PRUNED')} pruned) in {self.seconds:.1f} s; budget "
            f"{int(self.budget['trials'])} trials / {self.budget['minutes']:g} min. Best: trial "
            f"{self.best_trial}, validation MRR {self.best_value:.4f} on "
            f"{self.valid_intents} intents.  ",
        ]
        if self.run_id:
            lines.append(f"MLflow tuning run `{self.run_id}` (`training.tuned_from`).  ")
        lines.append("\n| setting | best |\n| --- | ---: |")
        lines += [f"| `{k}` | {v:.6g} |" for k, v in sorted(self.overrides.items())]
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- data


def _label_splits(ds: Dataset) -> np.ndarray:
    return np.asarray(ds.labels["split"].to_pylist(), dtype=object)


def without_test(ds: Dataset) -> Dataset:
    """``ds`` without its test labels: what every trial is prepared from."""
    keep = pc.not_equal(ds.labels["split"], "test")
    return dataclasses.replace(ds, labels=ds.labels.filter(keep))


def pseudo_cold(
    ds: Dataset, fraction: float, seed: int, held_split: Literal["valid", "test"] = "valid"
) -> Dataset:
    """A cold split carved from ``ds``'s train labels: a seeded ``fraction`` of the
    capabilities with train labels is held out, their train labels become
    ``held_split`` and their logged executions are dropped (they stay unseen). The real
    test labels are dropped, never read; with ``held_split="valid"`` the real (warm)
    valid labels are dropped too, so validation is the held-out capabilities alone.
    The held-out ids are in ``manifest["pseudo_cold_held_out"]``."""
    drop = {"test", "valid"} if held_split == "valid" else {"test"}
    labels = ds.labels.filter(pa.array([s not in drop for s in _label_splits(ds)], pa.bool_()))
    split = np.asarray(labels["split"].to_pylist(), dtype=object)
    caps = np.asarray(labels["capability_id"].to_pylist(), dtype=object)
    order = int if all(str(c).isdigit() for c in caps) else str  # ToolLens ids: numbers
    train_caps = sorted(set(caps[split == "train"]), key=order)
    if len(train_caps) < 2:
        raise DataError("labels.parquet", "a pseudo-cold split needs train labels", field="split")
    rng = np.random.default_rng(seed)
    n_held = min(max(1, round(fraction * len(train_caps))), len(train_caps) - 1)
    held = set(rng.choice(train_caps, size=n_held, replace=False).tolist())
    is_held = (split == "train") & np.isin(caps, list(held))
    new = np.where(is_held, held_split, split)
    labels = labels.set_column(
        labels.schema.get_field_index("split"), "split", pa.array(new.tolist(), pa.string())
    )
    events = ds.interactions
    if events.num_rows:
        chosen = events["selected_capability"].to_pylist()
        events = events.filter(pa.array([c not in held for c in chosen], pa.bool_()))
    manifest = {**ds.manifest, "pseudo_cold_held_out": sorted(held, key=order)}
    return dataclasses.replace(ds, labels=labels, interactions=events, manifest=manifest)


def objective_dataset(ds: Dataset, cfg: CaprankConfig, setting: str) -> Dataset:
    """What the trials train and validate on: ``ds`` without test labels (warm), or its
    pseudo-cold split (cold, ``tuning.cold_fraction``, seeded by ``tuning.seed``)."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, not {setting!r}")
    if setting == "cold":
        return pseudo_cold(ds, cfg.tuning.cold_fraction, cfg.tuning.seed)
    return without_test(ds)


# ---------------------------------------------------------------------- space


def _clip(value: float, r: SearchRange) -> float:
    return float(min(max(value, r.low), r.high))


def config_point(cfg: CaprankConfig, space: Mapping[str, SearchRange]) -> dict[str, Any]:
    """The config's own values of the searched settings, clipped into their ranges (the
    first trial with ``tuning.start_from_config``)."""
    tc = cfg.training.model_dump()
    out: dict[str, Any] = {}
    for key, r in space.items():
        node: Any = tc
        for part in key.split("."):
            node = node[part]
        v = _clip(float(node), r)
        out[key] = round(v) if tunable_type(key) is int else v
    return out


def suggest(trial, space: Mapping[str, SearchRange]) -> dict[str, Any]:
    """One trial's draw: ``{training key: value}``; int settings draw ints."""
    out: dict[str, Any] = {}
    for key, r in space.items():
        if tunable_type(key) is int:
            lo, hi = int(np.ceil(r.low)), int(np.floor(r.high))
            out[key] = trial.suggest_int(key, lo, hi, log=r.log)
        else:
            out[key] = trial.suggest_float(key, r.low, r.high, log=r.log)
    return out


def as_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """Trial params (keys below ``training``) as config overrides (``training.<key>``)."""
    return {f"training.{k}": v for k, v in params.items()}


def _pruner(cfg: CaprankConfig):
    import optuna

    t = cfg.tuning
    if t.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=t.startup_trials, n_warmup_steps=t.warmup_steps
        )
    if t.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, t.warmup_steps))
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------------- study


def run_study(
    ds: Dataset,
    cfg: CaprankConfig,
    make_prep: PrepareFn,
    *,
    trials: int | None = None,
    minutes: float | None = None,
    setting: str = "warm",
    enqueue: Sequence[Mapping[str, Any]] = (),
) -> TuneResult:
    """The study on ``ds`` (see module doc); ``make_prep`` prepares a dataset under a
    config (``stage.catalog_preparer``). ``trials``/``minutes`` default to ``tuning.*``;
    ``enqueue``: points (``{training key: value}``) tried first, after the config's own."""
    import optuna
    from optuna.trial import TrialState

    tcfg = cfg.tuning
    trials = tcfg.trials if trials is None else trials
    minutes = tcfg.minutes if minutes is None else minutes
    space = tcfg.space
    data = objective_dataset(ds, cfg, setting)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=tcfg.seed, n_startup_trials=max(1, tcfg.startup_trials)
    )
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=_pruner(cfg))
    points = ([config_point(cfg, space)] if tcfg.start_from_config else []) + list(enqueue)
    for point in points:
        study.enqueue_trial(dict(point), skip_if_exists=True)

    start = time.monotonic()
    deadline = start + 60.0 * minutes
    seen: dict[str, int] = {}

    def objective(trial) -> float:
        params = suggest(trial, space)
        trial_cfg = with_overrides(cfg, as_overrides(params))
        prep = make_prep(data, trial_cfg)
        seen["valid_intents"] = len(prep.data.valid_intents)
        if seen["valid_intents"] == 0:
            raise DataError("<dataset>", "tuning needs validation intents; there are none")

        def report(step: int, mrr: float) -> None:
            trial.set_user_attr("last_step", step)
            trial.report(mrr, step)
            if time.monotonic() > deadline:
                trial.set_user_attr("stopped", "budget")
                raise optuna.TrialPruned()
            prune = trial.should_prune()  # asked always: halving records its rungs here
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if prune and len(complete) >= tcfg.startup_trials:
                raise optuna.TrialPruned()  # any pruner: none before startup_trials complete

        t0 = time.monotonic()
        try:
            model = new_model(prep, trial_cfg)
            fit = Trainer(model, prep.data, trial_cfg.training, on_validate=report).fit()
        finally:
            trial.set_user_attr("seconds", round(time.monotonic() - t0, 3))
        trial.set_user_attr("last_step", fit.steps)
        return fit.best_valid_mrr

    def out_of_time(study, _trial) -> None:
        if time.monotonic() > deadline:
            study.stop()

    study.optimize(objective, n_trials=trials, callbacks=[out_of_time])
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not done:
        raise DataError("<tuning>", f"no trial completed within {minutes:g} min")
    best = study.best_trial
    return TuneResult(
        setting=setting,
        best_value=float(best.value),
        best_trial=best.number,
        overrides=as_overrides(best.params),
        trials=[
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": dict(t.params),
                "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                **t.user_attrs,
            }
            for t in study.trials
        ],
        seconds=round(time.monotonic() - start, 3),
        budget={"trials": float(trials), "minutes": float(minutes)},
        valid_intents=seen.get("valid_intents", 0),
    )


def tune(
    ds: Dataset,
    cfg: CaprankConfig,
    embeddings_dir: str | Path,
    features_dir: str | Path | None,
    out_dir: str | Path,
    *,
    trials: int | None = None,
    minutes: float | None = None,
    setting: str = "warm",
    track: bool = True,
) -> TuneResult:
    """Search ``training`` settings for ``ds`` with the embed stage's vectors (and the
    features stage's output when given); ``<out_dir>/tuning.json`` holds the result and,
    with ``track``, the study is recorded in MLflow (``caprank.registry.log_tuning``)."""
    from caprank.training.stage import catalog_preparer

    features = read_features(features_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tune-", dir=out_dir) as scratch:
        emb_dir, encoder = Path(embeddings_dir), None
        if setting == "cold" and cfg.embedding.finetune.enabled:
            emb_dir, encoder = pseudo_cold_embeddings(ds, cfg, Path(scratch) / "embeddings")
        make_prep, _ = catalog_preparer(ds, cfg, emb_dir, features)
        result = run_study(ds, cfg, make_prep, trials=trials, minutes=minutes, setting=setting)
    if encoder is not None:
        result.extra["pseudo_cold_encoder"] = encoder
    if track:
        result.run_id = record(cfg, result, ds)
    atomic_write_json(out_dir / RESULT_FILE, result.to_dict())
    return result


def pseudo_cold_embeddings(ds: Dataset, cfg: CaprankConfig, out_dir: Path) -> tuple[Path, dict]:
    """The catalog embedded for cold tuning with fine-tuning on: the embed stage's encoder
    was fine-tuned on every train label, the pseudo-cold capabilities' too, which would make
    them look seen and the objective optimistic; this one is fine-tuned on the pseudo-cold
    split's train labels alone. (The output folder, what its fine-tuning was.)"""
    from caprank.embeddings.stage import embed

    result = embed(objective_dataset(ds, cfg, "cold"), cfg, out_dir)
    return out_dir, dict(result.summary.get("finetune") or {})


def record(cfg: CaprankConfig, result: TuneResult, ds: Dataset | None = None) -> str:
    """Log the study to MLflow as a tuning run; its id."""
    from caprank import __version__
    from caprank.data.dataset import dataset_hash
    from caprank.registry import git_revision, log_tuning

    t = cfg.tuning
    params: dict[str, Any] = {
        "setting": result.setting,
        "trials": int(result.budget["trials"]),
        "minutes": result.budget["minutes"],
        "seed": t.seed,
        "pruner": t.pruner,
        "objective": "validation MRR (best over the trainer's validations)",
    }
    params.update({f"space.{k}": r.model_dump() for k, r in t.space.items()})
    params.update({f"best.{k}": v for k, v in result.overrides.items()})
    root = None if ds is None else ds.root
    tags = {
        "caprank.tuning.setting": result.setting,
        "caprank.tuning.completed": str(result.count("COMPLETE")),
        "caprank.tuning.pruned": str(result.count("PRUNED")),
        "dataset_hash": dataset_hash(root) if root is not None else "in-memory",
        "git_revision": git_revision(),
        "caprank_version": __version__,
    }
    return log_tuning(
        cfg,
        overrides=result.overrides,
        value=result.best_value,
        trials=result.trials,
        params=params,
        tags=tags,
        run_name=f"tune-{result.setting}",
    )
