"""Modules GX imports at its own import time but our suites never use, loaded on first use.

`import great_expectations` imports every expectation class, and two of them pull in
heavy libraries at module level: `expect_column_kl_divergence_to_be_less_than` imports
`altair` (its chart renderer) and `scipy.stats`, and the KS-test metrics import
`scipy.stats`. Together they cost about 85 MiB of the run's process (measured:
`enrichment_assets.definitions` plus GX is 440 MiB RSS, 354 MiB with these deferred),
for expectations none of `expectations/*.json` uses. GX also imports the `psycopg2`
driver for its PostgreSQL datasources (6 MiB; our gates validate pandas frames).

`defer` puts a stand-in module under the name: importing it (`import altair as alt`,
`from scipy import stats`) succeeds at no cost, and the first attribute read on it
imports the real module and answers from it. So a suite that does use one of those
expectations still works, and pays for the import only then.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# What GX imports at module level for expectations and metrics our suites do not use.
GX_UNUSED_IMPORTS = ("altair", "scipy.stats", "psycopg2")


class _Deferred(types.ModuleType):
    """A stand-in for a module: the real one is imported on first attribute access.

    Only attributes the stand-in lacks reach `__getattr__`, so the import system's
    own reads (`__spec__`, `__name__`) do not load it.
    """

    def __getattr__(self, name: str) -> Any:
        real = self.__dict__.get("_deferred_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]  # let the import system load the real one
            real = importlib.import_module(self.__name__)
            self.__dict__["_deferred_real"] = real
        return getattr(real, name)


def defer(*names: str) -> None:
    """Stand-ins for these modules, unless they are imported already."""
    for name in names:
        if name in sys.modules:
            continue
        parent, _, child = name.rpartition(".")
        if parent and parent not in sys.modules:
            importlib.import_module(parent)
        stand_in = _Deferred(name)
        sys.modules[name] = stand_in
        if parent:
            # `from scipy import stats` reads the attribute on the package.
            setattr(sys.modules[parent], child, stand_in)
