"""Automation: the sensors that run the pipeline by themselves.

- `new_raw_files.py`: landing folder → batch partitions → runs (`landing.py` scans and groups);
- `failed_partitions.py`: unhealthy partitions → retries with backoff → flagged for a person;
- `low_confidence.py`: conversations below the confidence threshold → scoped re-asks;
- `llm_batches.py`: open LLM batches (Batch API mode) → the runs that apply their results;
- `retry_state.py`: the retry state file, and `flagged_partitions` for reports;
- `settings.py`: intervals and limits, from environment variables.
"""

from enrichment_assets.defs.automation.failed_partitions import failed_partitions
from enrichment_assets.defs.automation.llm_batches import llm_batches
from enrichment_assets.defs.automation.low_confidence import low_confidence
from enrichment_assets.defs.automation.new_raw_files import new_raw_files
from enrichment_assets.defs.automation.retry_state import flagged_partitions
from enrichment_assets.partition_retry import PartitionRetry

SENSORS = [new_raw_files, failed_partitions, low_confidence, llm_batches]

__all__ = [
    "SENSORS",
    "PartitionRetry",
    "failed_partitions",
    "flagged_partitions",
    "llm_batches",
    "low_confidence",
    "new_raw_files",
]
