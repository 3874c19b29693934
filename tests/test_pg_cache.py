"""The LLM annotation cache in the application database, shared by every machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from enrichment_assets.app_db.llm_cache import PostgresEnrichmentCache
from enrichment_assets.enrichers.cache import (
    CachedAnnotation,
    EnrichmentCache,
    open_enrichment_cache,
)
from tests.llm_fixtures import make_conversations
from tests.llm_server import Faults, LoopbackLLMServer
from tests.postgres import requires_postgres

pytestmark = requires_postgres

# One process: annotate five conversations with the openai enricher, caching under the
# given folder (or the application database when ENRICH_APP_DB_URL is set); print how many
# came from the cache.
_ANNOTATE = """
import os, sys
from pathlib import Path
from enrichment_assets.enrichers.settings import LLMSettings
from tests.llm_fixtures import make_conversations
settings = LLMSettings.from_env()
url = os.environ.get("ENRICH_APP_DB_URL")
annotator = settings.build_enricher(Path(sys.argv[1]), app_db_url=url)
out = annotator.annotate(make_conversations(5))
assert out["error"].null_count() == len(out), out["error"].to_list()
print(annotator.cache.__class__.__name__)
"""


def _annotate_in_process(folder: Path, server: LoopbackLLMServer, app_db: str | None) -> str:
    env = {
        **os.environ,
        "ENRICH_ENRICHER": "openai",
        "ENRICH_LLM_BASE_URL": server.base_url,
        "ENRICH_LLM_API_KEY": "sk-test",
        "ENRICH_LLM_MAX_ATTEMPTS": "1",
    }
    env.pop("ENRICH_APP_DB_URL", None)
    if app_db is not None:
        env["ENRICH_APP_DB_URL"] = app_db
    done = subprocess.run(
        [sys.executable, "-c", _ANNOTATE, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_conversation_paid_by_one_process_is_a_hit_for_another_machine(
    app_db: str, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    first = _annotate_in_process(tmp_path / "machine-a", llm_server, app_db)
    assert first == "PostgresEnrichmentCache"
    assert llm_server.counters.chat_requests == 5
    # Another process, another local folder (another machine): every answer is a hit.
    _annotate_in_process(tmp_path / "machine-b", llm_server, app_db)
    assert llm_server.counters.chat_requests == 5
    assert not (tmp_path / "machine-a").exists() and not (tmp_path / "machine-b").exists()
    # Without the application database, the other machine's own SQLite file pays again.
    assert _annotate_in_process(tmp_path / "machine-c", llm_server, None) == "EnrichmentCache"
    assert llm_server.counters.chat_requests == 10


def test_failures_are_never_stored_and_the_first_answer_wins(
    app_db: str, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    from enrichment_assets.enrichers.settings import LLMSettings

    llm_server.configure(Faults(targeted={"BROKEN": "http_500"}))
    settings = LLMSettings(
        enricher="openai", base_url=llm_server.base_url, api_key="sk-test", max_attempts=1
    )
    annotator = settings.build_enricher(tmp_path, app_db_url=app_db)
    out = annotator.annotate(make_conversations(4, marked={0: "BROKEN"}))
    assert out["error"].is_not_null().to_list() == [True, False, False, False]
    cache = open_enrichment_cache(tmp_path, app_db)
    assert isinstance(cache, PostgresEnrichmentCache) and len(cache) == 3
    # ON CONFLICT DO NOTHING: a second answer for a stored key changes nothing.
    key = next(iter(cache.get_many(_all_keys(app_db))))
    other = CachedAnnotation(key, "m", "v", {"label": "other"})
    assert cache.put_many([other]) == 0
    with cache.writer() as writer:
        writer.put(other)
    assert cache.get_many([key])[key].annotation != {"label": "other"}
    assert isinstance(open_enrichment_cache(tmp_path, None), EnrichmentCache)


def _all_keys(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT key FROM llm_annotation_cache")]


def test_a_database_without_the_migration_is_one_clear_error(new_database) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError, match="enrich db upgrade"):
        PostgresEnrichmentCache(new_database("nocache"))


def test_cached_annotation_bytes_survive_the_round_trip(app_db: str) -> None:
    cache = PostgresEnrichmentCache(app_db)
    annotation = {"z": 1, "a": [0.1, "é"], "m": None}
    assert cache.put_many([CachedAnnotation("k", "m", "v", annotation, 3, 4)]) == 1
    back = cache.get_many(["k", "absent"])
    assert list(back) == ["k"] and list(back["k"].annotation) == ["z", "a", "m"]
    assert (back["k"].prompt_tokens, back["k"].completion_tokens) == (3, 4)
    assert back["k"].annotation == annotation
