"""How many glibc malloc arenas the `enrich` process may use, and how soon Polars'
allocator gives freed memory back.

glibc gives each thread that allocates concurrently its own arena (up to eight per
core), and memory freed in one arena serves only that arena: the run's Dagster,
DuckDB, GX and HTTP threads each kept their own high-water mark. Two arenas measured
about 25 MiB less peak RSS on `benchmarks/bench_llm_faults.py` (478 against 503 MiB),
at no measurable cost in time: the heavy allocators (DuckDB, Polars, Arrow) bring their
own, and Python objects are allocated under the GIL anyway.

`MALLOC_ARENA_MAX` in the environment, when set, is glibc's own setting and wins.

Polars allocates with its own jemalloc, which keeps freed pages for a decay time (Polars
sets 500 ms dirty, 1 s muzzy) and purges them only while it is busy: the 60-110 MiB a
status rewrite or a layer read freed stayed resident beside the quality gate that ran
next. `enrich` asks for decay 0 (`_RJEM_MALLOC_CONF`, which Polars appends to its own
defaults), so freed pages go back to the system at once. A value in the environment
wins.
"""

from __future__ import annotations

import ctypes
import sys

from enrichment_assets import settings as env_settings

ARENA_MAX_ENV = "MALLOC_ARENA_MAX"
DEFAULT_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
# Polars' jemalloc reads this (appended to Polars' own defaults) when Polars is imported.
POLARS_JEMALLOC_ENV = "_RJEM_MALLOC_CONF"
POLARS_PROMPT_PURGE = "dirty_decay_ms:0,muzzy_decay_ms:0"


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


def purge_polars_memory_promptly() -> bool:
    """Have Polars' jemalloc give freed pages back at once (call before Polars is
    imported); False when the environment configures it already or Polars is loaded."""
    if env_settings.raw(POLARS_JEMALLOC_ENV) or "polars" in sys.modules:
        return False
    env_settings.default_to(POLARS_JEMALLOC_ENV, POLARS_PROMPT_PURGE)
    return True
