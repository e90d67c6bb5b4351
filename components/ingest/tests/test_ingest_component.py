"""ingest through ``python_func``: the dataset arrives whole, hashed and counted."""

from kfp.dsl import Dataset, Markdown

from caprank.config import dump_yaml
from caprank.data.dataset import load_dataset
from components.testing import artifact, component, isolated


def test_ingest_copies_the_dataset_with_hash_and_rows(tiny_cfg, tiny_dataset_dir, tmp_path):
    cfg = isolated(tiny_cfg, tmp_path / "home")
    dataset = artifact(Dataset, tmp_path / "dataset")
    component(cfg, "ingest").python_func(
        data_uri=str(tiny_dataset_dir),
        config_yaml=dump_yaml(cfg),
        dataset=dataset,
        summary=artifact(Markdown, tmp_path / "ingest.md"),
    )
    got, source = load_dataset(dataset.path), load_dataset(tiny_dataset_dir)
    assert got.interactions.num_rows == source.interactions.num_rows > 0
    assert got.capabilities.num_rows == source.capabilities.num_rows
    assert dataset.metadata["content_hash"] and dataset.metadata["rows"]
    assert (tmp_path / "ingest.md").read_text().strip()
