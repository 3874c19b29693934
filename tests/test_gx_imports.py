"""The GX context leaves the heavy modules our suites never use unloaded until used."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from enrichment_assets.checks.gx_context import gate_context

    context = gate_context(Path(sys.argv[1]))
    loaded = sorted(
        name for name in ("altair", "scipy.stats", "psycopg2")
        if not type(sys.modules.get(name)).__name__.startswith("_Deferred")
    )
    print("loaded after the context:", loaded)

    # The expectation that uses both still works: its modules load on first use.
    import great_expectations.expectations.core.expect_column_kl_divergence_to_be_less_than as kl
    print("norm.cdf(0) =", kl.stats.norm.cdf(0))
    print("altair chart:", kl.alt.Chart.__name__)
    print("real scipy.stats:", type(sys.modules["scipy.stats"]).__name__)
    # The PostgreSQL driver too, submodules included, as SQLAlchemy's dialect loads it.
    import sqlalchemy
    engine = sqlalchemy.create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none")
    from psycopg2 import extensions
    print("psycopg2:", engine.dialect.dbapi.__name__, extensions.__name__)
    """
)


def test_gx_context_defers_altair_scipy_stats_and_psycopg2_until_first_use(tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "reports")],
        capture_output=True,
        text=True,
        timeout=180,
        env={"GX_ANALYTICS_ENABLED": "false", "PATH": "/usr/bin:/bin"},
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    lines = probe.stdout.splitlines()
    assert "loaded after the context: []" in lines
    assert "norm.cdf(0) = 0.5" in lines
    assert "altair chart: Chart" in lines
    assert "real scipy.stats: module" in lines
    assert "psycopg2: psycopg2 psycopg2.extensions" in lines
