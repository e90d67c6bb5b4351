"""Ingest: bring the dataset into the run (or synthesize the embedded default)."""

from kfp.dsl import Dataset, Markdown, Output


def ingest(data_uri: str, config_yaml: str, dataset: Output[Dataset], summary: Output[Markdown]):
    """Read the catalog and interaction logs into the run's dataset artifact.

    Args:
        data_uri: Directory (or object-store URI) of the catalog and logs; empty: the
            embedded synthetic default.
        config_yaml: The run's config overrides as YAML; empty: the defaults.
        dataset: Out: the dataset directory; metadata ``content_hash`` and ``rows``.
        summary: Out: a Markdown summary of what was read.
    """
    from caprank.data.ingest import ingest as run_ingest
    from components.runtime import stage_config, write_text

    cfg = stage_config(config_yaml)
    result = run_ingest(cfg, data_uri or None, dataset.path)
    dataset.metadata["content_hash"] = result.content_hash
    dataset.metadata["rows"] = result.rows
    write_text(summary.path, result.to_markdown())
    print(result.to_markdown())
