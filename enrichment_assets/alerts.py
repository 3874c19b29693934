"""Health alerts: which thresholds changed level, the Slack-compatible message, the post.

No Dagster here: the `health_alerts` sensor (`defs/health/alerts.py`) decides when
to call these. The system we replace paged on CRITICAL and posted a chat message on
WARNING; a change back to `ok` is posted too, so that whoever was paged hears of the
recovery. A level that did not change is never posted again.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from enrichment_assets.health_metrics import CRITICAL, OK, WARNING

_SEVERITY = {OK: 0, WARNING: 1, CRITICAL: 2}
# Slack's attachment colours: red, amber, green.
_COLOUR = {CRITICAL: "#d00000", WARNING: "#f2c744", OK: "#2eb886"}


class AlertDeliveryError(Exception):
    """The webhook did not take the message (unreachable, timed out, non-2xx answer)."""


@dataclass(frozen=True)
class LevelChange:
    """One threshold whose level differs from the one last posted."""

    metric: str
    previous: str
    level: str
    value: float | None
    rule: str

    @property
    def kind(self) -> str:
        """CRITICAL, WARNING, or RECOVERED (back to ok)."""
        return "RECOVERED" if self.level == OK else self.level.upper()

    def line(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:g}"
        return (
            f"{self.kind}: {self.metric} = {value} ({self.previous} -> {self.level}; {self.rule})"
        )


def level_changes(
    posted: dict[str, str],
    levels: dict[str, str],
    values: dict[str, float | None],
    rules: dict[str, str],
) -> list[LevelChange]:
    """The thresholds whose level is not the one last posted (never posted = `ok`)."""
    return [
        LevelChange(
            metric, posted.get(metric, OK), level, values.get(metric), rules.get(metric, "")
        )
        for metric, level in sorted(levels.items())
        if level in _SEVERITY and level != posted.get(metric, OK)
    ]


def _escape(text: str) -> str:
    # The three characters Slack's mrkdwn gives a meaning to.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(changes: list[LevelChange], *, source: str) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook payload (`text`, plus one attachment per change).

    A change to CRITICAL mentions the channel (`<!channel>`): the page of the system we
    replace; WARNING and recoveries are plain messages.
    """
    worst = max((c.level for c in changes), key=_SEVERITY.__getitem__, default=OK)
    page = "<!channel> " if any(c.level == CRITICAL for c in changes) else ""
    headline = ", ".join(f"{c.kind} {c.metric}" for c in changes)
    return {
        "text": f"{page}enrichment_assets health: {_escape(headline)}",
        "attachments": [
            {
                "color": _COLOUR[c.level],
                "title": _escape(f"{c.kind}: {c.metric}"),
                "text": _escape(c.line()),
                "fields": [
                    {"title": "level", "value": c.level, "short": True},
                    {"title": "previous", "value": c.previous, "short": True},
                    {
                        "title": "value",
                        "value": "n/a" if c.value is None else f"{c.value:g}",
                        "short": True,
                    },
                    {"title": "threshold", "value": _escape(c.rule), "short": True},
                ],
                "footer": _escape(source),
            }
            for c in changes
        ],
        "enrich": {
            "level": worst,
            "changes": [
                {
                    "metric": c.metric,
                    "previous": c.previous,
                    "level": c.level,
                    "value": c.value,
                    "threshold": c.rule,
                }
                for c in changes
            ],
        },
    }


def post_json(url: str, payload: dict[str, Any], timeout_s: float) -> int:
    """POST `payload` as JSON; the HTTP status, or AlertDeliveryError in one line."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        raise AlertDeliveryError(f"the webhook answered HTTP {error.code}") from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise AlertDeliveryError(f"the webhook is unreachable: {reason}") from error
