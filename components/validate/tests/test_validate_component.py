"""validate through ``python_func``: a clean dataset passes; a broken one raises after
writing a report that names the failing field."""

import dataclasses
from pathlib import Path

import pyarrow as pa
import pytest
from kfp.dsl import HTML, Dataset, Markdown, Metrics

from caprank.config import dump_yaml
from caprank.data.dataset import write_dataset
from caprank.errors import DataError
from components.testing import artifact, component


def _run(cfg, root: Path, out: Path) -> Metrics:
    metrics = artifact(Metrics, out / "m.json")
    component(cfg, "validate").python_func(
        dataset=artifact(Dataset, root),
        config_yaml=dump_yaml(cfg),
        report=artifact(HTML, out / "report.html"),
        summary=artifact(Markdown, out / "validate.md"),
        metrics=metrics,
    )
    return metrics


def test_validate_passes_a_clean_dataset(tiny_cfg, tiny_dataset_dir, tmp_path):
    metrics = _run(tiny_cfg, tiny_dataset_dir, tmp_path)
    assert "PASSED" in (tmp_path / "validate.md").read_text()
    assert metrics.metadata["failed_checks"] == 0.0 < metrics.metadata["checks"]


def test_validate_component_fails_with_report(tiny_cfg, tiny_dataset, tmp_path):
    bad = tiny_dataset.interactions
    idx = bad.schema.get_field_index("execution_time_ms")
    times = bad["execution_time_ms"].to_pylist()
    times[3] = -5.0
    broken = dataclasses.replace(
        tiny_dataset, interactions=bad.set_column(idx, "execution_time_ms", pa.array(times))
    )
    root = write_dataset(broken, tmp_path / "bad")
    with pytest.raises(DataError, match="execution_time_ms"):
        _run(tiny_cfg, root, tmp_path)
    assert "FAILED" in (tmp_path / "validate.md").read_text()
    assert "execution_time_ms" in (tmp_path / "report.html").read_text()
