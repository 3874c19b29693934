"""The Great Expectations context the quality gates run in, and its Data Docs.

GX 1.x is called directly (the `dagster-ge` integration does not support it) and
imported lazily: importing it takes seconds, and `enrich --help` or a sensor tick
must not pay for that. The context is ephemeral (nothing to configure or lock on
disk) except for two folders under `<data dir>/reports/`:

    gx/validations/   the latest validation results (JSON): those the Data Docs index lists
    gx/archive/       every older result, moved there as is (`archive_old_results`)
    data_docs/        the generated HTML site: index.html, one page per suite and result

The suites come from `expectations/<asset>.json` (top level of the repository, package
data in the wheel: `package_data_path`); those files are the source of truth, loaded into
the context each time it is built.

The pages show data from the batches (unexpected values are ids and text from input),
so they are rendered with our views (`data_docs_views`), which escape every value GX
would insert raw. A partition key names a validation run and so a folder, a link and
a script string of the index: it is used as is only when it is a plain name
(`docs_run_name`), as every key this pipeline makes is.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any

from enrichment_assets import settings as env_settings
from enrichment_assets.checks.deferred_imports import GX_UNUSED_IMPORTS, defer
from enrichment_assets.checks.gate_chunks import (
    ROWS,
    ChunkPlan,
    columns_read,
    group_by_plan,
    merge_suite_results,
)
from enrichment_assets.package_data import package_data_path
from enrichment_assets.workers import read_ahead, release_memory

EXPECTATIONS_DIR = package_data_path("expectations")
DATASOURCE = "lake"
BATCH_DEFINITION = "partition"
DOCS_SITE = "local_site"
# The Data Docs index lists this many of the latest validation results.
DOCS_INDEX_RESULTS = 200
_VIEWS_MODULE = "enrichment_assets.checks.data_docs_views"
_INDEX_MODULE = "enrichment_assets.checks.data_docs_index"
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
# (how the rows split, the columns read) -> the frames a group of expectations runs on.
FramesOf = Callable[[ChunkPlan, set[str]], Iterator[Any]]
_PLAIN_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def suite_path(asset_name: str) -> Path:
    return EXPECTATIONS_DIR / f"{asset_name}.json"


def suite_names() -> list[str]:
    return sorted(p.stem for p in EXPECTATIONS_DIR.glob("*.json"))


def load_suite_dict(asset_name: str) -> dict[str, Any]:
    path = suite_path(asset_name)
    if not path.is_file():
        raise FileNotFoundError(f"no expectation suite for {asset_name!r} at {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def data_docs_dir(reports_dir: Path) -> Path:
    return reports_dir / "data_docs"


def docs_run_name(partition: str) -> str:
    """The Data Docs run name of a partition: the key itself when it is a plain name.

    Any other key (one typed in the Dagster UI can hold `/`, `..`, quotes or markup)
    is its plain characters and a hash, never a path or HTML.
    """
    if _PLAIN_RUN_NAME.fullmatch(partition):
        return partition
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", partition)[:40].strip("-")
    digest = hashlib.sha256(partition.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{prefix}-{digest}" if prefix else f"partition-{digest}"


def _project_config(reports_dir: Path) -> dict[str, Any]:
    def filesystem(folder: Path) -> dict[str, Any]:
        return {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)}

    in_memory = {"class_name": "InMemoryStoreBackend"}
    page_view = {"module_name": _VIEWS_MODULE, "class_name": "EscapedPageView"}
    return {
        "config_version": 4.0,
        "progress_bars": {"globally": False, "metric_calculations": False},
        "stores": {
            "expectations_store": {"class_name": "ExpectationsStore", "store_backend": in_memory},
            "validation_results_store": {
                "class_name": "ValidationResultsStore",
                "store_backend": filesystem(results_dir(reports_dir)),
            },
            "checkpoint_store": {"class_name": "CheckpointStore", "store_backend": in_memory},
            "validation_definition_store": {
                "class_name": "ValidationDefinitionStore",
                "store_backend": in_memory,
            },
        },
        "expectations_store_name": "expectations_store",
        "validation_results_store_name": "validation_results_store",
        "checkpoint_store_name": "checkpoint_store",
        "data_docs_sites": {
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": filesystem(data_docs_dir(reports_dir)),
                "site_index_builder": {
                    "module_name": _INDEX_MODULE,
                    "class_name": "LatestResultsIndexBuilder",
                    "validation_results_limit": DOCS_INDEX_RESULTS,
                    "view": {"module_name": _VIEWS_MODULE, "class_name": "EscapedIndexPageView"},
                },
                "site_section_builders": {
                    "expectations": {"view": page_view},
                    # GX's default filter hides runs whose name includes "profiling" (and
                    # renders them as profiling pages): a partition is free to be so named.
                    "validations": {"view": page_view, "run_name_filter": {"matches_regex": "."}},
                    "profiling": "None",
                },
            }
        },
    }


class GateContext:
    """An ephemeral GX context holding every suite, one validation definition per layer."""

    def __init__(self, reports_dir: Path) -> None:
        env_settings.disable_gx_analytics()
        defer(*GX_UNUSED_IMPORTS)  # about 90 MiB our suites never use (`deferred_imports`)
        import great_expectations as gx

        self.reports_dir = reports_dir
        self.context = gx.get_context(mode="ephemeral", project_config=_project_config(reports_dir))
        datasource = self.context.data_sources.add_pandas(DATASOURCE)
        self.definitions: dict[str, Any] = {}
        for name in suite_names():
            suite = self.context.suites.add(gx.ExpectationSuite(**load_suite_dict(name)))
            batches = datasource.add_dataframe_asset(name).add_batch_definition_whole_dataframe(
                BATCH_DEFINITION
            )
            self.definitions[name] = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batches, suite=suite)
            )

    def suite(self, asset_name: str) -> Any:
        return self.definitions[asset_name].suite

    def validate(
        self,
        asset_name: str,
        frames_of: FramesOf,
        partition: str,
        parameters: dict[str, Any],
        one_frame: bool = False,
    ) -> Any:
        """Run the asset's suite on the frames `frames_of(plan, columns)` gives for each
        group of its expectations (see `gate_chunks`); the chunks' results are merged
        into one suite result, stored (run name: the partition's) and returned.

        `one_frame`: the layer fits in one chunk, so every expectation is judged at once
        on one frame of every row (one read of the file, one GX validation): splitting by
        plan would only read the file again for each group."""
        definition = self.definitions[asset_name]
        configs = definition.suite.expectation_configurations
        # The suite file's own entries (row conditions as written): the same order.
        entries = load_suite_dict(asset_name)["expectations"]
        if [e["type"] for e in entries] != [c.type for c in configs]:
            raise RuntimeError(f"suite {asset_name}: the loaded suite differs from its file")
        groups = (
            {ChunkPlan(ROWS): list(range(len(entries)))} if one_frame else group_by_plan(entries)
        )
        per_expectation, template, batch_id = self._validate_groups(
            asset_name, groups, entries, frames_of, parameters
        )
        results, statistics = merge_suite_results(
            configs, per_expectation, RESULT_FORMAT["partial_unexpected_count"]
        )
        template.results = results
        template.statistics = statistics
        template.success = statistics["unsuccessful_expectations"] == 0
        self._store_result(asset_name, template, batch_id, partition)
        return template

    def _validate_groups(
        self,
        asset_name: str,
        groups: dict[ChunkPlan, list[int]],
        entries: list[dict[str, Any]],
        frames_of: FramesOf,
        parameters: dict[str, Any],
    ) -> tuple[dict[int, list[Any]], Any, str | None]:
        """Each group of expectations on each of its frames: every expectation's results
        (one per frame, by suite position), the first frame's suite result and batch id."""
        from types import SimpleNamespace

        from great_expectations.validator.v1_validator import Validator

        definition = self.definitions[asset_name]
        configs = definition.suite.expectation_configurations
        per_expectation: dict[int, list[Any]] = {i: [] for i in range(len(configs))}
        template: Any = None
        batch_id: str | None = None
        for plan, positions in groups.items():
            group = SimpleNamespace(
                name=asset_name, expectation_configurations=[configs[i] for i in positions]
            )
            columns = columns_read(entries[i].get("kwargs", {}) for i in positions)
            # The next frame is read (DuckDB, Arrow) while GX judges this one.
            for frame in read_ahead(frames_of(plan, columns)):
                validator = Validator(
                    batch_definition=definition.batch_definition,
                    batch_parameters={"dataframe": frame},
                    result_format=RESULT_FORMAT,
                )
                chunk = validator.validate_expectation_suite(group, parameters)  # type: ignore[arg-type]
                for position, result in zip(positions, chunk.results, strict=True):
                    per_expectation[position].append(result)
                if template is None:
                    template, batch_id = chunk, validator.active_batch_id
                del frame, validator
                release_memory()  # a chunk's frames and metrics: gone before the next
        return per_expectation, template, batch_id

    def _store_result(
        self, asset_name: str, result: Any, batch_id: str | None, partition: str
    ) -> None:
        """Name the merged result's run after the partition and store it (Data Docs
        lists the stored results)."""
        from great_expectations.constants import DATAFRAME_REPLACEMENT_STR
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        run_id = RunIdentifier(run_name=docs_run_name(partition))
        result.meta.update(
            {
                "validation_id": self.definitions[asset_name].id,
                "checkpoint_id": None,
                "run_id": run_id,
                "validation_time": run_id.run_time,
                "batch_parameters": {"dataframe": DATAFRAME_REPLACEMENT_STR},
            }
        )
        suite_id = ExpectationSuiteIdentifier(name=asset_name)
        self.context.validation_results_store.store_validation_results(
            suite_validation_result=result,
            suite_validation_result_identifier=ValidationResultIdentifier(
                batch_identifier=batch_id, expectation_suite_identifier=suite_id, run_id=run_id
            ),
            expectation_suite_identifier=suite_id,
        )

    def _stale_suite_pages(self) -> list[Any]:
        """Suites whose Data Docs page is missing or older than their JSON file."""
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
        )

        pages = data_docs_dir(self.reports_dir) / "expectations"
        return [
            ExpectationSuiteIdentifier(name=name)
            for name in self.definitions
            if not (pages / f"{name}.html").exists()
            or (pages / f"{name}.html").stat().st_mtime < suite_path(name).stat().st_mtime
        ]

    def update_data_docs(self, result: Any) -> Path | None:
        """Render this result's page and the index; returns the page's path."""
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        suite_name = result.suite_name
        run_id = result.meta["run_id"]
        store = self.context.validation_results_store
        # A whole-dataframe batch of a fluent pandas asset is named `<datasource>-<asset>`.
        identifier = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
            run_id=run_id,
            batch_identifier=f"{DATASOURCE}-{suite_name}",
        )
        if not store.has_key(identifier):  # a GX version naming batches otherwise: search
            identifier = next(
                (
                    k
                    for k in store.list_keys()
                    if k.expectation_suite_identifier.name == suite_name and k.run_id == run_id
                ),
                None,
            )
            if identifier is None:
                return None
        with _docs_lock(self.reports_dir):
            archive_old_results(self.reports_dir)
            self.context.build_data_docs(
                site_names=[DOCS_SITE],
                resource_identifiers=[identifier, *self._stale_suite_pages()],
            )
        (url,) = self.context.get_docs_sites_urls(
            resource_identifier=identifier, site_name=DOCS_SITE, only_if_exists=False
        )
        page = url.get("site_url")
        return Path(page.removeprefix("file://")) if page else None


def results_dir(reports_dir: Path) -> Path:
    """Where GX stores the validation results that the Data Docs index lists."""
    return reports_dir / "gx" / "validations"


def archive_old_results(reports_dir: Path) -> int:
    """Move every stored validation result but the latest `DOCS_INDEX_RESULTS` (those the
    Data Docs index lists) from `gx/validations/` to `gx/archive/`, same layout; returns how
    many moved. Call it under `_docs_lock`.

    GX lists, and parses the run time of, every stored result at each Data Docs update:
    3,000 stored results made one update take 2.4 s against 0.14 s for one, and a
    deployment adds four a partition. Archived results keep their JSON and their pages
    (the links in Dagster's check metadata: `data_docs_index`); the index lists the rest.
    """
    store = results_dir(reports_dir)
    # <suite>/<run name>/<run time, %Y%m%dT%H%M%S.%fZ: sorts as time>/<batch>.json
    runs = sorted(
        (run_time.name, run_time)
        for suite in _subfolders(store)
        for run_name in _subfolders(suite)
        for run_time in _subfolders(run_name)
    )
    old = runs[: max(len(runs) - DOCS_INDEX_RESULTS, 0)]
    for _, folder in old:
        target = reports_dir / "gx" / "archive" / folder.relative_to(store)
        target.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileNotFoundError):  # removed meanwhile (someone clearing reports/)
            folder.rename(target)
        with suppress(OSError):  # the run name's last result: its folder goes too
            folder.parent.rmdir()
    return len(old)


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


@contextmanager
def _docs_lock(reports_dir: Path) -> Iterator[None]:
    """Serialize Data Docs builds across processes (parallel partitions share the index)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    with (reports_dir / ".data_docs.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@cache
def _build_gate_context(reports_dir: Path) -> GateContext:
    return GateContext(reports_dir)


_context_lock = threading.Lock()


def gate_context(reports_dir: Path) -> GateContext:
    """One context per process and data folder: building it costs a GX import."""
    with _context_lock:
        return _build_gate_context(reports_dir)


def prewarm_gate_context(reports_dir: Path) -> None:
    """Build the context in a background thread, while the layer's own work runs.

    Importing GX is seconds of Python; the layer's work is mostly in DuckDB, Polars
    and worker processes, which leave this process's GIL free. A failure here is
    left for the gate to raise when it asks for the context itself.
    """

    def build() -> None:
        with suppress(Exception):
            gate_context(reports_dir)

    threading.Thread(target=build, name="gx-context", daemon=True).start()


def build_data_docs(reports_dir: Path) -> Path:
    """(Re)build the whole Data Docs site from the stored results; returns index.html."""
    context = gate_context(reports_dir)
    with _docs_lock(reports_dir):
        archive_old_results(reports_dir)
        context.context.build_data_docs(site_names=[DOCS_SITE])
    return data_docs_dir(reports_dir) / "index.html"
