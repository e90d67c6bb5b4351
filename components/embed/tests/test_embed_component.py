"""embed through ``python_func``: unit-norm hybrid vectors, on disk and in Feast (after
build_features, as in the DAG)."""

from kfp.dsl import Dataset, Markdown, Metrics

from caprank.config import dump_yaml
from caprank.data.dataset import load_dataset
from caprank.features.stage import build_and_publish
from caprank.features.store import open_store
from components.testing import artifact, component, isolated


def test_embed_writes_and_publishes_vectors(tiny_cfg, tiny_dataset_dir, tmp_path):
    cfg = isolated(tiny_cfg, tmp_path / "home")
    ds = load_dataset(tiny_dataset_dir)
    build_and_publish(ds, cfg, tmp_path / "features")  # embed publishes beside these
    embeddings = artifact(Dataset, tmp_path / "embeddings")
    metrics = artifact(Metrics, tmp_path / "m.json")
    component(cfg, "embed").python_func(
        dataset=artifact(Dataset, tiny_dataset_dir),
        features=artifact(Dataset, tmp_path / "features"),
        config_yaml=dump_yaml(cfg),
        embeddings=embeddings,
        summary=artifact(Markdown, tmp_path / "embed.md"),
        metrics=metrics,
    )
    assert metrics.metadata["capabilities"] == float(ds.capabilities.num_rows)
    assert embeddings.metadata["text_model"] == cfg.embedding.text_model
    some = ds.capabilities["capability_id"][0].as_py()
    online = (
        open_store(cfg)
        .get_online_features(
            features=["capability_embeddings:hybrid_embedding"],
            entity_rows=[{"capability_id": some}],
        )
        .to_dict()
    )
    vec = online["hybrid_embedding"][0]
    assert vec is not None and abs(sum(v * v for v in vec) - 1.0) < 1e-3
    assert "Feast views" in (tmp_path / "embed.md").read_text()
