"""The LLM batches a partition has submitted and not yet applied.

In the asynchronous Batch API mode (`ENRICH_LLM_MODE=batch`) a run of the enriched layer
submits its requests as one or more batches, records them here and ends; the
`llm_batches` sensor polls them and, once every one has ended, requests the run that
downloads and applies their results, which removes the record. One JSON file per
partition, `<data dir>/lake/llm_batches/<partition>.json`, written atomically beside the
retry state (`automation/retry_state.py`) and the statuses: the same durable place for
the embedded default and a deployment (the lake is shared by the runs and the sensors).

A batch is recorded twice: before it is created (no `batch_id` yet, with the metadata it
is created with) and once created. A process killed between the two leaves a record
without an id: the next run finds the batch at the server by its metadata
(`batch.find_batch`) instead of submitting, and paying for, it again.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from enrichment_assets.lake import write_bytes_atomic

LEDGER_VERSION = 1
# The statuses after which a batch does not change any more (its results can be read).
ENDED_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class SubmittedBatch:
    """One batch of a partition: the requests it holds and what the server said of it."""

    part: int  # its place in the partition's submission (batch metadata `enrich_part`)
    model: str
    prompt_version: str
    keys: dict[str, str]  # custom_id -> the enrichment cache key of its request
    batch_id: str | None = None  # None: being created when the record was written
    status: str | None = None  # as last seen by the run that wrote the record

    @property
    def ended(self) -> bool:
        return self.batch_id is not None and self.status in ENDED_STATUSES


@dataclass
class PartitionBatches:
    """Every batch one partition waits for, and what its apply run needs to know."""

    partition: str
    submission: str  # uuid (batch metadata `enrich_submission`)
    submitted_at: float  # epoch seconds of the first submission
    run_id: str  # the run that submitted
    estimate_usd: float | None = None  # the estimate when submitted (metadata of the apply)
    scope: dict[str, Any] = field(default_factory=dict)  # the submitting run's EnrichmentScope
    tags: dict[str, str] = field(default_factory=dict)  # its retry tags, carried to the apply
    batches: list[SubmittedBatch] = field(default_factory=list)

    @property
    def keys(self) -> set[str]:
        return {key for batch in self.batches for key in batch.keys.values()}

    @property
    def batch_ids(self) -> list[str]:
        return [batch.batch_id for batch in self.batches if batch.batch_id]

    @property
    def requests(self) -> int:
        return sum(len(batch.keys) for batch in self.batches)

    def run_key(self) -> str:
        """The key of the run that applies exactly these batches."""
        digest = hashlib.sha256(",".join(sorted(self.batch_ids)).encode()).hexdigest()
        return f"llm-batch:{self.partition}:{digest[:16]}"

    def metadata(self, part: int) -> dict[str, str]:
        """What batch `part` is created with, and found again by."""
        return {
            "enrich_partition": self.partition[:512],
            "enrich_submission": self.submission,
            "enrich_part": str(part),
        }


def ledger_dir(data_dir: Path) -> Path:
    return data_dir / "lake" / "llm_batches"


def _path(data_dir: Path, partition: str) -> Path:
    # Partition keys are ours (file-safe); a hash keeps any other name safe too.
    name = hashlib.sha256(partition.encode()).hexdigest()[:32]
    return ledger_dir(data_dir) / f"{name}.json"


def _load(path: Path) -> PartitionBatches:
    data = orjson.loads(path.read_bytes())
    batches = [SubmittedBatch(**batch) for batch in data.pop("batches")]
    data.pop("version", None)
    return PartitionBatches(**data, batches=batches)


def read_batches(data_dir: Path, partition: str) -> PartitionBatches | None:
    """The partition's open submission, or None."""
    path = _path(data_dir, partition)
    return _load(path) if path.exists() else None


def write_batches(data_dir: Path, record: PartitionBatches) -> None:
    payload = {"version": LEDGER_VERSION, **asdict(record)}
    write_bytes_atomic(_path(data_dir, record.partition), orjson.dumps(payload))


def remove_batches(data_dir: Path, partition: str) -> None:
    """The partition's batches were applied: forget them."""
    _path(data_dir, partition).unlink(missing_ok=True)


def open_submissions(data_dir: Path) -> list[PartitionBatches]:
    """Every partition's open submission, oldest first."""
    root = ledger_dir(data_dir)
    if not root.exists():
        return []
    records = [_load(path) for path in root.glob("*.json")]
    return sorted(records, key=lambda record: (record.submitted_at, record.partition))
