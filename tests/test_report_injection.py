"""No script from the data runs in any HTML page the pipeline generates (issue 17).

A batch whose conversation ids (about a quarter of them) and user ids are HTML
payloads goes through the real pipeline; the raw drift gate lists the ids as
unexpected values. Every Data Docs page it wrote, and the health page of
`enrich report --html` with a flagged partition named like a payload, are then
opened in headless Chromium. Each payload, if it ran, would mark the page's root
element (`data-pwned-*`) or open a dialog; a control page with the same payloads
inserted raw proves that they do. The pages must show the payloads as text.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import mistune
import pytest

from enrichment_assets.checks.gx_context import docs_run_name
from enrichment_assets.cli.runner import land_files, materialize_partitions
from enrichment_assets.defs.automation.retry_state import write_retries
from enrichment_assets.defs.checks import validate_layer
from enrichment_assets.lake import Lake
from enrichment_assets.partition_retry import GATE_FAILED, PartitionRetry
from tests.browser import OpenedPage
from tests.cli import enrich
from tests.factories import conversation, write_jsonl


def _mark(name: str) -> str:
    return f"document.documentElement.dataset.pwned{name}=1"


# One payload per way markup can run script; each marks the page with its own name.
PAYLOADS = {
    "Img": f'<img src=x onerror="{_mark("Img")}">',
    "Script": f"<script>{_mark('Script')}</script>",
    "Svg": f'<svg onload="{_mark("Svg")}">',
    "Details": f'<details open ontoggle="{_mark("Details")}">',
    "Attribute": f'"><img src=x onerror="{_mark("Attribute")}">',
    "Breakout": f"</script><script>{_mark('Breakout')}</script>",
    "Quote": f"';{_mark('Quote')};'",
    "Alert": '<img src=y onerror="alert(1)">',
}
MARKS_JS = "() => Object.keys(document.documentElement.dataset).filter(k => k.startsWith('pwned'))"
# Events (onerror, ontoggle) fire after `load` at the latest; this is the wait for them.
SETTLE_S = 0.5

# Offline, the index page's jQuery and bootstrap-table cannot load, and it is
# bootstrap-table that turns the embedded rows into table cells (as HTML: its default
# is escape: false, and jQuery's append runs <script>s). This stand-in does the same
# with the rows the page hands it, so the rows' contents are put to the test.
TABLE_STAND_IN = """
(() => {
  function rows(options, table) {
    const body = document.createElement("tbody");
    for (const row of options.data || []) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-href", row._table_row_link_path || "");
      for (const column of options.columns || []) {
        const td = document.createElement("td");
        const value = row[column.field];
        td.innerHTML = value == null ? "" : String(value);
        for (const old of td.querySelectorAll("script")) {
          const live = document.createElement("script");
          live.textContent = old.textContent;
          old.replaceWith(live);
        }
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    table.appendChild(body);
  }
  function wrap(nodes) {
    const self = {
      bootstrapTable(options) {
        if (typeof options === "object") nodes.forEach((table) => rows(options, table));
        return self;
      },
      ready(fn) { fn(); return self; },
    };
    for (const name of ["on", "each", "parent", "fadeIn", "fadeOut"]) self[name] = () => self;
    return self;
  }
  window.$ = window.jQuery = (selector) =>
    wrap(typeof selector === "string" ? Array.from(document.querySelectorAll(selector)) : []);
})();
"""
STAND_INS = {"jquery": TABLE_STAND_IN}


def marks(*opened: OpenedPage) -> list[str]:
    """The marks of every page, once their events had time to fire (all pages at once)."""
    time.sleep(SETTLE_S)
    return [mark for one in opened for mark in one.page.evaluate(MARKS_JS)]


def body_text(opened: OpenedPage) -> str:
    return opened.page.inner_text("body")


@pytest.fixture(scope="module")
def hostile_lake(tmp_path_factory: pytest.TempPathFactory):
    """A lake whose one batch has 8 payload ids among 32 conversations, materialized."""
    from dagster import instance_for_test

    root = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as patch, instance_for_test() as instance:
        patch.setenv("ENRICH_DATA_DIR", str(root / "data"))
        patch.delenv("ENRICH_LANDING_DIR", raising=False)
        patch.delenv("ENRICH_ENRICHER", raising=False)
        patch.delenv("ENRICH_APP_DB_URL", raising=False)
        lake = Lake(root / "data")
        records = [
            conversation(user_id=PAYLOADS["Script"] if n % 3 == 0 else f"user-{n}")
            for n in range(24)
        ] + [conversation(conversation_id=payload) for payload in PAYLOADS.values()]
        batch = write_jsonl(root / "in" / "hostile.jsonl", records)
        (partition,) = land_files(lake, instance, [batch])
        (outcome,) = materialize_partitions(instance, [partition])
        assert outcome.success, outcome
        yield lake, instance, partition


def test_raw_gate_lists_the_payload_ids_as_unexpected(hostile_lake) -> None:
    lake, _, partition = hostile_lake
    report = validate_layer(lake, "raw_conversations", lake.layer_path("raw", partition), partition)
    drift = next(r for r in report.check_results if r.check_name == "gx_drift")
    assert not drift.passed
    failures = drift.metadata["failures"].value
    listed = {v for f in failures for v in f["unexpected_values"]}
    assert set(PAYLOADS.values()) <= listed
    # The same values in the UI's Markdown are literal text: no tag, link or image.
    why = drift.metadata["why"].value
    rendered = mistune.create_markdown(escape=False)(why)
    assert "<img" not in rendered and "<script" not in rendered and "<svg" not in rendered
    shown = html.unescape(rendered)
    assert sum(json.dumps(payload) in shown for payload in PAYLOADS.values()) == 5


def test_the_payloads_run_when_inserted_raw(open_offline, tmp_path: Path) -> None:
    """The control: without escaping, every payload runs in the context it is made for."""
    page = tmp_path / "control.html"
    cells = "".join(
        f"<div>{p}</div><div title=\"{p}\"></div><script>var s = '{p}';</script>"
        for p in PAYLOADS.values()
    )
    page.write_text(f"<!doctype html><html><body>{cells}</body></html>")
    opened = open_offline(page)
    expected = {f"pwned{name}" for name in PAYLOADS if name != "Alert"}
    assert set(marks(opened)) == expected
    assert opened.dialogs == ["1"]


def test_no_payload_runs_in_any_data_docs_page(hostile_lake, open_offline) -> None:
    lake, _, partition = hostile_lake
    docs = lake.reports_dir / "data_docs"
    pages = sorted(docs.rglob("*.html"))
    assert len(pages) >= 10  # the index, 5 suites, 4 layers' validation results
    opened = {page: open_offline(page, STAND_INS) for page in pages}
    assert marks(*opened.values()) == []
    assert {page: o.dialogs for page, o in opened.items() if o.dialogs} == {}
    raw_page = next(p for p in pages if "raw_conversations" in p.parts and "validations" in p.parts)
    shown = body_text(opened[raw_page])
    for payload in PAYLOADS.values():
        assert payload in shown  # the value itself, as text, escaped once
    assert partition in body_text(opened[docs / "index.html"])  # the stand-in rendered its rows


HOSTILE_PARTITION = f"{PAYLOADS['Breakout']}{PAYLOADS['Attribute']}/../..\\x"


def test_a_partition_key_with_markup_and_a_path_names_a_plain_run(
    hostile_lake, open_offline
) -> None:
    """A key typed in the Dagster UI can hold anything: its run stays inside the docs."""
    lake, _, partition = hostile_lake
    run_name = docs_run_name(HOSTILE_PARTITION)
    assert run_name.replace("-", "").replace("_", "").isalnum()
    assert docs_run_name(partition) == partition  # the keys we make are kept as they are
    report = validate_layer(
        lake, "raw_conversations", lake.layer_path("raw", partition), HOSTILE_PARTITION
    )
    assert report.docs_page is not None
    docs = (lake.reports_dir / "data_docs").resolve()
    assert report.docs_page.resolve().is_relative_to(docs / "validations")
    assert run_name in report.docs_page.parts
    opened = open_offline(report.docs_page, STAND_INS)
    index = open_offline(docs / "index.html", STAND_INS)
    assert marks(opened, index) == [] and opened.dialogs == index.dialogs == []
    # The contract gate names the key in its failed expectation: shown as text.
    assert PAYLOADS["Breakout"] in body_text(opened)
    assert run_name in body_text(index)


def test_a_partition_named_profiling_is_listed_with_the_validations(hostile_lake) -> None:
    """GX's default hides runs whose name includes "profiling"; a file may be so named."""
    lake, _, partition = hostile_lake
    named = "profiling-export-0123456789ab"  # what `profiling-export.jsonl` lands as
    report = validate_layer(lake, "raw_conversations", lake.layer_path("raw", partition), named)
    assert report.docs_page is not None and named in report.docs_page.parts
    index = (lake.reports_dir / "data_docs" / "index.html").read_text()
    assert f"'run_name': '{named}'" in index
    assert not (lake.reports_dir / "data_docs" / "profiling").exists()


def test_no_payload_runs_in_the_health_page(
    hostile_lake, open_offline, capsys: pytest.CaptureFixture[str]
) -> None:
    lake, instance, _ = hostile_lake
    flagged = [PAYLOADS["Script"], PAYLOADS["Img"], PAYLOADS["Breakout"]]
    write_retries(
        instance,
        {
            name: PartitionRetry(
                partition=name,
                reason=GATE_FAILED,
                detail=PAYLOADS["Svg"],
                failed_run_id="run",
                failed_at=time.time(),
                tries=5,
                flagged=True,
                flagged_at=time.time(),
            )
            for name in flagged
        },
    )
    result = enrich(capsys, "report", "--html")
    assert result.code == 0, result.stderr
    page = lake.reports_dir / "pipeline_health.html"
    opened = open_offline(page)
    assert marks(opened) == [] and opened.dialogs == []
    assert opened.script_errors == []
    # The page's own scripts did run: plotly drew its four charts.
    assert opened.page.locator(".js-plotly-plot").count() == 4
    shown = body_text(opened)
    for name in flagged:
        assert name in shown
    json_report = enrich(capsys, "report", "--json").json()
    assert sorted(f["partition"] for f in json_report["metrics"]["flagged_partitions"]) == sorted(
        flagged
    )
