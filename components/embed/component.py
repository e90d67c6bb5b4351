"""Embed: BGE/MiniLM text + Node2Vec graph + hybrid vectors, validated, into Feast."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Output


def embed(
    dataset: Input[Dataset],
    features: Input[Dataset],
    config_yaml: str,
    embeddings: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Embed tools and capabilities, validate, write, and publish them as Feast features.

    Args:
        dataset: The ingested dataset directory.
        features: The build_features step's snapshots, published to Feast with the vectors.
        config_yaml: The run's config overrides as YAML; empty: the defaults.
        embeddings: Out: text, Node2Vec and hybrid vectors, and the fine-tuned encoder
            (``caprank-ft-<version>/``) when ``embedding.finetune.enabled``; metadata
            ``text_model`` (the encoder's id).
        summary: Out: counts, models and the Feast views, as Markdown.
        metrics: Out: ``tools``, ``capabilities`` and ``cache_hit_rate``.
    """
    from caprank.data.dataset import load_dataset
    from caprank.embeddings.publish import publish_embeddings
    from caprank.embeddings.stage import embed as run_embed
    from components.runtime import log_metrics, stage_config, write_text

    cfg = stage_config(config_yaml)
    result = run_embed(load_dataset(dataset.path), cfg, embeddings.path)
    published = publish_embeddings(cfg, embeddings.path, features.path)
    text_model = result.summary["text_model"]
    embeddings.metadata["text_model"] = text_model
    finetune = result.summary.get("finetune") or {}
    log_metrics(
        metrics,
        {
            "tools": result.n_tools,
            "capabilities": result.n_capabilities,
            "cache_hit_rate": result.cache_hit_rate,
            **({"finetune_steps": finetune["steps"]} if finetune else {}),
            **({"finetune_seconds": finetune["seconds"]} if finetune else {}),
        },
    )
    text = (
        "## Embed\n\n"
        f"{result.n_tools:,} tools and {result.n_capabilities:,} capabilities embedded with "
        f"`{text_model}` + Node2Vec ({cfg.embedding.node2vec.dim} dims), "
        f"hybrid `{cfg.embedding.hybrid.method}`; text cache hit rate "
        f"{result.cache_hit_rate:.0%}.  \n"
        f"Feast views: {', '.join(published.feature_views)}; online store "
        f"`{published.online_store}`\n"
    )
    write_text(summary.path, text)
    print(text)
