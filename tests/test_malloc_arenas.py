"""The `enrich` process caps glibc's malloc arenas (`malloc_arenas`), unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Eight threads allocate at once, then glibc's malloc_info lists the arenas (`<heap nr=`).
PROBE = textwrap.dedent(
    """
    import ctypes, os, sys, tempfile, threading
    from enrichment_assets.cli.malloc_arenas import limit_malloc_arenas

    print("limited:", limit_malloc_arenas() if sys.argv[1] == "limit" else None)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.fdopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    start = threading.Barrier(8)

    def allocate():
        start.wait()
        for _ in range(200):
            libc.free(libc.malloc(4096))

    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with tempfile.TemporaryFile() as report:
        stream = libc.fdopen(os.dup(report.fileno()), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        report.seek(0)
        print("arenas:", report.read().decode().count("<heap nr="))
    """
)


def _arenas(mode: str, env: dict[str, str]) -> tuple[str, int]:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, timeout=60
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    limited, arenas = probe.stdout.splitlines()
    return limited, int(arenas.removeprefix("arenas: "))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_enrich_caps_malloc_arenas_unless_the_environment_sets_them() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _arenas("none", env)[1] > 2  # the default: an arena per concurrent thread
    assert _arenas("limit", env) == ("limited: True", 2)
    # glibc's own variable wins: the call leaves it alone.
    assert _arenas("limit", {**env, "MALLOC_ARENA_MAX": "3"}) == ("limited: False", 3)


# Polars allocates and frees about 160 MB; how much of it is still resident afterwards.
POLARS_PROBE = textwrap.dedent(
    """
    import os, sys
    from enrichment_assets.cli.malloc_arenas import purge_polars_memory_promptly

    print("purged:", purge_polars_memory_promptly() if sys.argv[1] == "purge" else None)
    import polars as pl

    def rss_mib():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    before = rss_mib()
    frame = pl.DataFrame({"n": pl.int_range(0, 20_000_000, eager=True)})
    assert frame.sort("n", descending=True).height == 20_000_000
    del frame
    print("kept MiB:", round(rss_mib() - before))
    print("conf:", os.environ.get("_RJEM_MALLOC_CONF"))
    """
)


def _polars_probe(mode: str, env: dict[str, str]) -> list[str]:
    probe = subprocess.run(
        [sys.executable, "-c", POLARS_PROBE, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    return probe.stdout.splitlines()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Polars' jemalloc")
def test_enrich_has_polars_give_freed_memory_back_at_once_unless_told_otherwise() -> None:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    _, kept_by_default, _ = _polars_probe("none", env)
    purged, kept, conf = _polars_probe("purge", env)
    assert purged == "purged: True"
    assert int(kept.removeprefix("kept MiB: ")) < 60  # of the 160 MB freed
    # Polars' own decay keeps what it freed resident (measured: about 320 MiB).
    assert int(kept_by_default.removeprefix("kept MiB: ")) > int(kept.removeprefix("kept MiB: "))
    assert conf.endswith(",dirty_decay_ms:0,muzzy_decay_ms:0")  # after Polars' defaults
    # A configuration in the environment wins: the call leaves it alone.
    purged, _, conf = _polars_probe("purge", {**env, "_RJEM_MALLOC_CONF": "narenas:2"})
    assert purged == "purged: False"
    assert conf.endswith(",narenas:2") and "dirty_decay_ms:0" not in conf
