"""Rendering the health report: a terminal table, the `--json` object, an HTML page with charts.

The numbers come from `checks.health.pipeline_health` and `queries.layer_counts`;
this module only presents them. The page's charts are plotly figures with
plotly.js inlined once, so the file opens offline (copied into the file from the plotly
package as it is written, never held in memory).
"""

from __future__ import annotations

import html
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from rich.console import Group
from rich.table import Table
from rich.text import Text

from enrichment_assets.lake import Lake, atomic_path, write_bytes_atomic
from enrichment_assets.terminal import plain

LEVEL_STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red"}
LEVEL_COLOR = {"ok": "#2e7d32", "warning": "#f9a825", "critical": "#c62828"}
LAYER_ORDER = ("raw", "validated", "quarantined", "enriched", "normalized", "completed")
# What plotly writes before its inlined bundle (`plotly.io.to_html`): MathJax stays local.
PLOTLY_CONFIG_SCRIPT = "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"


def health_json_path(lake: Lake) -> Path:
    return lake.reports_dir / "pipeline_health.json"


def health_html_path(lake: Lake) -> Path:
    return lake.reports_dir / "pipeline_health.html"


def data_docs_index(lake: Lake) -> Path:
    return lake.reports_dir / "data_docs" / "index.html"


def report_payload(health: dict[str, Any], counts: dict[str, int], lake: Lake) -> dict[str, Any]:
    """The `enrich report --json` object: counts per layer, metrics, levels, report paths."""
    return {
        **{layer: counts.get(layer, 0) for layer in (*LAYER_ORDER, "duplicates", "superseded")},
        **health,
        "data_docs": str(data_docs_index(lake).resolve()),
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    return f"{value:,}{unit}"


def health_tables(health: dict[str, Any]) -> Group:
    """Readable tables for the terminal: thresholds with levels, then the other metrics."""
    metrics, levels, rules = health["metrics"], health["levels"], health["thresholds"]
    thresholds = Table(title=f"health: {health['overall']}")
    thresholds.add_column("metric")
    thresholds.add_column("value", justify="right")
    thresholds.add_column("level")
    thresholds.add_column("thresholds")
    units = {"completeness_rate": " %", "failure_rate": " %"}
    for metric, level in levels.items():
        thresholds.add_row(
            metric,
            _fmt(metrics[metric], units.get(metric, "")),
            Text(level, style=LEVEL_STYLE[level]),
            rules[metric],
        )

    other = Table(title="throughput and distribution", show_header=False)
    other.add_row(
        "conversations / partitions", f"{metrics['conversations']:,} / {metrics['partitions']}"
    )
    other.add_row("records processed per hour", _fmt(metrics["records_per_hour"]))
    latency = metrics["seconds_to_enriched"]
    other.add_row(
        "raw stored → enriched (p50 / p95)",
        f"{_fmt(latency['p50'], ' s')} / {_fmt(latency['p95'], ' s')}",
    )
    histogram = " ".join(
        f"{b['bucket']}:{b['conversations']}" for b in metrics["confidence_histogram"]
    )
    other.add_row("confidence histogram", histogram or "n/a")
    other.add_row("confidence missing (NULL)", _fmt(metrics["confidence_missing"]))
    # Partition keys can be anything a person typed in the Dagster UI: shown as plain text.
    other.add_row(
        "blocked by a gate", plain(", ".join(metrics["gate_blocked_partitions"]) or "none")
    )
    other.add_row(
        "flagged for a person",
        plain(", ".join(f["partition"] for f in metrics["flagged_partitions"]) or "none"),
    )
    if low := metrics.get("low_confidence"):
        other.add_row(
            f"confidence below {low['below']} (due / waiting / out of attempts / re-asked)",
            f"{low['due']} / {low['waiting']} / {low['out_of_attempts']} / {low['reasked']}",
        )
    return Group(thresholds, other)


def _figures(health: dict[str, Any], counts: dict[str, int]) -> list[Any]:
    import plotly.graph_objects as go

    metrics = health["metrics"]
    layout = {"height": 340, "margin": {"t": 50, "b": 40, "l": 50, "r": 20}}
    figures = [
        go.Figure(
            go.Bar(
                x=list(LAYER_ORDER),
                y=[counts.get(layer, 0) for layer in LAYER_ORDER],
                marker_color="#1565c0",
            ),
            layout={**layout, "title": "Rows per layer"},
        ),
        go.Figure(
            go.Bar(
                x=[b["bucket"] for b in metrics["confidence_histogram"]],
                y=[b["conversations"] for b in metrics["confidence_histogram"]],
                marker_color="#6a1b9a",
            ),
            layout={**layout, "title": "Confidence distribution", "xaxis_title": "confidence"},
        ),
        go.Figure(
            go.Bar(
                x=[h["hour"] for h in metrics["hourly_processed"]],
                y=[h["conversations"] for h in metrics["hourly_processed"]],
                marker_color="#00838f",
            ),
            layout={**layout, "title": "Conversations enriched per hour"},
        ),
        go.Figure(
            go.Pie(
                labels=list(metrics["per_status"]),
                values=list(metrics["per_status"].values()),
                hole=0.4,
            ),
            layout={**layout, "title": "Conversations per status"},
        ),
    ]
    return figures


def render_html(health: dict[str, Any], counts: dict[str, int], lake: Lake) -> tuple[str, str]:
    """The health page (levels, metrics, charts, a link to the Data Docs) as the HTML
    before and after plotly.js, which `write_health_files` copies in between from the
    plotly package: the page is self-contained without a 4.6 MB copy of it in memory."""
    metrics = health["metrics"]
    rows = "".join(
        f"<tr><td>{html.escape(metric)}</td><td>{html.escape(_fmt(metrics[metric]))}</td>"
        f'<td style="color:{LEVEL_COLOR[level]};font-weight:bold">{level}</td>'
        f"<td>{html.escape(health['thresholds'][metric])}</td></tr>"
        for metric, level in health["levels"].items()
    )
    latency = metrics["seconds_to_enriched"]
    facts = {
        "conversations": _fmt(metrics["conversations"]),
        "partitions": _fmt(metrics["partitions"]),
        "records processed per hour": _fmt(metrics["records_per_hour"]),
        "raw stored → enriched p50 / p95 (s)": f"{_fmt(latency['p50'])} / {_fmt(latency['p95'])}",
        "confidence missing (NULL)": _fmt(metrics["confidence_missing"]),
        "blocked by a gate": ", ".join(metrics["gate_blocked_partitions"]) or "none",
        "flagged for a person": ", ".join(f["partition"] for f in metrics["flagged_partitions"])
        or "none",
    }
    fact_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in facts.items()
    )
    charts = "".join(
        figure.to_html(full_html=False, include_plotlyjs=False)
        for figure in _figures(health, counts)
    )
    docs = data_docs_index(lake).resolve()
    head = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pipeline health</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
td, th {{ border: 1px solid #ddd; padding: .35rem .7rem; text-align: left; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1rem; }}
</style></head><body>
<h1>Pipeline health:
<span style="color:{LEVEL_COLOR[health["overall"]]}">{health["overall"]}</span></h1>
<p>Generated {html.escape(health["generated_at"])}. Data-quality gates:
<a href="{docs.as_uri()}">Great Expectations Data Docs</a>.</p>
<table><tr><th>metric</th><th>value</th><th>level</th><th>thresholds</th></tr>{rows}</table>
<table>{fact_rows}</table>
{PLOTLY_CONFIG_SCRIPT}<script>"""
    tail = f"""</script>
<div class="charts">{charts}</div>
</body></html>
"""
    return head, tail


def _plotly_js() -> Any:
    """The plotly.js bundle of the plotly package (what `plotly.offline.get_plotlyjs` reads)."""
    return resources.files("plotly").joinpath("package_data", "plotly.min.js")


def write_health_files(
    lake: Lake, health: dict[str, Any], counts: dict[str, int]
) -> tuple[Path, Path]:
    """Write `reports/pipeline_health.json` and `.html` atomically; returns both paths."""
    json_path, html_path = health_json_path(lake), health_html_path(lake)
    payload = report_payload(health, counts, lake)
    write_bytes_atomic(json_path, orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    head, tail = render_html(health, counts, lake)
    with atomic_path(html_path) as tmp, tmp.open("wb") as page:
        page.write(head.encode())
        with _plotly_js().open("rb") as bundle:
            shutil.copyfileobj(bundle, page)
        page.write(tail.encode())
    return json_path.resolve(), html_path.resolve()
