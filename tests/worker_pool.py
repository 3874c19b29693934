"""Run workers as separate processes, the way pods would run (tests and benchmarks).

A `Cluster` is what its workers share: one Dagster instance on PostgreSQL
(`deploy/dagster.yaml`, `DAGSTER_PG_URL`), one application database, one lake and one
loopback LLM endpoint. Each worker gets its own working directory, `DAGSTER_HOME` and
`TMPDIR`, and nothing else on disk. The lake is named by environment variables only
(`lake_env`): a local folder (`ENRICH_DATA_DIR`), or object storage (`ENRICH_LAKE_URI`,
`ENRICH_S3_ENDPOINT` and credentials), where each worker, the lander and the reader have
a working copy of their own (`object_store`) and share no folder at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance

from enrichment_assets.cli.runner import land_files
from enrichment_assets.lake import Lake
from enrichment_assets.object_store import StoreSettings, mirror_of, synced

ROOT = Path(__file__).resolve().parents[1]
ENRICH = str(Path(sys.executable).with_name("enrich"))
DEPLOY_INSTANCE = ROOT / "deploy" / "dagster.yaml"
# What a worker must not inherit from the test's own environment.
_PRIVATE = (
    "DAGSTER_HOME",
    "ENRICH_DATA_DIR",
    "ENRICH_LANDING_DIR",
    "ENRICH_APP_DB_URL",
    "ENRICH_LAKE_URI",
    "ENRICH_S3_ENDPOINT",
)


@dataclass(frozen=True)
class Cluster:
    root: Path  # the workers' own folders are made under it
    dagster_pg_url: str
    app_db_url: str
    lake_env: dict[str, str]  # {"ENRICH_DATA_DIR": folder} or {"ENRICH_LAKE_URI": "s3://…", …}
    llm_base_url: str

    @property
    def on_object_store(self) -> bool:
        return "ENRICH_LAKE_URI" in self.lake_env

    def working_copy(self, name: str) -> Path:
        """The lake as `name` sees it: its own working copy on object storage, else the
        shared folder."""
        if self.on_object_store:
            return self.root / name / "work"
        return Path(self.lake_env["ENRICH_DATA_DIR"])

    def store(self) -> StoreSettings:
        env = self.lake_env
        return StoreSettings(
            env["ENRICH_LAKE_URI"],
            env["ENRICH_S3_ENDPOINT"],
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
        )

    def home(self, name: str) -> Path:
        """A private folder with its own DAGSTER_HOME (the production instance file)."""
        home = self.root / name / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEPLOY_INSTANCE, home / "dagster.yaml")
        (self.root / name / "tmp").mkdir(exist_ok=True)
        return home

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE}
        return {
            **env,
            **self.lake_env,
            "ENRICH_DATA_DIR": str(self.working_copy(name)),
            "DAGSTER_HOME": str(self.home(name)),
            "DAGSTER_PG_URL": self.dagster_pg_url,
            "ENRICH_APP_DB_URL": self.app_db_url,
            "TMPDIR": str(self.root / name / "tmp"),
            "ENRICH_ENRICHER": "openai",
            "ENRICH_LLM_BASE_URL": self.llm_base_url,
            "ENRICH_LLM_API_KEY": "sk-loopback",
            "ENRICH_LLM_TIMEOUT_S": "120",
            "ENRICH_WORKERS": "1",
            "GX_ANALYTICS_ENABLED": "false",
        }

    def start_worker(self, name: str, *args: str) -> subprocess.Popen:
        """`enrich worker --until-idle` in its own folder and process group."""
        return subprocess.Popen(
            [ENRICH, "worker", "--until-idle", "--poll-s", "0.3", *args],
            env=self.env(name),
            cwd=self.root / name,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    @contextmanager
    def instance(self) -> Iterator[DagsterInstance]:
        """The shared instance, opened in this process (as a lander or an operator would)."""
        home = self.home("operator")
        saved = os.environ.get("DAGSTER_PG_URL")
        os.environ["DAGSTER_PG_URL"] = self.dagster_pg_url
        try:
            with DagsterInstance.from_config(str(home)) as instance:
                yield instance
        finally:
            if saved is None:
                os.environ.pop("DAGSTER_PG_URL", None)
            else:
                os.environ["DAGSTER_PG_URL"] = saved

    def lake(self, name: str = "operator") -> Lake:
        return Lake(self.working_copy(name), app_db_url=self.app_db_url)

    @contextmanager
    def synced(self, name: str) -> Iterator[Lake]:
        """`name`'s lake, pulled from the object store first and pushed after (a no-op
        on a shared folder)."""
        lake = self.lake(name)
        mirror = mirror_of(lake.data_dir, self.store()) if self.on_object_store else None
        with synced(mirror):
            yield lake

    def land(self, files: list[Path]) -> list[str]:
        """Register each file as a batch partition of the shared instance (what the
        `new_raw_files` sensor does)."""
        with self.instance() as instance, self.synced("operator") as lake:
            return land_files(lake, instance, files)

    def store_listing(self) -> list[str]:
        """Every object key under the cluster's lake prefix."""
        return list(self.store_objects())

    def store_objects(self) -> dict[str, int]:
        """Every object under the cluster's lake prefix: key -> size in bytes."""
        from pyarrow import fs

        mirror = mirror_of(self.lake().data_dir, self.store())
        assert mirror is not None
        root = mirror.location.root
        selector = fs.FileSelector(root, recursive=True)
        infos = mirror.fs.get_file_info(selector)
        return {info.path: info.size for info in infos if info.is_file}

    def export_files(self) -> dict[str, bytes]:
        """Every per-batch export file, by path relative to the lake, as a new reader
        (a working copy of its own) finds them."""
        with self.synced("reader") as lake:
            return export_files(lake.data_dir)


def export_files(lake_dir: Path) -> dict[str, bytes]:
    """Every per-batch export file, by path relative to the lake folder."""
    return {
        str(path.relative_to(lake_dir)): path.read_bytes()
        for path in sorted((lake_dir / "export").rglob("*.jsonl"))
    }
