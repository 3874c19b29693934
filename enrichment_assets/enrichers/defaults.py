"""Defaults of the `openai` enricher's limits, in a module that imports nothing heavy.

`settings` (loaded with the definitions) reads them; the modules that use them import
the OpenAI client, which a run with the heuristic enricher never loads (40 MB).
"""

DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024  # a 600-token answer is ~3 KB
DEFAULT_RETRY_BUDGET_S = 5.0
DEFAULT_BREAKER_WINDOW = 20
