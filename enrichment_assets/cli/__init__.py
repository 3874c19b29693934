"""The `enrich` command line (commands in `enrichment_assets/cli/commands.py`).

`console_main` is the console script (`enrich = enrichment_assets.cli:console_main`).
"""

from enrichment_assets.cli.commands import app, console_main, main

__all__ = ["app", "console_main", "main"]
