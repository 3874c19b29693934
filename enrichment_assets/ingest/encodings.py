"""Text encodings of landed files: detection by byte-order mark, and decoded lines.

Files are UTF-8 (with or without BOM) or UTF-16/UTF-32 (with BOM, or without one
when the text starts with an ASCII character, as JSON does: RFC 4627 section 3).
Undecodable bytes never stop a read, and cost only their line: in UTF-8 each stray
byte is read as Windows-1252 (the usual origin of one), in UTF-16/32 it becomes
U+FFFD; the line carries a one-line `decode_error` with the position, so the record
is kept and flagged (`parse_rule` `encoding_repaired`).
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from enrichment_assets.ingest.formats import CONVERSATION_ID_NAMESPACE

# Bytes read per step when decoding UTF-16/32 line by line: bounded memory per step.
_READ_SIZE = 1 << 20

# Python's decoders never produce lone surrogates from valid input, so one in the
# decoded text marks exactly where bytes could not be decoded.
_UNDECODABLE = "\udfff"
_MARK_UNDECODABLE = "enrichment_assets.ingest.mark_undecodable"
_ID_NAMESPACE_BYTES = CONVERSATION_ID_NAMESPACE.bytes


def _mark_undecodable(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return _UNDECODABLE, error.end


codecs.register_error(_MARK_UNDECODABLE, _mark_undecodable)


@dataclass(frozen=True, slots=True)
class TextEncoding:
    codec: str  # a Python codec name that does not consume a BOM itself
    bom_length: int  # bytes to skip at the start of the file

    @property
    def is_utf8(self) -> bool:
        return self.codec == "utf-8"


# Longest BOMs first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def detect_encoding(head: bytes) -> TextEncoding:
    """The encoding of a file from its first (up to) 4 bytes."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return TextEncoding(codec, len(bom))
    # No BOM: JSON text starts with an ASCII character, so the NUL pattern of the
    # first four bytes tells the UTF-16/32 byte order (RFC 4627 section 3).
    if len(head) >= 4:
        nul = tuple(b == 0 for b in head[:4])
        if nul == (True, True, True, False):
            return TextEncoding("utf-32-be", 0)
        if nul == (False, True, True, True):
            return TextEncoding("utf-32-le", 0)
    if len(head) >= 2:
        if head[0] == 0 and head[1] != 0:
            return TextEncoding("utf-16-be", 0)
        if head[0] != 0 and head[1] == 0:
            return TextEncoding("utf-16-le", 0)
    return TextEncoding("utf-8", 0)


class DecodedText(NamedTuple):  # a tuple: one is created per line on the hot path
    """One line (or a whole document) of a file, as UTF-8 bytes.

    Lines of UTF-8 files are not decoded here (the hot path): the JSON parser
    validates UTF-8 itself, and `repair_utf8` is called only when parsing fails.
    """

    number: int  # 1-based line number in the file (1 for a whole document)
    data: bytes  # the text as UTF-8, line end removed; undecodable bytes repaired
    decode_error: str | None = None  # one line when some bytes could not be decoded
    offset: int | None = None  # byte offset of the line in the file (UTF-8 files)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    def where(self, index: int = 0) -> str:
        """`byte B of the file (line L)` for byte `index` of this text, for messages."""
        if self.offset is None:
            return f"line {self.number}"
        return f"byte {self.offset + index + 1} of the file (line {self.number})"


class OversizedLine(NamedTuple):
    """A line longer than the record size limit: measured as it streamed by, never held."""

    number: int
    offset: int  # byte offset of the line in the file
    size: int  # its bytes, line end excluded
    sha256: str  # of the whole line
    uuid5_digest: bytes  # sha1(id namespace + line): the derived conversation id's digest
    head: bytes  # its first bytes, for people (cut at a character boundary)


# Bytes kept of a line over the size limit, to show what it was.
OVERSIZED_HEAD_BYTES = 1024
# Rule of a line whose undecodable bytes were repaired (the record goes on, flagged).
ENCODING_REPAIRED = "encoding_repaired"


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    """Each byte that is not UTF-8 read as Windows-1252, the usual origin of a stray byte
    (its five unassigned bytes as the C1 controls of the same value, as browsers do)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return bad.decode("cp1252", errors=_C1_FALLBACK), error.end


def _c1_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "".join(chr(b) for b in error.object[error.start : error.end]), error.end


_CP1252_FALLBACK = "enrichment_assets.ingest.cp1252_fallback"
_C1_FALLBACK = "enrichment_assets.ingest.c1_fallback"
codecs.register_error(_CP1252_FALLBACK, _cp1252_fallback)
codecs.register_error(_C1_FALLBACK, _c1_fallback)


def repair_utf8(text: DecodedText) -> DecodedText:
    """`text` itself when it is valid UTF-8; else each stray byte read as Windows-1252,
    with a `decode_error` naming the first one's byte position (the repair is flagged)."""
    try:
        text.data.decode("utf-8")
    except UnicodeDecodeError as error:
        repaired = text.data.decode("utf-8", errors=_CP1252_FALLBACK)
        return text._replace(
            data=repaired.encode("utf-8"),
            decode_error=f"invalid UTF-8 at {text.where(error.start)}: "
            "bytes that are not UTF-8 read as Windows-1252",
        )
    return text


def _from_marked_text(
    number: int, text: str, codec: str, where: str, offset: int | None = None
) -> DecodedText:
    decode_error = None
    if _UNDECODABLE in text:
        position = text.index(_UNDECODABLE)
        text = text.replace(_UNDECODABLE, "\ufffd")
        decode_error = (
            f"invalid {codec.upper()} at character {position + 1} of the {where} "
            f"{number if where == 'line' else ''}".rstrip()
            + "; undecodable bytes replaced with U+FFFD"
        )
    return DecodedText(number, text.encode("utf-8"), decode_error, offset)


def iter_lines(
    stream: BinaryIO, encoding: TextEncoding, max_bytes: int
) -> Iterator[DecodedText | OversizedLine]:
    """Non-blank lines of `stream` (positioned after the BOM), streamed.

    Lines end at LF; a trailing CR (CRLF files) is removed. Blank lines are skipped
    but still counted, so `number` is the line number a person sees in an editor.
    A UTF-8 line longer than `max_bytes` comes as an `OversizedLine`, read in bounded
    pieces; UTF-16/32 lines are decoded in bounded reads (and held whole: such files
    are small in practice).
    """
    if encoding.is_utf8:
        yield from iter_utf8_lines(stream, max_bytes, offset=encoding.bom_length)
        return
    for number, line in enumerate(_split_decoded_lines(stream, encoding.codec), start=1):
        line = line.rstrip("\r")
        if line and not line.isspace():
            yield _from_marked_text(number, line, encoding.codec, "line")


def iter_utf8_lines(
    stream: BinaryIO,
    max_bytes: int,
    *,
    offset: int,
    first_line: int = 1,
    end: int | None = None,
) -> Iterator[DecodedText | OversizedLine]:
    """Non-blank lines of a UTF-8 stream positioned at byte `offset`, up to byte `end`.

    Memory is bounded by `max_bytes`, whatever the file holds: `readline` is given a
    size, and a longer line is hashed as it streams by (`OversizedLine`).
    """
    limit = max_bytes + 2  # room for the line end (CRLF)
    number = first_line - 1
    while end is None or offset < end:
        line = stream.readline(limit)
        if not line:
            return
        number += 1
        start = offset
        offset += len(line)
        if len(line) == limit and not line.endswith(b"\n"):
            oversized = read_oversized(stream, number, start, line)
            offset = stream.tell()
            yield oversized
            continue
        line = line.rstrip(b"\r\n")
        if len(line) > max_bytes:
            yield _oversized(line, number, start, len(line))
        elif line and not line.isspace():
            yield DecodedText(number, line, None, start)


def read_oversized(
    stream: BinaryIO, number: int, offset: int, first: bytes = b"", *, to_end: bool = False
) -> OversizedLine:
    """Read on from `first` (the line's start, already read) to the line end (or, with
    `to_end`, to the end of the stream) in bounded pieces, hashing as it goes."""
    sha256 = hashlib.sha256(first)
    sha1 = hashlib.sha1(_ID_NAMESPACE_BYTES + first, usedforsecurity=False)
    head = first[:OVERSIZED_HEAD_BYTES]
    size = len(first)
    while piece := (stream.read(_READ_SIZE) if to_end else stream.readline(_READ_SIZE)):
        ends_line = not to_end and piece.endswith(b"\n")
        if ends_line:
            piece = piece.rstrip(b"\r\n")  # the line end is not part of the record
        if len(head) < OVERSIZED_HEAD_BYTES:
            head += piece[: OVERSIZED_HEAD_BYTES - len(head)]
        size += len(piece)
        sha256.update(piece)
        sha1.update(piece)
        if ends_line:
            break
    return OversizedLine(number, offset, size, sha256.hexdigest(), sha1.digest(), _cut(head))


def _oversized(line: bytes, number: int, offset: int, size: int) -> OversizedLine:
    return OversizedLine(
        number,
        offset,
        size,
        hashlib.sha256(line).hexdigest(),
        hashlib.sha1(_ID_NAMESPACE_BYTES + line, usedforsecurity=False).digest(),
        _cut(line[:OVERSIZED_HEAD_BYTES]),
    )


def _cut(head: bytes) -> bytes:
    """`head` without a partial UTF-8 character at its end."""
    return head.decode("utf-8", errors="ignore").encode("utf-8") if head else head


def _split_decoded_lines(stream: BinaryIO, codec: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(codec)(errors=_MARK_UNDECODABLE)
    pending: list[str] = []  # pieces of the line being assembled (a line may span reads)
    while block := stream.read(_READ_SIZE):
        pieces = decoder.decode(block).split("\n")
        if len(pieces) > 1:
            pending.append(pieces[0])
            yield "".join(pending)
            yield from pieces[1:-1]
            pending = []
        pending.append(pieces[-1])
    pending.append(decoder.decode(b"", final=True))
    last = "".join(pending)
    if last:
        yield last


def read_document(stream: BinaryIO, encoding: TextEncoding) -> DecodedText:
    """The whole rest of `stream` as one text.

    Loads the file into memory: used only for a JSON object or array spread over
    many lines, which has to be parsed as one value anyway (JSON Lines stream).
    """
    data = stream.read()
    if encoding.is_utf8:
        return DecodedText(1, data, None, encoding.bom_length)
    text = data.decode(encoding.codec, errors=_MARK_UNDECODABLE)
    return _from_marked_text(1, text, encoding.codec, "file")
