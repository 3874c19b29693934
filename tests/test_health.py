"""The health report: metrics in DuckDB over real partitions, levels, the CLI and asset."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from dagster import DagsterInstance, materialize
from plotly.offline import get_plotlyjs
from typer.testing import CliRunner

from enrichment_assets.cli.commands import app
from enrichment_assets.cli.runner import land_files, materialize_partitions
from enrichment_assets.definitions import defs
from enrichment_assets.defs.health.assets import pipeline_health_asset
from enrichment_assets.health_metrics import THRESHOLDS, pipeline_health
from enrichment_assets.lake import Lake
from enrichment_assets.low_confidence import LowConfidenceRule
from tests.factories import conversation, message, write_jsonl

LEVELS = {t.metric: t for t in THRESHOLDS}


@pytest.mark.parametrize(
    ("metric", "value", "level"),
    [
        ("completeness_rate", 90.0, "ok"),
        ("completeness_rate", 84.9, "warning"),
        ("completeness_rate", 69.9, "critical"),
        ("quality_score", 80.0, "ok"),
        ("quality_score", 79.0, "warning"),
        ("quality_score", 59.0, "critical"),
        ("backlog", 1000, "ok"),
        ("backlog", 1001, "critical"),
        ("failure_rate", 20.0, "ok"),
        ("failure_rate", 20.1, "critical"),
        ("failure_rate", None, "ok"),
    ],
)
def test_levels_follow_the_spec_thresholds(metric: str, value: float | None, level: str) -> None:
    assert LEVELS[metric].level(value) == level


def run_batch(lake: Lake, instance: DagsterInstance, path: Path, records: list) -> str:
    partitions = land_files(lake, instance, [write_jsonl(path, records)])
    (outcome,) = materialize_partitions(instance, partitions)
    return outcome.partition


def test_health_over_all_partitions_counts_failures_and_completeness(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    run_batch(lake, instance, tmp_path / "a.jsonl", [conversation() for _ in range(4)])
    bad = [conversation(messages=[message("user", "anyone?")]) for _ in range(2)]
    run_batch(lake, instance, tmp_path / "b.jsonl", [conversation(), *bad])

    health = pipeline_health(lake, low_confidence=LowConfidenceRule.from_env())
    metrics = health["metrics"]
    assert metrics["conversations"] == 7 and metrics["partitions"] == 2
    assert metrics["per_status"] == {"completed": 5, "validation_failed": 2}
    assert metrics["failure_rate"] == round(100 * 2 / 7, 2)
    assert health["levels"]["failure_rate"] == "critical"
    assert metrics["completeness_rate"] == 100.0 and metrics["backlog"] == 0
    assert sum(b["conversations"] for b in metrics["confidence_histogram"]) == 5
    assert metrics["seconds_to_enriched"]["p50"] is not None
    assert health["overall"] == "critical"


def test_report_json_and_html(lake: Lake, instance: DagsterInstance, tmp_path: Path) -> None:
    run_batch(lake, instance, tmp_path / "a.jsonl", [conversation() for _ in range(3)])
    runner = CliRunner()

    result = runner.invoke(app, ["report", "--json"])
    assert result.exit_code == 0, result.output
    payload = orjson.loads(result.stdout)
    assert {k: payload[k] for k in ("raw", "validated", "quarantined", "completed")} == {
        "raw": 3,
        "validated": 3,
        "quarantined": 0,
        "completed": 3,
    }
    assert set(payload["levels"]) == set(LEVELS)
    assert set(payload["levels"].values()) <= {"ok", "warning", "critical"}

    result = runner.invoke(app, ["report", "--html"])
    assert result.exit_code == 0, result.output
    page = lake.reports_dir / "pipeline_health.html"
    assert str(page.resolve()) in result.stdout.replace("\n", "")
    text = page.read_text()
    assert text.count("Plotly.newPlot") == 4
    # Self-contained: plotly.js inlined once, whole, before the charts that call it.
    bundle = get_plotlyjs()
    assert text.count(bundle) == 1
    assert text.index(bundle) < text.index("Plotly.newPlot")
    assert "index.html" in result.stdout


def test_pipeline_health_asset_reports_thresholds_as_checks(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    run_batch(lake, instance, tmp_path / "a.jsonl", [conversation() for _ in range(3)])
    result = materialize([pipeline_health_asset], instance=instance, resources=defs.resources)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == set(LEVELS)
    assert all(c.passed for c in checks.values())
    assert (lake.reports_dir / "pipeline_health.json").is_file()
