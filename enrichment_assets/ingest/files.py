"""A file offered as input, as a file: its name for people, whether it can be read at all.

Names. A file name is whatever bytes the filesystem allows (non-UTF-8, control
characters, 255 bytes). `escape_name` turns those bytes into text that is valid
UTF-8, safe on a terminal and lossless (`unescape_name` gives the bytes back): it is
how a name is recorded (manifests, raw rows, cursors, tags) and shown. Nothing is
ever stored under a name derived from the user's name (see `lake`).

File-level problems. A file that is not a regular file, cannot be opened, is empty,
binary or not JSON text at all becomes one raw row with a `FileProblem` (its machine
rule and a one-line reason) instead of stopping the files beside it. Files are
opened without following a last symbolic link when asked, and never blocking (a
FIFO is seen for what it is, not waited on).
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from enrichment_assets.ingest.encodings import detect_encoding

# Machine rules of file-level problems (each becomes the `parse_rule` of the file's row).
EMPTY_FILE = "empty_file"
BINARY_FILE = "binary_file"
NOT_JSON_TEXT = "not_json_text"
UNREADABLE_FILE = "unreadable_file"
VANISHED_FILE = "vanished_file"
NOT_A_REGULAR_FILE = "not_a_regular_file"
FILE_RULES = (
    EMPTY_FILE,
    BINARY_FILE,
    NOT_JSON_TEXT,
    UNREADABLE_FILE,
    VANISHED_FILE,
    NOT_A_REGULAR_FILE,
)

# Bytes looked at to tell text from binary content: enough for a verdict, bounded.
_SAMPLE_BYTES = 64 * 1024
# Above this share of non-text characters in the sample, a file is binary; below it, a
# stray byte or NUL costs only its line (see `raw_records`).
_BINARY_SHARE = 0.10
# Characters that are never text: C0 controls other than tab, LF, FF and CR.
_NON_TEXT = re.compile("[\x00-\x08\x0b\x0e-\x1f\ufffd]")


@dataclass(frozen=True)
class FileProblem:
    """Why a file cannot be ingested at all: its rule, and one line for people."""

    rule: str
    reason: str


class FileProblemError(Exception):
    """Raised when a file turns out to have a `FileProblem` (e.g. while it is copied)."""

    def __init__(self, problem: FileProblem) -> None:
        super().__init__(problem.reason)
        self.problem = problem


# --- names ---------------------------------------------------------------------------------

# Characters a terminal would act on (C0, DEL, C1, line/paragraph separators, bidi
# controls), the backslash, which introduces the escapes, and the bytes that were not
# UTF-8 (surrogateescape puts them at U+DC80..U+DCFF).
_ESCAPED = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\udc80-\udcff]")
_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4})")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def escape_name(name: str | bytes | os.PathLike[str]) -> str:
    """The name as text that is valid UTF-8, inert on a terminal and lossless.

    Valid UTF-8 stays as it is, except: backslash -> `\\\\`; control and bidi
    characters -> `\\n`, `\\xNN`, `\\uNNNN`; each byte that is not UTF-8 -> `\\xNN`
    (lower-case hex, where an escaped control character uses `\\x` only below 0x80).
    """
    raw = os.fsencode(name)
    text = raw.decode("utf-8", "surrogateescape")
    return _ESCAPED.sub(_escape_char, text)


def unescape_name(text: str) -> bytes:
    """The bytes `escape_name` was given."""
    out = bytearray()
    position = 0
    for match in _UNESCAPE.finditer(text):
        out += text[position : match.start()].encode("utf-8")
        code = match.group(1)
        if code == "\\":
            out += b"\\"
        elif code in ("n", "r", "t"):
            out += {"n": b"\n", "r": b"\r", "t": b"\t"}[code]
        elif code[0] == "x":
            value = int(code[1:], 16)
            # \xNN below 0x80 is an escaped control character; above, a raw byte.
            out += bytes([value])
        else:
            out += chr(int(code[1:], 16)).encode("utf-8")
        position = match.end()
    out += text[position:].encode("utf-8")
    return bytes(out)


# --- opening -------------------------------------------------------------------------------

_FILE_TYPES = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
}


def file_type_name(mode: int) -> str:
    """What a non-regular file is, for people (`a FIFO`, `a directory`, ...)."""
    return _FILE_TYPES.get(stat.S_IFMT(mode), "not a regular file")


def not_regular(mode: int) -> FileProblem:
    return FileProblem(NOT_A_REGULAR_FILE, f"not a regular file ({file_type_name(mode)})")


def problem_of_os_error(error: OSError) -> FileProblem:
    """The file-level problem an OSError on open or read means."""
    if isinstance(error, FileNotFoundError):
        return FileProblem(VANISHED_FILE, "vanished before it could be read")
    if error.errno == errno.ELOOP:
        return FileProblem(NOT_A_REGULAR_FILE, "not a regular file (a symbolic link loop)")
    if isinstance(error, PermissionError):
        return FileProblem(UNREADABLE_FILE, "cannot be read: permission denied")
    reason = (error.strerror or str(error)).splitlines()[0].lower()
    return FileProblem(UNREADABLE_FILE, f"cannot be read: {reason}")


def open_regular(path: Path, *, follow_symlinks: bool = True) -> int:
    """An fd open for reading on `path`, which is checked to be a regular file.

    Never blocks (O_NONBLOCK: opening a FIFO returns at once) and, with
    `follow_symlinks=False`, refuses a symbolic link as the last component.
    Raises FileProblemError.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_symlinks:
            raise FileProblemError(not_regular(stat.S_IFLNK)) from error
        raise FileProblemError(problem_of_os_error(error)) from error
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileProblemError(not_regular(mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def dangling_or_loop(path: Path) -> FileProblem | None:
    """The problem of a path that `stat` cannot follow but that exists (a bad link)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            return FileProblem(NOT_A_REGULAR_FILE, "not a regular file (a dangling symbolic link)")
        return None
    except OSError as error:
        return problem_of_os_error(error)
    return None


# --- content -------------------------------------------------------------------------------


def content_problem(stream: BinaryIO) -> FileProblem | None:
    """None when the stream (at its start) holds JSON text; else empty / binary / not JSON.

    Looks at the first 64 KiB past any BOM (and past leading blank space, however
    long). Binary means more than a tenth of the sampled characters are not text (NUL,
    control characters, bytes that do not decode): one stray byte or NUL in a text file
    is a problem of its line only. Not JSON text means no line of the sample starts
    with `{` or `[` (a CSV, a README).
    """
    read = stream.read
    encoding = detect_encoding(read(4))
    stream.seek(encoding.bom_length)
    decoder = codecs.getincrementaldecoder(encoding.codec)(errors="replace")
    text = ""
    while not text.strip():
        block = read(_SAMPLE_BYTES)
        text = decoder.decode(block, final=not block)
        if not block and not text.strip():
            return FileProblem(EMPTY_FILE, "cannot be read: empty file")
    text = text.lstrip()
    if len(text) < _SAMPLE_BYTES // 4:  # the blank start ate the sample: take more
        text += decoder.decode(read(_SAMPLE_BYTES))
    non_text = len(_NON_TEXT.findall(text))
    starts = [line.lstrip()[:1] for line in text.splitlines()]
    json_lines = any(first in ("{", "[") for first in starts)
    if non_text and (non_text > _BINARY_SHARE * len(text) or not json_lines):
        return FileProblem(
            BINARY_FILE,
            f"cannot be read: binary content ({non_text} of the first {len(text)} "
            "characters are not text)",
        )
    if not json_lines:
        return FileProblem(
            NOT_JSON_TEXT,
            f"cannot be read: not JSON text (starts with {text[0]!r}, expected '{{' or '[')",
        )
    return None
