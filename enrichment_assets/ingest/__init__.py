"""Ingest: one landed file (JSON object, JSON array or JSON Lines; UTF-8/16/32)
-> raw rows in bounded chunks, every record kept, mapped onto the canonical shape.

- `encodings.py`: byte-order marks and decoding, line by line;
- `formats.py`: canonical / OpenAI / ShareGPT -> the canonical record, derived ids;
- `raw_records.py`: file layout sniffing, chunked reading, JSON Lines in byte ranges;
- `raw_rows.py`: the raw-row contract: one text (or one unreadable file) -> one row;
- `files.py`: a file as a file: escaped names, file-level problems (empty, binary, ...);
- `limits.py`: the limits on one record (size, depth, messages, characters), as policy.
"""

from enrichment_assets.ingest.formats import CONVERSATION_ID_NAMESPACE
from enrichment_assets.ingest.limits import RecordLimits
from enrichment_assets.ingest.raw_records import (
    LineRange,
    UnreadableInput,
    json_lines_ranges,
    read_line_range,
    read_raw_records,
)
from enrichment_assets.ingest.raw_rows import RAW_RECORD_SCHEMA, file_problem_table

__all__ = [
    "CONVERSATION_ID_NAMESPACE",
    "RAW_RECORD_SCHEMA",
    "LineRange",
    "RecordLimits",
    "UnreadableInput",
    "file_problem_table",
    "json_lines_ranges",
    "read_line_range",
    "read_raw_records",
]
