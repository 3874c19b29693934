"""Repair and normalization of message text, one string at a time or a whole column at once.

`repair_text` is the reference: the rules below applied to one string. `normalize_text_series`
gives exactly the same result for a Polars column, but set-based: every rule except mojibake
repair is a vectorized Polars expression, and the mojibake repair (Python: ftfy plus our MacRoman
pass, ~20-300 µs a string) runs only on the strings that `SUSPECT_MOJIBAKE_PATTERN` flags.

The rules, in the order they are applied:

1. Mojibake repair (UTF-8 bytes that were decoded with a single-byte code page).
   a. MacRoman pass: every maximal run of characters from the MacRoman high half (the characters
      `mac_roman` maps bytes 0x80-0xFF to) is re-encoded as MacRoman and decoded as UTF-8
      (`‚Äô` -> `’`, `‚Üí` -> `→`, `√©` -> `é`). The run is replaced only when that decoding
      succeeds for the whole run (so every byte belongs to a valid multibyte UTF-8 character) and
      the result is plausible, see `_plausible_macroman_repair`. ftfy alone misses some of these
      (`‚Üí`, text that mixes MacRoman mojibake with correct non-Latin characters).
   b. ftfy's encoding repair (`ftfy.fix_encoding` with `FTFY_CONFIG`), line by line as
      `ftfy.fix_text` does: the cp1252 / latin-1 kind (`donâ€™t` -> `don’t`, `cafÃ©` -> `café`),
      and C1 characters that are cp1252 text read as latin-1 (`\\x93quote\\x94` -> `“quote”`).
      Every other ftfy fixer is off: curly quotes, ligatures (ﬁ), fullwidth forms, HTML entities,
      terminal escapes and line breaks stay as they are; controls and NFC are our own steps.
      The MacRoman pass runs first because it never fires on cp1252 mojibake (its runs start with
      a continuation byte or decode to combining marks), while ftfy gives up on a line that mixes
      MacRoman mojibake with correct non-MacRoman characters.
2. Line endings: `\\r\\n` and a lone `\\r` become `\\n`.
3. Control characters removed: C0 controls except `\\n` and `\\t` (so also `\\v`, `\\f`), DEL,
   C1 controls U+0080-U+009F that step 1 did not explain, U+200B ZERO WIDTH SPACE and U+FEFF
   (BOM) anywhere. U+200D ZWJ (emoji sequences) and U+200C ZWNJ (Persian) are kept.
4. Unicode NFC (after step 3, so a removed control cannot keep a combining mark apart).
5. Whitespace: spaces and tabs at the end of a line are removed; 3+ consecutive newlines become
   2 (one blank line); spaces, tabs and newlines at the start and end of the text are stripped.
   Runs of spaces inside a line are KEPT, as is indentation: messages carry code, Markdown tables
   and aligned text whose meaning depends on them, and a double space does not hurt a training
   example. Only ASCII space and tab count: NBSP (French « Bonjour ») and U+3000 (CJK) are text.

Correct text is never altered apart from NFC: emoji and ZWJ sequences, accented Latin, curly
quotes and dashes, CJK, Cyrillic, Greek, Arabic, Hebrew, math (`√2 ≈ 1.414`), German `„…‚`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import ftfy
import polars as pl
from ftfy.badness import BADNESS_RE

from enrichment_assets.workers import gc_paused

# Only the encoding repair of ftfy runs (we call `ftfy.fix_encoding`, which honours this config;
# `ftfy.fix_text(..., explain=False)` would silently fall back to the default config for it).
# The other fixers are off as well, so that handing this config to `fix_text` changes nothing.
FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,  # `&lt;` in a code answer is content, not an escape
    remove_terminal_escapes=False,  # ESC is removed by our control step; the rest is text
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=False,  # a lone C1 char is removed (rule 3), not guessed as cp1252
    fix_latin_ligatures=False,  # ﬁ is a correct character
    fix_character_width=False,  # fullwidth CJK punctuation is correct
    uncurl_quotes=False,  # curly quotes are correct
    fix_line_breaks=False,  # our own rule 2
    fix_surrogates=False,
    remove_control_chars=False,  # ftfy's list also strips emoji tag characters (flags)
    normalization=None,  # our own NFC, rule 4
    explain=False,
)

# --- Mojibake: which strings are suspects -------------------------------------------------------

_MACROMAN_HIGH = bytes(range(0x80, 0x100)).decode("mac_roman")


def _macroman_class(first: int, last: int) -> str:
    """A regex class of the characters MacRoman maps bytes first..last to."""
    return "[" + _MACROMAN_HIGH[first - 0x80 : last - 0x80 + 1] + "]"


_MAC_CONT = _macroman_class(0x80, 0xBF)  # UTF-8 continuation bytes
_MAC_ANY = _macroman_class(0x80, 0xFF)
# 2-byte leads of U+0080..U+017F are ¬ √ ƒ ≈; after √ and ≈ these are usually math, not bytes.
_MATH_ROOTS = "√≈"
_MATH_AFTER_ROOT = "π∞∑∏∫Ω∂±≤≥≠µ"
_MAC_CONT_NOT_MATH = "".join(c for c in _MACROMAN_HIGH[:0x40] if c not in _MATH_AFTER_ROOT)
_MAC_LEAD_SCRIPT = _macroman_class(0xCD, 0xDF)  # 2-byte lead of U+0340..U+07FF: Greek..NKo
_MAC_LEAD_3 = _macroman_class(0xE0, 0xEF)
_MAC_LEAD_4 = _macroman_class(0xF0, 0xF4)

# Superset of the runs `_repair_macroman` replaces: an accepted run decodes to at least one
# 3-byte or 4-byte character, or to a Latin-1 / Latin Extended-A character (lead ¬ √ ƒ ≈; after
# √ or ≈ a math symbol counts only next to a letter or another high-half character), or
# to Vietnamese Ơ ơ Ư ư (lead ∆), or to 2+ characters of which one is Greek..NKo (a lead in
# 0xCD..0xDF with another high-half character next to it). See `_plausible_macroman_repair`.
MACROMAN_SUSPECT_PATTERN = "|".join(
    [
        f"{_MAC_LEAD_3}{_MAC_CONT}{{2}}",
        f"{_MAC_LEAD_4}{_MAC_CONT}{{3}}",
        f"[¬ƒ]{_MAC_CONT}",
        f"[{_MATH_ROOTS}][{_MAC_CONT_NOT_MATH}]",
        # √π, ≈∞ are accepted only next to a letter or inside a longer run (the math guard)
        rf"\p{{L}}[{_MATH_ROOTS}][{_MATH_AFTER_ROOT}]",
        rf"[{_MATH_ROOTS}][{_MATH_AFTER_ROOT}]\p{{L}}",
        f"{_MAC_ANY}[{_MATH_ROOTS}][{_MATH_AFTER_ROOT}]",
        f"[{_MATH_ROOTS}][{_MATH_AFTER_ROOT}]{_MAC_ANY}",
        "∆[†°Ø∞]",
        f"{_MAC_ANY}{_MAC_LEAD_SCRIPT}{_MAC_CONT}",
        f"{_MAC_LEAD_SCRIPT}{_MAC_CONT}{_MAC_ANY}",
    ]
)


def _python_regex_to_rust(pattern: str) -> str:
    """Translate ftfy's verbose Python regex to the Rust syntax Polars uses, matching a superset.

    Verbose whitespace and comments outside classes go; `[`, `&`, `~` inside a class are escaped
    (Rust reads them as nesting and set operations); `\\s` and `\\w` widen to what Python's cover
    (Python's `\\s` also matches U+001C..U+001F, its `\\w` every numeric character such as ²).
    `^` (only at the start of a string in Python) matches at every line start, as ftfy tests
    each line on its own (see `SUSPECT_MOJIBAKE_PATTERN`).
    """
    widen = {"s": r"\s\x1C-\x1F", "w": r"\w\p{N}"}
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escape = pattern[i + 1]
            if escape in widen:
                out.append(widen[escape] if in_class else f"[{widen[escape]}]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
            elif char in "[&~":
                char = "\\" + char
            out.append(char)
        elif char == "#":
            newline = pattern.find("\n", i)
            i = len(pattern) if newline < 0 else newline
            continue
        elif not char.isspace():
            in_class = char == "["
            out.append(char)
        i += 1
    return "".join(out)


FTFY_SUSPECT_PATTERN = _python_regex_to_rust(BADNESS_RE.pattern)

SUSPECT_MOJIBAKE_PATTERN = f"(?m){FTFY_SUSPECT_PATTERN}|{MACROMAN_SUSPECT_PATTERN}"
"""Flags the strings that may hold mojibake; only those go through the Python repair.

It is a superset of what the repair changes, by construction:
- ftfy's `fix_encoding` returns a segment unchanged unless `ftfy.badness.is_bad(segment)`, i.e.
  its `BADNESS_RE` matches. The first alternative is that regex translated to Rust syntax with
  every class widened (never narrowed) and `(?m)` so that its `^` also matches at the start of
  each line (ftfy tests each line as its own segment).
- The MacRoman pass replaces only runs that decode as UTF-8 to a plausible result; the second
  alternative matches every such run (see `MACROMAN_SUSPECT_PATTERN`).
- The pass runs first; if it changed nothing, ftfy sees the original string, so either way a
  changed string matched one of the two alternatives.
Clean text rarely matches: both alternatives need an unlikely pair of characters (an accented
letter next to a currency sign, `√` before a Latin-1 sign, ...), not merely non-ASCII.
"""

# --- Mojibake: the repair ----------------------------------------------------------------------

_MAC_RUN_RE = re.compile(f"{_MAC_ANY}+")
_VIETNAMESE_HORNED = frozenset("ƠơƯư")
_REJECTED_CATEGORIES = frozenset({"Cc", "Cn", "Co", "Cs", "Mn", "Mc", "Me"})


def _plausible_macroman_repair(text: str, start: int, end: int, decoded: str) -> bool:
    """Whether `text[start:end]` (a run that decoded as UTF-8 to `decoded`) is mojibake.

    Correct text holds such runs too: `«\\xa0É`, `…é`, `—é` are valid UTF-8 as MacRoman bytes and
    decode to IPA letters, Latin Extended-B or one Cyrillic letter. So a 2-byte character is
    accepted only when it is in Latin-1 / Latin Extended-A, is Vietnamese Ơ ơ Ư ư, or is part of
    a run of 2+ characters (a whole mojibake word of Greek, Cyrillic, Hebrew, Arabic...);
    nothing may be a control, unassigned, private use or a combining mark; and a 2-character run
    of `√` or `≈` and a math symbol must touch a letter (`o√π` is `où`; `√π ≈ 1.772` is math).
    """
    if any(unicodedata.category(char) in _REJECTED_CATEGORIES for char in decoded):
        return False
    for char in decoded:
        code = ord(char)
        if code < 0x800 and not (
            0xA0 <= code <= 0x17F
            or char in _VIETNAMESE_HORNED
            or (code >= 0x370 and len(decoded) >= 2)
        ):
            return False
    if end - start == 2 and text[start] in _MATH_ROOTS and text[start + 1] in _MATH_AFTER_ROOT:
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        return before.isalpha() or after.isalpha()
    return True


def _repair_macroman(text: str) -> str:
    """Decode runs of MacRoman-decoded UTF-8 (`‚Äô` -> `’`); see the module docstring."""
    pieces: list[str] = []
    last = 0
    for run in _MAC_RUN_RE.finditer(text):
        if run.end() - run.start() < 2:
            continue
        try:
            decoded = run.group().encode("mac_roman").decode("utf-8")
        except UnicodeDecodeError:
            continue
        if _plausible_macroman_repair(text, run.start(), run.end(), decoded):
            pieces += [text[last : run.start()], decoded]
            last = run.end()
    return "".join([*pieces, text[last:]]) if pieces else text


def _repair_with_ftfy(text: str) -> str:
    """ftfy's encoding repair, one line at a time (as `ftfy.fix_text` segments its input)."""
    return "".join(ftfy.fix_encoding(line, FTFY_CONFIG) for line in text.splitlines(keepends=True))


def repair_mojibake(text: str) -> str:
    """Rule 1 alone: the MacRoman pass, then ftfy's encoding repair."""
    return _repair_with_ftfy(_repair_macroman(text))


# --- Control characters and whitespace ----------------------------------------------------------
# Each rule is (pattern, replacement); the patterns mean the same in Python `re` and Rust `regex`.

_LINE_ENDINGS = (r"\r\n?", "\n")
_CONTROL_CHARS = (r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\u200B\uFEFF]", "")
_TRAILING_BLANKS = (r"[ \t]+\n", "\n")
_BLANK_LINES = (r"\n{3,}", "\n\n")
_OUTER_BLANKS = " \t\n"

_LINE_ENDINGS_RE, _CONTROL_CHARS_RE, _TRAILING_BLANKS_RE, _BLANK_LINES_RE = (
    re.compile(pattern)
    for pattern, _ in (_LINE_ENDINGS, _CONTROL_CHARS, _TRAILING_BLANKS, _BLANK_LINES)
)


def repair_text(text: str) -> str:
    """Repair and normalize one message text: mojibake, line endings, controls, NFC, whitespace.

    The rules, and why each is there, are in the module docstring.
    """
    text = repair_mojibake(text)
    text = _LINE_ENDINGS_RE.sub(_LINE_ENDINGS[1], text)
    text = _CONTROL_CHARS_RE.sub(_CONTROL_CHARS[1], text)
    text = unicodedata.normalize("NFC", text)
    text = _TRAILING_BLANKS_RE.sub(_TRAILING_BLANKS[1], text)
    text = _BLANK_LINES_RE.sub(_BLANK_LINES[1], text)
    return text.strip(_OUTER_BLANKS)


def suspect_mojibake_mask(texts: pl.Series) -> pl.Series:
    """True where a string may hold mojibake (nulls are False)."""
    return texts.str.contains(SUSPECT_MOJIBAKE_PATTERN).fill_null(False)


@cache
def not_nfc_class() -> str:
    """A regex class of every character that can keep a string from being NFC.

    Unicode's NFC_Quick_Check No and Maybe, derived from `unicodedata` (the data
    `repair_text` normalizes with): characters that NFC replaces, combining marks
    (ccc > 0, which NFC may reorder or compose), the second character of every
    canonical pair (which composes with the one before it, as U+0B3E does) and the
    Hangul vowel and trailing jamo. A string with none of them is already NFC.
    """
    chars: set[int] = {*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)}
    for code in range(0x80, 0x110000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        if unicodedata.combining(char) or unicodedata.normalize("NFC", char) != char:
            chars.add(code)
        parts = unicodedata.decomposition(char).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            chars.add(int(parts[1], 16))
    ranges: list[list[int]] = []
    for code in sorted(chars):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "[" + "".join(rf"\x{{{a:X}}}-\x{{{b:X}}}" for a, b in ranges) + "]"


@cache
def needs_normalizing_pattern() -> str:
    """What any rule after the mojibake repair can change; a string without it is left as is.

    A line ending or control character (rules 2-3), a character that is not NFC-stable
    (rule 4), blanks before a line end, three newlines, blanks at either end (rule 5).
    """
    return "|".join(
        [
            r"[\r\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\u200B\uFEFF]",
            not_nfc_class(),
            r"[ \t]\n",
            r"\n\n\n",
            r"\A[ \t\n]",
            r"[ \t\n]\z",
        ]
    )


def normalize_text_series(texts: pl.Series) -> pl.Series:
    """`repair_text` over a string column, set-based; equal to it element by element, nulls stay.

    Only the strings `SUSPECT_MOJIBAKE_PATTERN` flags go through the Python mojibake repair,
    and only those `needs_normalizing_pattern()` flags through the other rules (vectorized Polars
    string expressions): one scan each, and most messages are clean.
    """
    texts = texts.cast(pl.String)
    suspects = suspect_mojibake_mask(texts).arg_true()
    if len(suspects) > 0:
        with gc_paused():
            repaired = [repair_mojibake(text) for text in texts.gather(suspects).to_list()]
        texts = texts.clone().scatter(suspects, repaired)
    pending = texts.str.contains(needs_normalizing_pattern()).fill_null(False).arg_true()
    if len(pending) == 0:
        return texts
    return texts.clone().scatter(pending, _normalize_rules(texts.gather(pending)))


def _normalize_rules(texts: pl.Series) -> pl.Series:
    """Rules 2-5 on every string (no null among them)."""
    texts = texts.str.replace_all(*_LINE_ENDINGS).str.replace_all(*_CONTROL_CHARS)
    # NFC is the costliest step: only the strings holding a character it may change.
    unstable = texts.str.contains(not_nfc_class()).arg_true()
    if len(unstable) > 0:
        texts = texts.scatter(unstable, texts.gather(unstable).str.normalize("NFC"))
    return (
        texts.str.replace_all(*_TRAILING_BLANKS)
        .str.replace_all(*_BLANK_LINES)
        .str.strip_chars(_OUTER_BLANKS)
    )
