"""How many glibc malloc arenas the `enrich` process may use.

glibc gives each thread that allocates concurrently its own arena (up to eight per
core), and memory freed in one arena serves only that arena: the run's Dagster,
DuckDB, GX and HTTP threads each kept their own high-water mark. Two arenas measured
about 25 MiB less peak RSS on `benchmarks/bench_llm_faults.py` (478 against 503 MiB),
at no measurable cost in time: the heavy allocators (DuckDB, Polars, Arrow) bring their
own, and Python objects are allocated under the GIL anyway.

`MALLOC_ARENA_MAX` in the environment, when set, is glibc's own setting and wins.
"""

from __future__ import annotations

import ctypes

from enrichment_assets import settings as env_settings

ARENA_MAX_ENV = "MALLOC_ARENA_MAX"
DEFAULT_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap this process's malloc arenas (call before threads start); False when the
    environment sets it already or the C library is not glibc."""
    if env_settings.raw(ARENA_MAX_ENV):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))
