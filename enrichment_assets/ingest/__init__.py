"""Ingest: one landed file (JSON object, JSON array or JSON Lines; UTF-8/16/32)
-> raw rows in bounded chunks, every record kept, mapped onto the canonical shape.

- `encodings.py`: byte-order marks and decoding, line by line;
- `formats.py`: canonical / OpenAI / ShareGPT -> the canonical record, derived ids;
- `raw_records.py`: file layout sniffing, the raw-row contract, chunked reading;
- `sniff.py`: the cheap "can this file be ingested at all" check for the CLI.
"""

from enrichment_assets.ingest.formats import CONVERSATION_ID_NAMESPACE
from enrichment_assets.ingest.raw_records import (
    RAW_RECORD_SCHEMA,
    LineRange,
    UnreadableInput,
    json_lines_ranges,
    read_line_range,
    read_raw_records,
)
from enrichment_assets.ingest.sniff import sniff_unreadable

__all__ = [
    "CONVERSATION_ID_NAMESPACE",
    "RAW_RECORD_SCHEMA",
    "LineRange",
    "UnreadableInput",
    "json_lines_ranges",
    "read_line_range",
    "read_raw_records",
    "sniff_unreadable",
]
