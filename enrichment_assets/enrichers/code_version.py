"""The code version of the AI annotations: which enricher, model, prompt and schema.

`enriched_conversations` and `conversation_summaries` carry it as their Dagster
`code_version`, so a partition materialized under another one shows as stale in
the UI ("has a new code version"), and `enrich run --stale` re-enriches exactly
those. It reads `enricher=openai|model=gpt-4o-mini|prompt=annotate-v1|schema=1a2b3c4d`:
a person sees what changed. The enrichment cache key is built from the same parts
(model, prompt version, annotation JSON schema: `cache.annotation_cache_key`), so a
new version is a cache miss by construction, never an old answer.

The version is computed when the code location loads, from the same environment
the runs read (`ENRICH_ENRICHER`, `ENRICH_LLM_MODEL`); a model changed only in a
run's resource config is recorded in each row's `enrichment.model`, not here.
"""

from __future__ import annotations

import hashlib

import orjson

from enrichment_assets.enrichers import annotation
from enrichment_assets.enrichers.base import ANNOTATION_SCHEMA
from enrichment_assets.enrichers.settings import LLMSettings

_PARTS = ("enricher", "model", "prompt", "schema")


def schema_digest() -> str:
    """A short digest of the annotation's output schema (columns and the JSON schema)."""
    payload = orjson.dumps(
        {
            "columns": {name: str(dtype) for name, dtype in ANNOTATION_SCHEMA.items()},
            "json_schema": annotation.ANNOTATION_JSON_SCHEMA,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(payload).hexdigest()[:8]


def enrichment_code_version(settings: LLMSettings) -> str:
    """The code version of annotations made with `settings` (see the module docstring)."""
    if settings.enricher == "heuristic":
        # Its rules, SQL and lexicons are its prompt: a digest of them (heuristic.py).
        from enrichment_assets.enrichers.heuristic import HeuristicEnricher

        model, prompt = "heuristic", HeuristicEnricher().prompt_version
    else:
        model, prompt = settings.model, annotation.PROMPT_VERSION
    parts = (settings.enricher, model, prompt, schema_digest())
    return "|".join(f"{name}={value}" for name, value in zip(_PARTS, parts, strict=True))


def version_parts(version: str | None) -> dict[str, str]:
    """{part: value} of a code version (empty for None or another shape)."""
    parts = dict(item.partition("=")[::2] for item in (version or "").split("|") if "=" in item)
    return parts if set(parts) == set(_PARTS) else {}


def describe_change(recorded: str | None, current: str) -> str:
    """What changed between two code versions, in one line for people."""
    old, new = version_parts(recorded), version_parts(current)
    if not old:
        return f"materialized under code version {recorded!r}, now {current!r}"
    changes = [f"{name} {old[name]} -> {new[name]}" for name in _PARTS if old[name] != new[name]]
    return "; ".join(changes) or "same code version"
