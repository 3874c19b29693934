"""Repair and normalization of message text: `repair_text` and its set-based twin."""

from __future__ import annotations

import random
import re
import unicodedata

import polars as pl
import pytest
from ftfy.badness import BADNESS_RE

from enrichment_assets import text as text_module
from enrichment_assets.text import (
    FTFY_SUSPECT_PATTERN,
    SUSPECT_MOJIBAKE_PATTERN,
    normalize_text_series,
    not_nfc_class,
    repair_mojibake,
    repair_text,
    suspect_mojibake_mask,
)

CP1252_MOJIBAKE = {
    "donâ€™t": "don’t",
    "cafÃ©": "café",
    "â€œquoteâ€\x9d": "“quote”",
    "Ã¼ber": "über",
    "Ã©tÃ© Ã  Paris": "été à Paris",
    "Iâ€™m sure itâ€™s fine â€” really": "I’m sure it’s fine — really",
    "naÃ¯ve ZÃ¼rich": "naïve Zürich",
    "\x93quoted\x94": "“quoted”",
}

MACROMAN_MOJIBAKE = {
    "‚Äô": "’",
    "‚Äú": "“",
    "‚Äù": "”",
    "‚Üí": "→",
    "‚Äî": "—",
    "‚Ä¶": "…",
    "√©": "é",
    "don‚Äôt": "don’t",
    "a ‚Üí b": "a → b",
    "caf√©": "café",
    "K√∂ln": "Köln",
    "o√π": "où",
    "Espa√±a": "España",
    "‚Äú日本‚Äù": "“日本”",
    "\uf8ffüëç": "👍",
    "–ü—Ä–∏–≤–µ—Ç": "Привет",
}

CORRECT_TEXT = [
    "Hello, world! Plain ASCII with (parens), [brackets] and {braces}.",
    "👩‍💻 works late 👍🏽 and 👨‍👩‍👧‍👦 waits; flags 🇫🇷 🏴󠁧󠁢󠁥󠁮󠁧󠁿",
    "arrows → ⇒ ← ↔ and ➜",
    "café, naïve, Zürich, São Paulo, Ærøskøbing, Ångström, façade, Ñandú",
    "She said “yes” — it’s ‘fine’ – really",
    "你好，世界！「こんにちは」、한국어",
    "Привет, мир! Как дела?",
    "Καλημέρα κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "√2 ≈ 1.414, π ≈ 3.14159, x ≤ y ≥ z ≠ w, ∑ ∫ ∞",
    "√π ≈ 1.772",
    "„Hallo‚ sagte er‘ und „Äpfel“ und „Über“",
    "• first\n• second …",
    "«\xa0Bonjour\xa0» dit-il\xa0!",
    "«\xa0École\xa0», «\xa0État\xa0»",
    "Attendez…écoutez, word—éclair",
    "ﬁne ligatures",
    "ÄÖÜ äöü ß",
    "Persian: می\u200cخواهم",
    "Tab\tseparated\tvalues",
    "€100 £50 ¥1000 © 2024 ® ™",
    "ÉCOLE ÇA ÀÉÈ",
]


def mojibake_in_long_sentence(mojibake: str) -> str:
    return f"The quarterly report was fine, and then {mojibake} appeared in the middle of it all."


def test_repairs_cp1252_mojibake() -> None:
    for broken, fixed in CP1252_MOJIBAKE.items():
        assert repair_text(broken) == fixed, broken


def test_repairs_macroman_apostrophe() -> None:
    assert repair_text("I don‚Äôt know") == "I don’t know"


def test_repairs_macroman_mojibake() -> None:
    for broken, fixed in MACROMAN_MOJIBAKE.items():
        assert repair_text(broken) == fixed, broken


def test_repairs_mojibake_word_in_the_middle_of_a_long_clean_sentence() -> None:
    for broken, fixed in {**CP1252_MOJIBAKE, **MACROMAN_MOJIBAKE}.items():
        assert repair_text(mojibake_in_long_sentence(broken)) == mojibake_in_long_sentence(fixed)


def test_repairs_both_mojibake_kinds_in_one_text() -> None:
    assert repair_text("donâ€™t ‚Üí do") == "don’t → do"


@pytest.mark.parametrize("correct", CORRECT_TEXT)
def test_leaves_correct_text_untouched(correct: str) -> None:
    assert repair_text(correct) == correct
    assert normalize_text_series(pl.Series([correct])).to_list() == [correct]


def test_never_flags_correct_text_as_suspect() -> None:
    assert not suspect_mojibake_mask(pl.Series(CORRECT_TEXT)).any()


def test_normalize_text_series_never_repairs_clean_strings(monkeypatch) -> None:
    calls: list[str] = []

    def counting_repair(text: str) -> str:
        calls.append(text)
        return repair_mojibake(text)

    monkeypatch.setattr(text_module, "repair_mojibake", counting_repair)
    mixed = [*CORRECT_TEXT, *CP1252_MOJIBAKE, *MACROMAN_MOJIBAKE]
    normalize_text_series(pl.Series(mixed))
    assert sorted(calls) == sorted([*CP1252_MOJIBAKE, *MACROMAN_MOJIBAKE])


def test_composes_decomposed_characters_to_nfc() -> None:
    assert repair_text("cafe\u0301") == "café"
    assert repair_text("Zu\u0308rich") == "Zürich"


# Strings NFC changes although none of their characters is a combining mark.
NFC_WITHOUT_COMBINING_MARKS = {
    "\u1100\u1161": "\uac00",  # Hangul jamo L + V -> syllable
    "\uac00\u11a8": "\uac01",  # Hangul syllable + trailing jamo
    "\u0b47\u0b3e": "\u0b4b",  # Oriya vowel signs (the second has ccc 0)
    "\u212b": "\u00c5",  # ANGSTROM SIGN, a singleton
    "\uf900": "\u8c48",  # CJK compatibility ideograph
    "\u0344": "\u0308\u0301",  # a non-starter decomposition
}


@pytest.mark.parametrize(("text", "nfc"), NFC_WITHOUT_COMBINING_MARKS.items())
def test_series_applies_nfc_where_no_combining_mark_shows_it(text: str, nfc: str) -> None:
    assert repair_text(f"x {text} y") == f"x {nfc} y"
    assert normalize_text_series(pl.Series([f"x {text} y"])).to_list() == [f"x {nfc} y"]


def test_strings_without_a_not_nfc_character_are_nfc() -> None:
    """`not_nfc_class` misses nothing: random text from every script stays put under NFC."""
    rng = random.Random(3)
    assigned = [
        chr(c)
        for c in range(0x20, 0x30000)
        if unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co")
    ]
    sample = ["".join(rng.choices(assigned, k=rng.randint(1, 6))) for _ in range(200_000)]
    sample += [a + b for a in assigned[::50] for b in ("\u0301", "\u093c", "\u1161", "\u0b3e")]
    flagged = pl.Series(sample).str.contains(not_nfc_class()).to_list()
    changed = [
        t for t, flag in zip(sample, flagged, strict=True) if unicodedata.normalize("NFC", t) != t
    ]
    assert changed  # the sample does hold strings NFC changes...
    missed = [
        t
        for t, flag in zip(sample, flagged, strict=True)
        if not flag and unicodedata.normalize("NFC", t) != t
    ]
    assert missed == []  # ...and every one of them is flagged


def test_removes_control_characters_but_keeps_newline_and_tab() -> None:
    assert repair_text("a\x00b\x07c\x1bd\x7fe\tf\ng") == "abcde\tf\ng"
    assert repair_text("form\x0cfeed\x0bvtab") == "formfeedvtab"


def test_removes_lone_c1_controls() -> None:
    assert repair_text("日本\x93語\x85") == "日本語"


def test_removes_zero_width_space_and_bom_but_keeps_zwj_and_zwnj() -> None:
    assert repair_text("\ufeffzero\u200bwidth\ufeff") == "zerowidth"
    assert repair_text("👩\u200d💻 می\u200cخواهم") == "👩\u200d💻 می\u200cخواهم"


def test_converts_crlf_and_lone_cr_to_newline() -> None:
    assert repair_text("one\r\ntwo\rthree") == "one\ntwo\nthree"


def test_removes_trailing_spaces_and_tabs_at_line_ends() -> None:
    assert repair_text("one  \ntwo\t\nthree \t ") == "one\ntwo\nthree"


def test_collapses_three_or_more_newlines_to_one_blank_line() -> None:
    assert repair_text("a\n\n\n\nb\n\nc") == "a\n\nb\n\nc"
    assert repair_text("a\n  \n\t\n\nb") == "a\n\nb"


def test_strips_leading_and_trailing_whitespace_of_the_text() -> None:
    assert repair_text("\n\n  \thello\n\n ") == "hello"


def test_keeps_runs_of_spaces_inside_lines_and_indentation() -> None:
    code = "def f():\n    x = 1  # two spaces before a comment\n\treturn x"
    assert repair_text(code) == code
    assert repair_text("| a   | b |") == "| a   | b |"


def test_keeps_nbsp_and_ideographic_space() -> None:
    assert repair_text("\u3000字下げ\u3000") == "\u3000字下げ\u3000"
    assert repair_text("Bonjour\xa0!\xa0") == "Bonjour\xa0!\xa0"


def test_keeps_nulls_null() -> None:
    result = normalize_text_series(pl.Series(["a ", None, "donâ€™t", None]))
    assert result.to_list() == ["a", None, "don’t", None]


def test_keeps_empty_series_empty() -> None:
    assert normalize_text_series(pl.Series([], dtype=pl.String)).to_list() == []


def mixed_sample(size: int, seed: int) -> list[str]:
    """Clean, broken and messy strings, shuffled."""
    rng = random.Random(seed)
    broken = [*CP1252_MOJIBAKE, *MACROMAN_MOJIBAKE]
    messy = ["  a\r\n\r\n\r\nb  ", "x\x00y\u200b", "e\u0301\t \n", "\ufeffhi", "a\n\n\n"]
    pool = [*CORRECT_TEXT, *broken, *messy]
    sample = []
    for _ in range(size):
        parts = rng.sample(pool, rng.randint(1, 3))
        sample.append(rng.choice([" ", "\n", "", "\r\n"]).join(parts))
    return sample


def test_series_equals_repair_text_on_a_shuffled_mixed_sample() -> None:
    sample = mixed_sample(1_000, seed=7)
    assert normalize_text_series(pl.Series(sample)).to_list() == [repair_text(t) for t in sample]


def random_mojibake_like(rng: random.Random) -> str:
    """Strings dense in the characters mojibake is made of, and real mojibake of random text."""
    alphabet = (
        "aeoZ .\n’“—…éüñ日Яω"
        + bytes(range(0x80, 0x100)).decode("mac_roman")
        + bytes(range(0xA0, 0x100)).decode("latin-1")
        + "€‚ƒ„†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ\x81\x8d\x90"
    )
    if rng.random() < 0.5:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
    original = "".join(rng.choice("abc éü’→—😀日Я") for _ in range(rng.randint(1, 6)))
    codec = rng.choice(["mac_roman", "cp1252", "latin-1"])
    return original.encode("utf-8").decode(codec, errors="ignore")


def test_suspect_pattern_flags_every_string_the_repair_changes() -> None:
    rng = random.Random(11)
    sample = [random_mojibake_like(rng) for _ in range(4_000)]
    flagged = suspect_mojibake_mask(pl.Series(sample)).to_list()
    missed = [
        t for t, flag in zip(sample, flagged, strict=True) if not flag and repair_mojibake(t) != t
    ]
    assert missed == []


def test_translated_ftfy_pattern_matches_whenever_ftfy_badness_does() -> None:
    rng = random.Random(5)
    sample = [random_mojibake_like(rng) for _ in range(4_000)]
    flagged = pl.Series(sample).str.contains(f"(?m){FTFY_SUSPECT_PATTERN}").to_list()
    missed = [
        t for t, flag in zip(sample, flagged, strict=True) if BADNESS_RE.search(t) and not flag
    ]
    assert missed == []


def test_widened_classes_cover_pythons_whitespace_and_word_characters() -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    series = pl.Series(chars)
    for python_class, rust_class in [(r"\s", r"^[\s\x1C-\x1F]$"), (r"\w", r"^[\w\p{N}]$")]:
        rust = series.str.contains(rust_class).to_list()
        python = re.compile(python_class)
        assert [c for c, hit in zip(chars, rust, strict=True) if python.match(c) and not hit] == []


def test_suspect_pattern_compiles_in_polars() -> None:
    assert pl.Series(["x"]).str.contains(SUSPECT_MOJIBAKE_PATTERN).to_list() == [False]
