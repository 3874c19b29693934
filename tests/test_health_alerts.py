"""The `health_alerts` sensor against a loopback webhook, over real health materializations.

A threshold is crossed on purpose: a landed batch that no run ever works on is a stranded
partition (critical at 1); running it recovers. Every post goes to an HTTP receiver on
127.0.0.1 that records what it was sent, and can answer 500 or hang.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from enrichment_assets.alerts import level_changes, slack_message
from enrichment_assets.cli.runner import (
    land_files,
    materialize_partitions,
    materialize_pipeline_health,
)
from enrichment_assets.defs.health.alerts import health_alerts
from enrichment_assets.defs.resources import AlertWebhookResource
from enrichment_assets.lake import Lake
from tests.factories import conversation, write_jsonl


@dataclass
class Receiver:
    """A loopback webhook: records each POST body; answers `status`."""

    url: str
    status: int = 200
    received: list[dict] = field(default_factory=list)

    def delivered(self) -> list[dict]:
        return [r["body"] for r in self.received if r["status"] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.received.append({"status": state.status, "body": body})
            self.send_response(state.status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/enrich"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A port that takes the connection and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hooks/enrich"
    finally:
        listener.close()


def tick(
    instance: DagsterInstance, cursor: str | None, webhook: AlertWebhookResource
) -> tuple[SensorResult | SkipReason, str | None]:
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={"alert_webhook": webhook}
    ) as context:
        result = health_alerts(context)
    new_cursor = result.cursor if isinstance(result, SensorResult) else cursor
    return result, new_cursor


def health(instance: DagsterInstance) -> None:
    outcome = materialize_pipeline_health(instance)
    assert outcome.success, outcome


def test_a_crossed_threshold_posts_once_and_its_recovery_once_more(
    lake: Lake,
    instance: DagsterInstance,
    tmp_path: Path,
    receiver: Receiver,
    hanging_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENRICH_WORKERS", "1")
    monkeypatch.setenv("ENRICH_ALERT_WEBHOOK_URL", receiver.url)
    from_env = AlertWebhookResource(timeout_s=2)
    health(instance)
    result, cursor = tick(instance, None, from_env)
    assert isinstance(result, SkipReason) and receiver.received == []
    assert result.skip_message == "no health threshold changed level"

    # Crossed on purpose: a registered batch that nothing runs is a stranded partition.
    (partition,) = land_files(lake, instance, [write_jsonl(tmp_path / "b.jsonl", [conversation()])])
    health(instance)
    _, cursor = tick(instance, cursor, from_env)
    _, cursor = tick(instance, cursor, from_env)  # unchanged: never posted again
    (critical,) = receiver.delivered()
    assert critical["text"].startswith("<!channel> ")  # the page
    assert "CRITICAL stranded_partitions" in critical["text"]
    assert {"metric": "stranded_partitions", "previous": "ok", "level": "critical"}.items() <= (
        critical["enrich"]["changes"][0].items()
    )
    assert critical["attachments"][0]["color"] == "#d00000"

    # Recovered, while the webhook is down: nothing blocks, nothing is lost.
    (outcome,) = materialize_partitions(instance, [partition])
    assert outcome.success
    health(instance)
    receiver.status = 500
    result, cursor = tick(instance, cursor, from_env)
    assert isinstance(result, SkipReason) and "HTTP 500" in str(result.skip_message)
    started = time.monotonic()
    result, cursor = tick(instance, cursor, AlertWebhookResource(url=hanging_url, timeout_s=1))
    assert time.monotonic() - started < 20  # bounded by the timeout, not by the webhook
    assert isinstance(result, SkipReason) and "retried next tick" in str(result.skip_message)
    assert len(receiver.delivered()) == 1

    receiver.status = 200
    _, cursor = tick(instance, cursor, from_env)
    _, cursor = tick(instance, cursor, from_env)
    delivered = receiver.delivered()
    assert len(delivered) == 2
    recovery = {c["metric"]: c for c in delivered[1]["enrich"]["changes"]}
    assert recovery["stranded_partitions"]["level"] == "ok"
    assert "RECOVERED stranded_partitions" in delivered[1]["text"]


def test_alerts_are_off_without_a_webhook_url(
    instance: DagsterInstance, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENRICH_ALERT_WEBHOOK_URL", raising=False)
    result, cursor = tick(instance, None, AlertWebhookResource())
    assert isinstance(result, SkipReason)
    assert "ENRICH_ALERT_WEBHOOK_URL is not set" in str(result.skip_message)
    assert cursor is None and receiver.received == []


def test_a_warning_is_a_chat_message_without_a_page() -> None:
    changes = level_changes(
        {"quality_score": "ok", "backlog": "critical"},
        {"quality_score": "warning", "backlog": "critical", "failure_rate": "ok"},
        {"quality_score": 74.5},
        {"quality_score": "warning < 80, critical < 60"},
    )
    assert [(c.metric, c.previous, c.level) for c in changes] == [
        ("quality_score", "ok", "warning")
    ]
    payload = slack_message(changes, source="pipeline_health run <x>")
    assert payload["text"] == "enrichment_assets health: WARNING quality_score"
    (attachment,) = payload["attachments"]
    assert attachment["text"] == (
        "WARNING: quality_score = 74.5 (ok -&gt; warning; warning &lt; 80, critical &lt; 60)"
    )
    assert attachment["footer"] == "pipeline_health run &lt;x&gt;"
