"""End to end in a real browser: a small demo, then the Dagster UI as an operator uses it.

`enrich demo -n 8` runs in a temporary data folder and instance; `dagster dev` (webserver
and daemon, sensors stopped) starts on a free port of 127.0.0.1 in its own process group;
headless Chromium (Debian's package, driven by Playwright: `tests/browser.py`) opens the
asset graph, a layer's partitions and its checks with their partition, the summaries'
day partitions, the enriched layer's badges, row count and columns, and
`pipeline_health`; then launches a backfill of two partitions by clicking, and waits for
it to succeed. Every process it started is stopped by killing its group.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.instance.ref import InstanceRef

from enrichment_assets.health_metrics import THRESHOLDS
from tests.browser import CHROMIUM
from tests.processes import stop_process_group

pytestmark = pytest.mark.timeout(600)

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INSTANCE_YAML = "telemetry:\n  enabled: false\n"
# Generous: two shared cores, a webserver compiling its GraphQL answers, a daemon.
START_TIMEOUT_S = 240
BACKFILL_TIMEOUT_S = 300
PAGE_TIMEOUT_MS = 90_000
SUCCEEDED = re.compile(r"Status\s*\n\s*Succeeded")


@dataclass
class RunningUI:
    url: str
    home: Path
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home)))

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_served(ui: RunningUI) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert ui.process.poll() is None, f"dagster dev exited:\n{ui.log_tail()}"
        try:
            with urllib.request.urlopen(f"{ui.url}/server_info", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"dagster dev did not serve within {START_TIMEOUT_S}s:\n{ui.log_tail()}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningUI]:
    # Said before the demo runs (the `chromium` fixture would say it only after).
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)")
    root = tmp_path_factory.mktemp("ui")
    home, data_dir = root / "dagster_home", root / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ENRICH_DATA_DIR": str(data_dir),
        # Nothing runs by itself: what the page shows comes from the demo and the clicks.
        "ENRICH_SENSORS_DEFAULT_STATUS": "stopped",
        "GX_ANALYTICS_ENABLED": "false",
    }
    for name in ("ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_APP_DB_URL"):
        env.pop(name, None)
    demo = subprocess.run(
        [str(BIN / "enrich"), "demo", "-n", "8"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    log_path = root / "dagster-dev.log"
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(BIN / "dagster"),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one kill stops all it starts
        )
    running = RunningUI(f"http://127.0.0.1:{port}", home, data_dir, log_path, process)
    try:
        _wait_until_served(running)
        yield running
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def browser_page(ui: RunningUI, chromium):
    context = chromium.new_context(viewport={"width": 1500, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    # Only the UI's own origin: nothing leaves the machine.
    page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(ui.url) else route.abort(),
    )
    try:
        yield page
    finally:
        context.close()


def open_page(page, ui: RunningUI, path: str, *, wait_for: str) -> str:
    """Go to `path`, dismiss the first-visit dialog, wait for `wait_for`; the page's text."""
    page.goto(ui.url + path, wait_until="domcontentloaded")
    page.get_by_text(wait_for, exact=False).first.wait_for()
    dismiss_welcome(page)
    return page.inner_text("body")


def dismiss_welcome(page) -> None:
    """The UI's first-visit dialog ("Join the Dagster community") covers the page: skip it."""
    page.wait_for_timeout(1000)
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()


def wait_for_text(page, pattern: str, timeout_s: float = 90) -> str:
    """The page's text once it matches `pattern` (the UI fills in as its queries answer)."""
    deadline = time.monotonic() + timeout_s
    text = page.inner_text("body")
    while not re.search(pattern, text) and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        text = page.inner_text("body")
    return text


def batches(ui: RunningUI) -> list[str]:
    with ui.instance() as instance:
        return sorted(instance.get_dynamic_partitions("batches"))


def test_asset_graph_shows_every_group(browser_page, ui: RunningUI) -> None:
    text = open_page(browser_page, ui, "/asset-groups", wait_for="Global asset lineage")
    text = wait_for_text(browser_page, r"summaries[\s\S]*reports|reports[\s\S]*summaries")
    for group in ("conversations", "reports", "summaries", "dataset"):
        assert group in text


def test_layer_partitions_are_all_materialized(browser_page, ui: RunningUI) -> None:
    keys = batches(ui)
    assert len(keys) == 4
    open_page(
        browser_page, ui, "/assets/validated_conversations?view=partitions", wait_for="Missing ("
    )
    text = wait_for_text(browser_page, r"Materialized \(4\)")
    assert "Materialized (4)" in text and "Missing (0)" in text and "Failed (0)" in text
    for key in keys:
        assert key in text


def test_check_results_carry_their_partition(browser_page, ui: RunningUI) -> None:
    keys = batches(ui)
    open_page(
        browser_page, ui, "/assets/validated_conversations?view=checks", wait_for="gx_contract"
    )
    text = wait_for_text(browser_page, r"Partition\s*\n\s*\S+")
    shown = re.search(r"Latest execution[\s\S]*?Partition\s*\n\s*(\S+)", text)
    assert shown is not None, text[:2000]
    assert shown.group(1) in keys  # not "—"
    # The check's history per partition: every batch passed its gate.
    browser_page.locator("button[role=tab]", has_text="Partitions").click()
    text = wait_for_text(browser_page, r"Passed \(\d+\)")
    assert "Passed (4)" in text and "Failed (0)" in text and "Missing (0)" in text


def test_summary_day_partitions_hold_no_missing_day(browser_page, ui: RunningUI) -> None:
    with ui.instance() as instance:
        days = instance.get_dynamic_partitions("summary_days")
    assert days
    open_page(
        browser_page, ui, "/assets/conversation_summaries?view=partitions", wait_for="Missing ("
    )
    text = wait_for_text(browser_page, rf"Materialized \({len(days)}\)")
    assert f"{len(days)} Partitions Selected" in text
    assert f"Materialized ({len(days)})" in text and "Missing (0)" in text
    assert "2024-01-01" not in text


def test_enriched_layer_shows_its_enricher_row_count_and_columns(
    browser_page,
    ui: RunningUI,
) -> None:
    open_page(browser_page, ui, "/assets/enriched_conversations", wait_for="Row count")
    text = wait_for_text(browser_page, r"enrich/enricher: heuristic")
    assert "enrich/enricher: heuristic" in text
    assert "OpenAI" not in text and "openai" not in text.replace("openai-jsonl", "")
    assert re.search(r"Row count\s*\n\s*\d+", text)
    assert "Columns" in text and "conversation_id" in text and "enrichment" in text


def test_pipeline_health_is_materialized_with_every_check_evaluated(
    browser_page,
    ui: RunningUI,
) -> None:
    open_page(browser_page, ui, "/assets/pipeline_health?view=checks", wait_for="completeness_rate")
    text = wait_for_text(browser_page, r"stranded_partitions\s*\n.*\n\s*(Succeeded|Failed)")
    assert "Not evaluated" not in text and "Never materialized" not in text
    for threshold in THRESHOLDS:
        assert re.search(
            rf"{threshold.metric}\s*\n\s*{threshold.metric}\s*\n\s*(Succeeded|Failed|Warning)",
            text,
        ), threshold.metric
    text = open_page(browser_page, ui, "/assets/pipeline_health", wait_for="Latest materialization")
    assert "Never materialized" not in wait_for_text(browser_page, r"ago")


def test_a_backfill_of_two_partitions_launched_by_clicking_succeeds(
    browser_page,
    ui: RunningUI,
) -> None:
    chosen = batches(ui)[:2]
    page = browser_page
    open_page(page, ui, "/assets/raw_conversations?view=partitions", wait_for="Materialized (")
    dismiss_welcome(page)
    page.get_by_role("button", name="Materialize…").first.click()
    page.get_by_text("Select a partition or create one").click()
    for key in chosen:
        page.get_by_role("menuitem", name=key).click()
    page.get_by_text("Launch runs to materialize raw_conversations").click()  # closes the menu
    page.get_by_role("button", name="Launch backfill").click()

    with ui.instance() as instance:
        deadline = time.monotonic() + 60
        while not instance.get_backfills() and time.monotonic() < deadline:
            time.sleep(0.5)
        (backfill,) = instance.get_backfills()
    open_page(page, ui, f"/runs/b/{backfill.backfill_id}", wait_for="Partition selection")
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    text = page.inner_text("body")
    # The page says 100 % once both runs succeeded, and Succeeded once the daemon closed it.
    while not SUCCEEDED.search(text) and time.monotonic() < deadline:
        assert ui.process.poll() is None, f"dagster dev exited:\n{ui.log_tail()}"
        page.wait_for_timeout(3000)
        page.reload(wait_until="domcontentloaded")
        page.get_by_text("Partition selection").first.wait_for()
        text = wait_for_text(page, r"Status\s*\n\s*\S+[\s\S]*\d+% completed", timeout_s=30)
    assert SUCCEEDED.search(text), f"{text[:1500]}\n{ui.log_tail()}"
    assert "100% completed" in text
    for key in chosen:
        assert key in text

    with ui.instance() as instance:
        done = instance.get_backfill(backfill.backfill_id)
        assert done is not None and done.status == BulkActionStatus.COMPLETED_SUCCESS
        for key in chosen:
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey("raw_conversations"), asset_partitions=[key]),
                limit=5,
            ).records
            assert any(
                r.run_id and _run_of_backfill(instance, r.run_id, done.backfill_id) for r in records
            )


def _run_of_backfill(instance: DagsterInstance, run_id: str, backfill_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.tags.get("dagster/backfill") == backfill_id
