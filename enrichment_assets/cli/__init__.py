"""The `enrich` command line (commands in `enrichment_assets/cli/commands.py`).

`console_main` is the console script (`enrich = enrichment_assets.cli:console_main`). The
commands are imported when it is called, not with this package: a worker process that
multiprocessing spawns re-imports the console script as its main module, and so this
package, and must not load typer and rich (about 12 MiB per worker) for nothing.
"""

from __future__ import annotations

from typing import Any


def console_main() -> None:
    """The `enrich` command (see `commands.console_main`)."""
    from enrichment_assets.cli.commands import console_main as run

    run()


def __getattr__(name: str) -> Any:  # `app` and `main`, imported on first use
    if name in ("app", "main"):
        from enrichment_assets.cli import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "console_main", "main"]
