"""Text encodings of landed files: detection by byte-order mark, and decoded lines.

Files are UTF-8 (with or without BOM) or UTF-16/UTF-32 (with BOM, or without one
when the text starts with an ASCII character, as JSON does: RFC 4627 section 3).
Undecodable bytes never stop a read: they become U+FFFD in the text and the line
carries a one-line `decode_error`, so the record is kept and flagged.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

# Bytes read per step when decoding UTF-16/32 line by line: bounded memory per step.
_READ_SIZE = 1 << 20

# Python's decoders never produce lone surrogates from valid input, so one in the
# decoded text marks exactly where bytes could not be decoded.
_UNDECODABLE = "\udfff"
_MARK_UNDECODABLE = "enrichment_assets.ingest.mark_undecodable"


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
    data: bytes  # the text as UTF-8, line end removed; undecodable bytes become U+FFFD
    decode_error: str | None = None  # one line when some bytes could not be decoded

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def repair_utf8(text: DecodedText, where: str = "line") -> DecodedText:
    """`text` itself when it is valid UTF-8, else with U+FFFD and a `decode_error`."""
    try:
        text.data.decode("utf-8")
    except UnicodeDecodeError as error:
        return DecodedText(
            text.number,
            text.data.decode("utf-8", errors="replace").encode("utf-8"),
            f"invalid UTF-8 at byte {error.start + 1} of the {where}; "
            "undecodable bytes replaced with U+FFFD",
        )
    return text


def _from_marked_text(number: int, text: str, codec: str, where: str) -> DecodedText:
    decode_error = None
    if _UNDECODABLE in text:
        offset = text.index(_UNDECODABLE)
        text = text.replace(_UNDECODABLE, "\ufffd")
        decode_error = (
            f"invalid {codec.upper()} at character {offset + 1} of the {where}; "
            "undecodable bytes replaced with U+FFFD"
        )
    return DecodedText(number, text.encode("utf-8"), decode_error)


def iter_lines(stream: BinaryIO, encoding: TextEncoding) -> Iterator[DecodedText]:
    """Non-blank lines of `stream` (positioned after the BOM), streamed.

    Lines end at LF; a trailing CR (CRLF files) is removed. Blank lines are skipped
    but still counted, so `number` is the line number a person sees in an editor.
    """
    if encoding.is_utf8:
        # Hot path: iterating a binary file splits on b"\n" in C, one line in memory.
        for number, line in enumerate(stream, start=1):
            line = line.rstrip(b"\r\n")
            if line and not line.isspace():
                yield DecodedText(number, line)
        return
    for number, line in enumerate(_split_decoded_lines(stream, encoding.codec), start=1):
        line = line.rstrip("\r")
        if line and not line.isspace():
            yield _from_marked_text(number, line, encoding.codec, "line")


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
        return DecodedText(1, data)
    text = data.decode(encoding.codec, errors=_MARK_UNDECODABLE)
    return _from_marked_text(1, text, encoding.codec, "file")
