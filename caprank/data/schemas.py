"""The data contract: one pyarrow schema per table, and the files that hold them.

Every reader and writer in caprank goes through these definitions. A dataset is a
directory holding one Parquet file per table (interactions may instead be a folder of
Parquet parts, which is how the serving feedback path appends to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
OUTCOMES = ("success", "partial", "failure")
SPLITS = ("train", "valid", "test")


def _f(name: str, typ: pa.DataType, nullable: bool, doc: str) -> pa.Field:
    return pa.field(name, typ, nullable=nullable, metadata={"doc": doc})


TOOLS = pa.schema(
    [
        _f("tool_id", pa.string(), False, "unique tool id"),
        _f("name", pa.string(), False, "short tool name"),
        _f("description", pa.string(), False, "what the tool does (free text)"),
        _f("category", pa.string(), False, "tool category (the main one)"),
        _f(
            "categories",
            pa.list_(pa.string()),
            True,
            "every category of a tool in several, the main one included (empty: `category`)",
        ),
    ]
)

CAPABILITIES = pa.schema(
    [
        _f("capability_id", pa.string(), False, "unique capability id"),
        _f("description", pa.string(), False, "what the capability does (free text)"),
        _f("tool_ids", pa.list_(pa.string()), False, "tool ids it composes (>= 1), in order"),
        _f(
            "tool_order_known",
            pa.bool_(),
            True,
            "false: `tool_ids` is a set whose order of use is unknown (empty: known)",
        ),
        _f("created_at", TIMESTAMP, True, "when it entered the catalog (empty: always there)"),
    ]
)

INTENTS = pa.schema(
    [
        _f("intent_id", pa.string(), False, "unique intent id"),
        _f("text", pa.string(), False, "the user's natural-language request"),
    ]
)

LABELS = pa.schema(
    [
        _f("intent_id", pa.string(), False, "intent id"),
        _f("capability_id", pa.string(), False, "a relevant capability"),
        _f("grade", pa.int8(), False, "relevance grade (>= 1; absent pairs are irrelevant)"),
        _f("split", pa.string(), False, "train | valid | test"),
        _f(
            "provenance",
            pa.string(),
            True,
            "where the label came from, e.g. active:<queue>:<annotator> (empty: the source data)",
        ),
    ]
)

INTERACTIONS = pa.schema(
    [
        _f("event_id", pa.string(), False, "unique event id"),
        _f("timestamp", TIMESTAMP, False, "when the capability was selected (UTC)"),
        _f("session_id", pa.string(), False, "session the event belongs to"),
        _f("user_id", pa.string(), True, "pseudonymous user (for opt-out and retention)"),
        _f("intent_id", pa.string(), True, "intent id when known"),
        _f("intent_text", pa.string(), False, "the request text (PII scrubbed when enabled)"),
        _f("context_tools", pa.list_(pa.string()), False, "tools available in the context"),
        _f("candidate_ids", pa.list_(pa.string()), False, "capabilities shown, in rank order"),
        _f("selected_capability", pa.string(), False, "the capability that was executed"),
        _f("rank", pa.int32(), False, "1-based position of the selected one when shown"),
        _f("outcome", pa.string(), False, "success | partial | failure"),
        _f("execution_time_ms", pa.float64(), False, "execution time (>= 0)"),
        _f("feedback", pa.int8(), True, "optional user rating 1-5"),
        _f("propensity", pa.float64(), False, "logging policy's probability of the action, (0, 1]"),
        _f("model_version", pa.string(), True, "ranker (or logging policy) that served it"),
    ]
)


@dataclass(frozen=True)
class TableSpec:
    """A table of the contract: its name, file and schema."""

    name: str
    file: str
    schema: pa.Schema
    key: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return self.schema.names


TABLES: dict[str, TableSpec] = {
    "tools": TableSpec("tools", "tools.parquet", TOOLS, ("tool_id",)),
    "capabilities": TableSpec(
        "capabilities", "capabilities.parquet", CAPABILITIES, ("capability_id",)
    ),
    "intents": TableSpec("intents", "intents.parquet", INTENTS, ("intent_id",)),
    "labels": TableSpec("labels", "labels.parquet", LABELS, ("intent_id", "capability_id")),
    "interactions": TableSpec("interactions", "interactions.parquet", INTERACTIONS, ("event_id",)),
}

# Where interaction parts appended after the fact live (serving feedback, new days).
INTERACTION_PARTS_DIR = "interactions"
MANIFEST_FILE = "manifest.json"


def empty_table(name: str) -> pa.Table:
    return TABLES[name].schema.empty_table()


# --------------------------------------------------------------------------- features

CAPABILITY_FEATURES_FILE = "capability_features.parquet"
DEFAULT_WINDOWS_DAYS = (1, 7, 30)


def usage_count_column(days: int) -> str:
    """Name of the rolling usage count over the last ``days`` days."""
    return f"usage_count_{days}d"


def capability_features_schema(windows_days: Sequence[int] = DEFAULT_WINDOWS_DAYS) -> pa.Schema:
    """Per-capability daily snapshots (seed 002 §1.2); one usage column per window."""
    usage = [
        _f(usage_count_column(d), pa.int64(), False, f"events in [t - {d}d, t)")
        for d in windows_days
    ]
    return pa.schema(
        [
            _f("capability_id", pa.string(), False, "the capability (Feast entity key)"),
            _f("event_timestamp", TIMESTAMP, False, "snapshot time t: uses events before t"),
            _f("tool_count", pa.int64(), False, "number of steps (tool ids) it composes"),
            _f("avg_execution_time_ms", pa.float64(), False, "mean execution time before t"),
            _f("success_rate", pa.float64(), False, "smoothed success rate before t"),
            _f("usage_count_total", pa.int64(), False, "events before t (all time)"),
            *usage,
            _f("pagerank_score", pa.float64(), False, "PageRank x node count (1 = average)"),
            _f("clustering_coefficient", pa.float64(), False, "clustering in the projection"),
            _f("feature_version", pa.int64(), False, "features.feature_version"),
            _f("computed_at", TIMESTAMP, False, "when the row was computed (wall clock)"),
        ]
    )


# --------------------------------------------------------------------------- embeddings
# Written by the embed stage (caprank.embeddings.stage), one row per catalog item; each is
# a Feast batch source keyed by its entity id with `event_timestamp` as the event time.
VECTOR = pa.list_(pa.float32())


def _embedding_schema(key: str, what: str) -> pa.Schema:
    return pa.schema(
        [
            _f(key, pa.string(), False, f"the {what} embedded"),
            _f("text_sha256", pa.string(), False, "sha256 of the text that was encoded"),
            _f("text_embedding", VECTOR, False, "L2-normalized text vector"),
            _f("graph_embedding", VECTOR, False, "L2-normalized Node2Vec vector"),
            _f("hybrid_embedding", VECTOR, False, "L2-normalized text+graph combination"),
            _f("text_model", pa.string(), False, "sentence-transformers model id"),
            _f("params_json", pa.string(), False, "embedding parameters (JSON)"),
            _f("input_hash", pa.string(), False, "content hash of the stage's inputs"),
            _f("computed_at", TIMESTAMP, False, "when the stage computed the row"),
            _f("event_timestamp", TIMESTAMP, False, "Feast event time (= computed_at)"),
        ]
    )


CAPABILITY_FEATURES = capability_features_schema()

TOOL_EMBEDDINGS = _embedding_schema("tool_id", "tool")
CAPABILITY_EMBEDDINGS = _embedding_schema("capability_id", "capability")

EMBEDDING_TABLES: dict[str, TableSpec] = {
    "tool_embeddings": TableSpec(
        "tool_embeddings", "tool_embeddings.parquet", TOOL_EMBEDDINGS, ("tool_id",)
    ),
    "capability_embeddings": TableSpec(
        "capability_embeddings",
        "capability_embeddings.parquet",
        CAPABILITY_EMBEDDINGS,
        ("capability_id",),
    ),
}
