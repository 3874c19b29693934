"""Text from the data, made safe to show on a terminal.

Two things go wrong when input reaches a terminal through Rich as it is: a string
is parsed as Rich markup (`[red]x[/red]` prints as `x`, and `[/bold]` raises), and
control characters pass through (an ESC starts an escape sequence that can retitle,
clear or rewrite the terminal; bidirectional overrides reorder what is shown). So
everything the command line shows that came from input (ids, text, errors,
partition and file names) is turned into a `rich.text.Text`, which Rich never parses
as markup, with those characters written out visibly (`\\x1b`, `\\n`, `\\u202e`).
JSON keeps its own escapes (`\\u001b`), so `--json` output stays valid JSON.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.text import Text

# C0 and C1 controls, DEL, and the characters that reorder or break lines invisibly
# (bidirectional marks and overrides, line and paragraph separators).
_BIDI_AND_SEPARATORS = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_INVISIBLE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
# In JSON text, tab, newline and carriage return outside strings are its layout (orjson
# already escapes them inside strings); every other such character is in a string.
_JSON_INVISIBLE = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(value: object) -> str:
    """`value` as one line of plain text: control characters written out (`\\x1b`)."""
    return _INVISIBLE.sub(_shown, str(value))


def json_visible(json_text: str) -> str:
    """JSON text with every control character left in its strings as a `\\uXXXX` escape."""
    return _JSON_INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)


def plain(value: object, style: str = "") -> Text:
    """A table cell or line from the data: never markup, control characters visible."""
    return Text(visible(value), style=style)


def json_document(document: Any) -> Text:
    """A document as indented, highlighted JSON, control characters escaped."""
    dumped = orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str).decode()
    return JSONHighlighter()(Text(json_visible(dumped)))


def dumps_json(payload: Any) -> str:
    """`payload` as indented JSON text for stdout, ending with a newline."""
    dumped = orjson.dumps(payload, option=orjson.OPT_INDENT_2, default=str).decode()
    return json_visible(dumped) + "\n"


def console(*, stderr: bool = False, width: int | None = None) -> Console:
    """A console that never interprets what it prints as markup or emoji codes."""
    return Console(stderr=stderr, width=width, markup=False, emoji=False)
