"""A cheap pre-check of a landed file, for a clear one-line message before ingest."""

from __future__ import annotations

import codecs
from pathlib import Path

from enrichment_assets.ingest.encodings import detect_encoding
from enrichment_assets.ingest.raw_records import os_error_reason

# Bytes decoded per step; the check stops at the first non-blank character.
_SNIFF_BYTES = 64 * 1024


def sniff_unreadable(path: Path) -> str | None:
    """None when the file looks like JSON/JSONL text, else a one-line reason.

    Reads only the start of the file (past any leading blank space): it does not
    prove every record parses, only that ingesting the file makes sense.
    """
    try:
        with Path(path).open("rb") as stream:
            encoding = detect_encoding(stream.read(4))
            stream.seek(encoding.bom_length)
            decoder = codecs.getincrementaldecoder(encoding.codec)()
            while True:
                block = stream.read(_SNIFF_BYTES)
                if encoding.is_utf8 and b"\x00" in block:
                    return "binary content (NUL bytes)"
                try:
                    text = decoder.decode(block, final=not block)
                except UnicodeDecodeError:
                    return "not valid UTF-8/UTF-16 text"
                if "\x00" in text:
                    return "binary content (NUL bytes)"
                start = text.lstrip()
                if start:
                    break
                if not block:
                    return "empty file"
    except OSError as error:
        return os_error_reason(error)
    if start[0] not in "{[":
        return f"not JSON text (starts with {start[0]!r}, expected '{{' or '[')"
    return None
