"""Running the `enrich` command in the test's own process, as the console script does."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import orjson
import pytest

from enrichment_assets.cli.commands import main


@dataclass
class Invocation:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return orjson.loads(self.stdout)


def enrich(capsys: pytest.CaptureFixture[str], *args: str) -> Invocation:
    """Run `enrich ARGS...` in this process, as the console script does."""
    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["enrich", *args]
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return Invocation(code, captured.out, captured.err)
