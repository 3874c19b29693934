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
