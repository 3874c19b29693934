"""What operators do from the command line, on top of the lake and Dagster runs.

- `status_listing`: conversations per status / partition, with counts (DuckDB over
  the status Parquet);
- `bulk`: re-enrich a list of conversation ids through one scoped Dagster run per
  partition (`enrich bulk`);
- `export`: the lake's documents in jsonl / json / openai / sharegpt (`enrich export`).

`cli.py` parses arguments and prints; the logic and its errors live here.
"""


class OperationError(Exception):
    """A failure to report to the operator as one line (exit 1)."""


class OperationUsageError(Exception):
    """Arguments that do not go together (exit 2, a usage error)."""
