"""Benchmark: what keeping the operator's view current adds to `enrich run`.

    uv run python benchmarks/bench_operator_view.py --partitions 4 --conversations 2000

In a fresh data folder and Dagster instance: lands P generated batches and runs them
through the four layers (the baseline, as `enrich run` does), then times, in the same
process:
- the `pipeline_health` run `enrich run` now ends with (asset and its six checks), against
  the baseline and against `pipeline_health()` computed alone (no Dagster run);
- one `health_alerts` tick that posts a level change to a loopback webhook, and one whose
  webhook takes the connection and never answers (bounded by the resource's `timeout_s`).
Prints seconds and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _receiver() -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--conversations", type=int, default=2000, help="in all")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-operator-view-"))
    os.environ["ENRICH_DATA_DIR"] = str(root / "data")
    from dagster import SensorResult, build_sensor_context, instance_for_test

    from enrichment_assets.cli.runner import (
        land_files,
        materialize_partitions,
        materialize_pipeline_health,
    )
    from enrichment_assets.defs.health.alerts import health_alerts
    from enrichment_assets.defs.resources import AlertWebhookResource
    from enrichment_assets.health_metrics import pipeline_health
    from enrichment_assets.lake import Lake
    from enrichment_assets.sample_data import write_sample_files

    lake = Lake(root / "data")
    files = write_sample_files(root / "in", args.conversations, files=args.partitions, seed=7)
    with instance_for_test() as instance:
        started = time.perf_counter()
        partitions = land_files(lake, instance, files)
        outcomes = materialize_partitions(instance, partitions)
        layers_s = time.perf_counter() - started
        assert all(o.success for o in outcomes), outcomes

        health_run, health_alone = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            assert materialize_pipeline_health(instance).success
            health_run.append(time.perf_counter() - t)
            t = time.perf_counter()
            pipeline_health(lake)
            health_alone.append(time.perf_counter() - t)
        run_s, alone_s = statistics.median(health_run), statistics.median(health_alone)

        server, url = _receiver()
        hanging = socket.socket()
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(8)
        try:
            # A cursor that says every level was "critical": this tick posts the changes.
            cursor = '{"levels": {"completeness_rate": "critical", "backlog": "critical"}}'
            t = time.perf_counter()
            with build_sensor_context(
                instance=instance,
                cursor=cursor,
                resources={"alert_webhook": AlertWebhookResource(url=url)},
            ) as context:
                posted = health_alerts(context)
            post_s = time.perf_counter() - t
            assert isinstance(posted, SensorResult), posted
            down_url = f"http://127.0.0.1:{hanging.getsockname()[1]}/hook"
            t = time.perf_counter()
            with build_sensor_context(
                instance=instance,
                cursor=cursor,
                resources={"alert_webhook": AlertWebhookResource(url=down_url, timeout_s=2)},
            ) as context:
                health_alerts(context)
            down_s = time.perf_counter() - t
        finally:
            server.shutdown()
            hanging.close()

    print(f"{args.conversations} conversations in {args.partitions} partitions")
    print(f"layers (baseline):            {layers_s:8.2f} s")
    print(
        f"pipeline_health run:          {run_s:8.2f} s  ({run_s / layers_s:.1%} of the baseline; "
        f"median of {args.repeat})"
    )
    print(
        f"pipeline_health() alone:      {alone_s:8.2f} s  "
        f"(the Dagster run is {run_s / alone_s:.1f}x the computation)"
    )
    print(f"alert tick, webhook up:       {post_s:8.2f} s")
    print(f"alert tick, webhook hanging:  {down_s:8.2f} s  (timeout_s = 2)")


if __name__ == "__main__":
    main()
