"""Partitions: one dynamic partition per landed batch of files."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

# A batch is one file, or a bounded group of small files found together. Its key is
# derived from the content (see `lake.batch_key`), so re-landing the same bytes
# names the same partition.
batch_partitions = DynamicPartitionsDefinition(name="batches")
