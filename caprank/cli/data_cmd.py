"""`caprank data`: make, import and simulate datasets (thin adapter over caprank.data)."""

from __future__ import annotations

from pathlib import Path

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import data_option, instant_option, out_dir_option
from caprank.cli.validate_cmd import validate as validate_command
from caprank.data.dataset import dataset_hash, load_dataset, write_dataset
from caprank.data.schemas import INTERACTION_PARTS_DIR, MANIFEST_FILE
from caprank.data.simulate import simulate, simulation_metadata
from caprank.data.synth import synthesize
from caprank.data.toollens import import_toollens
from caprank.errors import DataError
from caprank.files import atomic_write_json, atomic_write_parquet


def _summary(path: Path, ds) -> str:
    rows = {name: table.num_rows for name, table in ds.tables().items()}
    return f"wrote {path}: " + ", ".join(f"{n} {name}" for name, n in rows.items())


@click.group("data")
def data_group() -> None:
    """Make, import and simulate datasets that follow the data contract."""


@data_group.command("synth")
@out_dir_option("Output directory.", required=True)
@click.option("--no-logs", is_flag=True, help="Skip the simulated interaction logs.")
@pass_state
def synth_cmd(state: CliState, out_dir: Path, no_logs: bool) -> None:
    """Write the embedded default dataset and its simulated logs."""
    cfg = state.config()
    ds = synthesize(cfg)
    extra = {}
    if not no_logs:
        ds.interactions = simulate(ds, cfg)
        extra["simulation"] = simulation_metadata(ds.interactions)
    path = write_dataset(ds, out_dir, **extra)
    click.echo(_summary(path, ds))


@data_group.group("import")
def import_group() -> None:
    """Import ToolLens or your own JSONL/CSV files."""


@import_group.command("toollens")
@click.option("--source", required=True, type=click.Path(file_okay=False, exists=True))
@out_dir_option("Output directory.", required=True)
@click.option("--split", type=click.Choice(["official", "cold"]), default="official")
@click.option("--cold-fraction", type=click.FloatRange(0.0, 1.0), default=0.2, show_default=True)
@click.option("--seed", type=int, default=None, help="Cold-split seed (default: data.seed).")
@pass_state
def toollens_cmd(
    state: CliState, source: str, out_dir: Path, split: str, cold_fraction: float, seed: int | None
) -> None:
    """Import the ToolLens benchmark (scenes become capabilities)."""
    seed = state.config().data.seed if seed is None else seed
    ds = import_toollens(source, split=split, cold_fraction=cold_fraction, seed=seed)
    click.echo(_summary(write_dataset(ds, out_dir), ds))


def _import_options(fn):
    for table in reversed(("tools", "capabilities", "intents", "labels", "interactions")):
        fn = click.option(
            f"--{table}",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help=f"File holding the {table} table"
            + (" (required)." if table == "tools" else " (optional)."),
        )(fn)
    fn = click.option(
        "--map",
        "mapping_items",
        multiple=True,
        metavar="TABLE.COLUMN=SOURCE",
        help="Source column of a contract column, e.g. tools.tool_id=api_id (repeatable).",
    )(fn)
    fn = click.option(
        "--mapping",
        "mapping_file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="YAML or JSON file {table: {column: source_column}}; --map entries win.",
    )(fn)
    fn = click.option(
        "--list-sep", default="|", show_default=True, help="Separator of lists given as text."
    )(fn)
    fn = instant_option("--now", help="Validate as of this instant (default: now, UTC).")(fn)
    return out_dir_option("Output dataset directory.", required=True)(fn)


def _run_import(state: CliState, fmt: str, out_dir: Path, mapping_items, mapping_file, list_sep,
                now, **files) -> None:  # fmt: skip
    import yaml

    from caprank.data.importer import ImportSpec, import_and_validate, parse_mapping

    mapping: dict[str, dict[str, str]] = {}
    if mapping_file is not None:
        try:
            loaded = yaml.safe_load(mapping_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise DataError(str(mapping_file), f"not valid YAML or JSON ({exc})") from exc
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise DataError(str(mapping_file), "expected {table: {column: source_column}}")
        mapping = {t: {str(k): str(v) for k, v in cols.items()} for t, cols in loaded.items()}
    for table, cols in parse_mapping(list(mapping_items)).items():
        mapping.setdefault(table, {}).update(cols)
    spec = ImportSpec(
        {t: p for t, p in files.items() if p is not None}, fmt, mapping, list_sep=list_sep
    )
    ds, report = import_and_validate(spec, out_dir, state.config(), now=now)
    click.echo(_summary(out_dir, ds) + f" ({report.headline()})")


@import_group.command("jsonl")
@_import_options
@pass_state
def jsonl_cmd(state: CliState, **kw) -> None:
    """Import your own catalog, queries and judgements from JSON Lines files."""
    _run_import(state, "jsonl", **kw)


@import_group.command("csv")
@_import_options
@pass_state
def csv_cmd(state: CliState, **kw) -> None:
    """Import your own catalog, queries and judgements from CSV files (with a header)."""
    _run_import(state, "csv", **kw)


@data_group.command("simulate")
@data_option(exists=True)
@out_dir_option("Write a copy here (default: DATA).")
@click.option("--policy", type=click.Choice(["bm25", "popularity", "random"]), default=None)
@click.option("--days", type=click.IntRange(1, 3650), default=None, help="Days to simulate.")
@click.option("--append", is_flag=True, help="Add the logs as a new part instead of replacing.")
@pass_state
def simulate_cmd(
    state: CliState,
    data_dir: Path,
    out_dir: Path | None,
    policy: str | None,
    days: int | None,
    append: bool,
) -> None:
    """Simulate interaction logs for a dataset (replace or --append)."""
    cfg = state.config().model_copy(deep=True)
    if policy is not None:
        cfg.data.simulate.policy = policy
    if days is not None:
        cfg.data.synth.days = days
    ds = load_dataset(data_dir)
    logs = simulate(ds, cfg)
    meta = simulation_metadata(logs)
    if append:
        if out_dir is not None:
            raise click.UsageError("--append writes into --data; do not give --out")
        _append(data_dir, ds, logs, meta)
        return
    ds.interactions = logs
    ds.manifest = {k: v for k, v in ds.manifest.items() if k not in _STALE_KEYS}
    path = write_dataset(ds, out_dir or data_dir, simulation=meta)
    click.echo(_summary(path, ds) + f" (policy {meta['policy']})")


_STALE_KEYS = ("simulation", "simulations", "written_at")


def _append(root: Path, ds, logs, meta: dict) -> None:
    """Add ``logs`` as a new part of ``root``'s interactions and refresh its manifest."""
    prefix = f"ev-{meta['tag']}-"
    existing = ds.interactions["event_id"].to_pylist()
    if any(e.startswith(prefix) for e in existing):
        raise DataError(
            str(root / INTERACTION_PARTS_DIR),
            f"these logs (run {meta['tag']}) are already in the dataset; change the seed, "
            "the start date or the days",
            field="event_id",
        )
    part = root / INTERACTION_PARTS_DIR / f"sim-{meta['tag']}.parquet"
    atomic_write_parquet(logs.replace_schema_metadata(None), part)
    manifest = dict(ds.manifest)
    manifest.setdefault("simulations", []).append(meta)
    manifest["rows"] = {**manifest.get("rows", {}), "interactions": len(existing) + logs.num_rows}
    manifest["content_hash"] = dataset_hash(root)
    atomic_write_json(root / MANIFEST_FILE, manifest)
    click.echo(f"appended {logs.num_rows} interactions to {part}")


data_group.add_command(validate_command)
