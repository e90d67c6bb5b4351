"""build_features through ``python_func``: snapshots on disk and in the Feast online store."""

from pathlib import Path

from kfp.dsl import Dataset, Markdown, Metrics

from caprank.config import dump_yaml
from caprank.data.dataset import load_dataset
from caprank.features.store import open_store
from components.testing import artifact, component, isolated


def test_build_features_writes_and_publishes(tiny_cfg, tiny_dataset_dir, tmp_path):
    cfg = isolated(tiny_cfg, tmp_path / "home")
    features = artifact(Dataset, tmp_path / "features")
    metrics = artifact(Metrics, tmp_path / "m.json")
    component(cfg, "build_features").python_func(
        dataset=artifact(Dataset, tiny_dataset_dir),
        config_yaml=dump_yaml(cfg),
        features=features,
        summary=artifact(Markdown, tmp_path / "features.md"),
        metrics=metrics,
    )
    assert (Path(features.path) / "capability_features.parquet").is_file()
    assert features.metadata["input_hash"] and metrics.metadata["rows"] > 0
    some = load_dataset(tiny_dataset_dir).capabilities["capability_id"][0].as_py()
    online = (
        open_store(cfg)
        .get_online_features(
            features=["capability_features:tool_count"], entity_rows=[{"capability_id": some}]
        )
        .to_dict()
    )
    assert online["tool_count"][0] >= 1
