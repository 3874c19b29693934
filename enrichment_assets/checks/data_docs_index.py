"""The Data Docs index builder: GX's, without walking every page the site ever had.

GX's `DefaultSiteIndexBuilder` lists every validation page of the site at each update
(a directory walk and a date parse per page) and deletes the pages whose result is no
longer stored. The results store keeps only the latest results (`gx_context.
archive_old_results`), so this builder indexes those that have a page and leaves the
older pages where they are: the links in Dagster's check metadata keep working.

Named in `gx_context._project_config` (`site_index_builder`) and imported by GX only
when it builds the site: importing GX costs seconds.
"""

from __future__ import annotations

from great_expectations.data_context.types.resource_identifiers import (
    ValidationResultIdentifier,
)
from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder


class LatestResultsIndexBuilder(DefaultSiteIndexBuilder):
    def _build_validation_and_profiling_result_site_keys(
        self, skip_and_clean_missing: bool
    ) -> list[ValidationResultIdentifier]:
        """The stored results that have a page (GX: every page, less those cleaned)."""
        source = self.site_section_builders_config["validations"]["source_store_name"]
        pages = self.target_store.store_backends[ValidationResultIdentifier]
        return [
            key
            for key in self.data_context.stores[source].list_keys()
            if pages.has_key(key.to_tuple())
        ]
