"""The wheel works outside the checkout: built, installed into a fresh virtual environment in
a temporary folder, and `enrich demo` run there (its SQL and expectations come from the
installed package, not from the repository).

Marked `slow` (about a minute on two loaded cores: a fresh environment compiles every module
it imports); `pytest -m "not slow"` leaves it out. Installation takes the locked versions from
uv's cache, so it needs no download once `uv sync` has run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

PROJECT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(UV is None, reason="uv is not on PATH"),
]


def _uv(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [str(UV), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"uv {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def _install_wheel(root: Path) -> Path:
    """Build the wheel, install it with the locked dependencies into `root/venv`; its bin/."""
    dist = root / "dist"
    _uv("build", "--wheel", "--out-dir", str(dist), str(PROJECT), cwd=root)
    (wheel,) = dist.glob("enrichment_assets-*.whl")
    requirements = root / "requirements.txt"
    _uv(
        "export", "--project", str(PROJECT), "--frozen", "--no-dev", "--no-emit-project",
        "--no-hashes", "--quiet", "--output-file", str(requirements), cwd=root,
    )  # fmt: skip
    venv = root / "venv"
    _uv("venv", "--quiet", "--python", sys.executable, str(venv), cwd=root)
    python = venv / "bin" / "python"
    _uv("pip", "install", "--quiet", "--python", str(python), "-r", str(requirements),
        str(wheel), cwd=root)  # fmt: skip
    return venv / "bin"


def test_wheel_installed_outside_the_checkout_runs_the_demo(tmp_path: Path) -> None:
    bin_dir = _install_wheel(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ENRICH_", "DAGSTER_", "VIRTUAL_ENV", "PYTHON"))
    }
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "GX_ANALYTICS_ENABLED": "false"}

    package = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "import enrichment_assets.sql_files as s, enrichment_assets.checks.gx_context as g;"
         "print(s.SQL_DIR); print(g.EXPECTATIONS_DIR)"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    sql_dir, expectations_dir = (Path(line) for line in package.stdout.split())
    assert PROJECT not in sql_dir.parents and PROJECT not in expectations_dir.parents
    assert tmp_path / "venv" in sql_dir.parents, sql_dir
    assert (expectations_dir / "validated_conversations.json").is_file()

    demo = subprocess.run(
        [str(bin_dir / "enrich"), "demo", "-n", "8"],
        cwd=work, env=env, capture_output=True, text=True, timeout=500, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    data = work / "data"
    assert "total" in demo.stdout and str(data / "export") in demo.stdout
    training = sorted((data / "export" / "training").glob("*.jsonl"))
    assert len(training) == 4  # one partition per sample format
    lines = [orjson.loads(line) for f in training for line in f.read_bytes().splitlines()]
    assert len(lines) == 8 and all(line["messages"] for line in lines)
    assert (data / "reports" / "data_docs" / "index.html").is_file()
    # The runs are in the data folder's instance, set up by the shipped dagster.yaml
    # (telemetry off: no welcome banner).
    assert (data / "dagster" / "history" / "runs.db").is_file()
    assert "Welcome to Dagster" not in demo.stdout + demo.stderr
