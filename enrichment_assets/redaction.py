"""PII redaction: personal data replaced by typed placeholders, consistent within a conversation.

What is detected, and how each candidate is confirmed (README "PII redaction" says the same):
- `EMAIL`: `local@domain.tld` with an ASCII domain and a 2-63 letter TLD;
- `PHONE`: what `phonenumbers.PhoneNumberMatcher` finds as a *valid* number: with its
  country code (`+44 20 7946 0958`, `+33 612 345 678`, `0049 30 901820`) for any country
  and however it is grouped; in national notation (`(415) 555-2671`) for the default region
  (`phone_region`, `ENRICH_PII_PHONE_REGION`, default US) when it is also grouped as that
  region writes numbers (so `ORD-2024-004512` is not a phone number); 7 digits at least;
- `CARD`: 13-19 digits, optionally grouped by single spaces or hyphens, starting like a payment
  card (2-6) and passing the Luhn check (`stdnum.luhn`);
- `IBAN`: passes `stdnum.iban` (the country's length and format, and the mod-97 check digits),
  compact or printed in groups of four;
- `IP`: IPv4 dotted quads and IPv6 addresses that `ipaddress` accepts (IPv6 with at least two
  non-empty groups and five hex digits, so that `std::map` or `10:30:00` are left alone).

Each value gets a placeholder `<KIND_n>`: the same value (case, spacing and formatting aside)
is the same placeholder everywhere in one conversation, numbered in order of appearance.

Fast on big inputs: `CANDIDATES` is one regular expression, valid for Python and for the Rust
engine of Polars, that matches every text any detector could fire on. Polars runs it over a
whole column (`redact_messages`), and the exact detectors above (Python) run only on the texts
it flags; `redact_turns` applies the same gate, so both paths give the same result.

Modes (`ENRICH_PII_MODE`, or the `pii` resource's `mode`): `off`; `egress` (the default:
what is sent to an LLM endpoint is redacted, the outputs keep the text); `export` (the
training dataset's lines are redacted too).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import phonenumbers
import polars as pl
from stdnum import iban as stdnum_iban
from stdnum import luhn

from enrichment_assets import settings as env_settings

PiiMode = Literal["off", "egress", "export"]
PII_MODES: tuple[str, ...] = get_args(PiiMode)
PII_KINDS = ("EMAIL", "PHONE", "CARD", "IBAN", "IP")
DEFAULT_MODE: PiiMode = "egress"
DEFAULT_PHONE_REGION = "US"

# Every text a detector could fire on matches one of these (ASCII classes on purpose: the
# Python and Rust engines then agree on what a digit or a letter is).
CANDIDATES = (
    r"@"  # e-mail
    r"|[0-9](?:[ \t().\-/]{0,3}[0-9]){6}"  # 7+ digits: phone, card, the digits of an IBAN
    r"|[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"  # IPv4
    r"|:[0-9A-Fa-f]{0,4}:"  # IPv6: two colons with at most one group between them
    r"|[A-Za-z]{2}[0-9]{2} ?[A-Za-z0-9]{4}"  # IBAN: country, check digits, a group
)
_CANDIDATES = re.compile(CANDIDATES)
# Every branch of CANDIDATES needs one of these: Python's regex engine rejects most texts
# with this check far faster than with the whole alternation (Polars' engine needs no help).
_MAYBE_CANDIDATE = re.compile(r"[@:0-9]")

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9\-])"
)
# Printed IBANs come in groups of four (the last one shorter); compact ones in one run.
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}"
    r"(?:(?: ?[A-Za-z0-9]{4}){2,8}(?: ?[A-Za-z0-9]{1,3})?|[A-Za-z0-9]{11,30})(?![A-Za-z0-9])"
)
# Card numbers as people write them: one run of digits, groups of four (4-4-4-1..4, 4-4-4-4-1..3)
# or the 4-6-5 / 4-6-4 grouping of American Express and Diners.
_CARD = re.compile(
    r"(?<![0-9A-Za-z.,\-])(?:"
    r"[2-6][0-9]{12,18}"
    r"|[2-6][0-9]{3}(?P<s>[ \-])[0-9]{4}(?P=s)[0-9]{4}(?P=s)[0-9]{1,4}(?:(?P=s)[0-9]{1,3})?"
    r"|3[0-9]{3}(?P<t>[ \-])[0-9]{6}(?P=t)[0-9]{4,5}"
    r")(?![0-9A-Za-z])"
)
_IPV4 = re.compile(r"(?<![0-9A-Za-z.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9A-Za-z]|\.[0-9])")
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4})(?![0-9A-Za-z:])"
)
_HEX_GROUP = re.compile(r"[0-9A-Fa-f]+")
_NOT_DIGITS = re.compile(r"[^0-9]")


def pii_mode_from_env(env: Mapping[str, str] | None = None) -> PiiMode:
    """`ENRICH_PII_MODE` (off | egress | export), `egress` when unset (ValueError when bad)."""
    env = env_settings.environment() if env is None else env
    return parse_mode(env.get("ENRICH_PII_MODE", ""), "ENRICH_PII_MODE")


def phone_region_from_env(env: Mapping[str, str] | None = None) -> str:
    """`ENRICH_PII_PHONE_REGION` (an ISO 3166 region, or `none`), US when unset."""
    env = env_settings.environment() if env is None else env
    return parse_region(env.get("ENRICH_PII_PHONE_REGION", ""), "ENRICH_PII_PHONE_REGION")


def parse_mode(raw: str, name: str = "mode") -> PiiMode:
    """A PII mode from a setting; blank is the default (ValueError naming `name` when bad)."""
    value = raw.strip().lower() or DEFAULT_MODE
    if value not in PII_MODES:
        raise ValueError(f"{name}={raw!r}: expected one of {', '.join(PII_MODES)}")
    return value  # type: ignore[return-value]


def parse_region(raw: str, name: str = "phone_region") -> str:
    """The region national phone numbers are read in; `none` reads international ones only."""
    value = raw.strip().upper() or DEFAULT_PHONE_REGION
    if value == "NONE":
        return "ZZ"  # phonenumbers' unknown region: only numbers with a country code parse
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{name}={raw!r}: expected a two-letter region such as US or DE, or none")
    return value


@dataclass(frozen=True)
class Detection:
    """One piece of personal data in a text: where it is, what it is, and its identity."""

    kind: str
    start: int
    end: int
    key: str  # the value as compared within a conversation (formatting removed)


def _emails(text: str) -> Iterable[Detection]:
    for match in _EMAIL.finditer(text):
        local = match.group().split("@", 1)[0]
        if not (local.startswith(".") or local.endswith(".") or ".." in local):
            yield Detection("EMAIL", match.start(), match.end(), match.group().lower())


def _ibans(text: str) -> Iterable[Detection]:
    for match in _IBAN.finditer(text):
        value = match.group()
        # Words after a printed IBAN can look like more groups: retry without them.
        ends = [len(value)] + [i for i in range(len(value) - 1, 14, -1) if value[i] == " "]
        for end in ends:
            if stdnum_iban.is_valid(value[:end]):
                compact = stdnum_iban.compact(value[:end])
                yield Detection("IBAN", match.start(), match.start() + end, compact)
                break


def _cards(text: str) -> Iterable[Detection]:
    for match in _CARD.finditer(text):
        digits = _NOT_DIGITS.sub("", match.group())
        if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
            yield Detection("CARD", match.start(), match.end(), digits)


def _ips(text: str) -> Iterable[Detection]:
    for match in _IPV4.finditer(text):
        try:
            address = ipaddress.IPv4Address(match.group())
        except ValueError:
            continue
        yield Detection("IP", match.start(), match.end(), str(address))
    for match in _IPV6.finditer(text):
        value = match.group()
        groups = _HEX_GROUP.findall(value.split(".")[0])
        if len(groups) < 2 or sum(map(len, groups)) < 5:
            continue
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield Detection("IP", match.start(), match.end(), str(address))


def _phones(text: str, region: str) -> Iterable[Detection]:
    # `0049 30 901820`: the `00` international prefix of most of the world is read as `+`
    # whatever the default region (the same length, so the offsets hold).
    scanned = _IDD.sub(" +", text)
    valid = list(phonenumbers.PhoneNumberMatcher(scanned, region, phonenumbers.Leniency.VALID))
    # A number with its country code is a phone number however it is grouped; one in national
    # notation must also be grouped as the region writes it (else `ORD-2024-004512` is a US
    # number).
    national = [m for m in valid if not m.raw_string.startswith(_INTERNATIONAL_PREFIXES)]
    grouped = set()
    if national:
        strict = phonenumbers.Leniency.STRICT_GROUPING
        grouped = {
            (m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(scanned, region, strict)
        }
    for match in valid:
        if match in national and (match.start, match.end) not in grouped:
            continue
        start = match.start - 1 if text[match.start - 1 : match.start + 1] == "00" else match.start
        e164 = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        yield Detection("PHONE", start, match.end, e164)


# `00` opening a number: not inside a word, and not one more group of digits (`1234 0012`).
_IDD = re.compile(r"(?<![0-9A-Za-z\-+.])(?<![0-9][ \-./])00(?=[1-9])")
_INTERNATIONAL_PREFIXES = ("+", "00", "011")


def detect(
    text: str, phone_region: str = DEFAULT_PHONE_REGION, *, scan: bool = True
) -> list[Detection]:
    """The personal data in `text`, in order, without overlaps.

    Detectors run from the most specific to the least (e-mail, IBAN, card, IP, phone): a
    later detection that overlaps an earlier one is dropped, so the digits of a card number
    are never also a phone number. `scan=False` skips the `CANDIDATES` gate (the same result,
    slower: what the benchmark compares the gate against).
    """
    if scan and not (_MAYBE_CANDIDATE.search(text) and _CANDIDATES.search(text)):
        return []
    accepted: list[Detection] = []
    for found in (_emails(text), _ibans(text), _cards(text), _ips(text)):
        accepted.extend(d for d in found if not _overlaps(d, accepted))
    if _PHONE_DIGITS.search(text):
        accepted.extend(d for d in _phones(text, phone_region) if not _overlaps(d, accepted))
    return sorted(accepted, key=lambda d: d.start)


# A phone number has at least 7 digits: the matcher (the slowest detector) runs only then.
_PHONE_DIGITS = re.compile(r"[0-9](?:[ \t().\-/]{0,3}[0-9]){6}")


def _overlaps(detection: Detection, accepted: list[Detection]) -> bool:
    return any(detection.start < a.end and a.start < detection.end for a in accepted)


@dataclass
class ConversationRedactor:
    """Redacts the texts of one conversation: one placeholder per distinct value and kind."""

    phone_region: str = DEFAULT_PHONE_REGION
    counts: Counter[str] = field(default_factory=Counter)  # kind -> values replaced
    _placeholders: dict[tuple[str, str], str] = field(default_factory=dict)
    _next: Counter[str] = field(default_factory=Counter)

    def placeholder(self, kind: str, key: str) -> str:
        if (kind, key) not in self._placeholders:
            self._next[kind] += 1
            self._placeholders[(kind, key)] = f"<{kind}_{self._next[kind]}>"
        return self._placeholders[(kind, key)]

    def redact(self, text: str) -> str:
        """`text` with each detection replaced by its placeholder."""
        detections = detect(text, self.phone_region)
        if not detections:
            return text
        parts, position = [], 0
        for d in detections:
            parts += [text[position : d.start], self.placeholder(d.kind, d.key)]
            position = d.end
            self.counts[d.kind] += 1
        parts.append(text[position:])
        return "".join(parts)


def redact_turns(
    turns: Sequence[tuple[str, str]], *, phone_region: str = DEFAULT_PHONE_REGION
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """One conversation's `(role, content)` turns redacted, and the count per kind (the
    same result as `redact_messages` on a frame holding that one conversation)."""
    redactor = ConversationRedactor(phone_region)
    redacted = [(role, redactor.redact(content)) for role, content in turns]
    return redacted, redactor.counts


@dataclass(frozen=True)
class RedactedFrame:
    """A frame whose messages were redacted, and what was replaced."""

    frame: pl.DataFrame
    counts: dict[str, int]  # kind -> values replaced, every kind present
    conversations: int  # conversations with at least one replacement
    messages_scanned: int  # messages the exact detectors ran on (the candidates)


def redact_messages(
    frame: pl.DataFrame, *, phone_region: str = DEFAULT_PHONE_REGION, messages: str = "messages"
) -> RedactedFrame:
    """`frame` with the `content` of every message in its `messages` list redacted.

    What the `openai` enricher sends goes through here in the `egress` and `export` modes
    (each chunk of conversations, before any request or cache key is made), and the training
    dataset's lines in the `export` mode.

    Each row is one conversation (placeholders are numbered per row). The candidate scan is
    one Polars regex over the whole exploded content column; the Python detectors see only
    the candidate messages, in message order within their conversation, and only the
    conversations with a replacement have their message lists rebuilt.
    """
    flat = (
        frame.select(messages)
        .with_row_index("__row")
        .explode(messages)
        .with_row_index("__message")
        .unnest(messages)
    )
    candidates = flat.filter(pl.col("content").str.contains(CANDIDATES))
    counts, replaced, rows = _redact_candidates(candidates, phone_region)
    result = _with_replaced(frame, flat, replaced, rows, messages) if replaced else frame
    return RedactedFrame(
        frame=result,
        counts={kind: counts.get(kind, 0) for kind in PII_KINDS},
        conversations=len(rows),
        messages_scanned=candidates.height,
    )


def _redact_candidates(
    candidates: pl.DataFrame, phone_region: str
) -> tuple[Counter[str], dict[int, str], set[int]]:
    """Run the exact detectors over the candidate messages (in message order, one
    `ConversationRedactor` per conversation): the counts per kind, the redacted content of
    each message with a replacement (by `__message`), and the conversations (`__row`) they
    belong to."""
    counts: Counter[str] = Counter()
    replaced: dict[int, str] = {}  # __message -> redacted content
    rows: set[int] = set()
    redactor = ConversationRedactor(phone_region)
    current_row = -1
    for row, index, content in candidates.select("__row", "__message", "content").iter_rows():
        if row != current_row:
            counts.update(redactor.counts)
            redactor, current_row = ConversationRedactor(phone_region), row
        redacted = redactor.redact(content)
        if redacted != content:
            replaced[index] = redacted
            rows.add(row)
    counts.update(redactor.counts)
    return counts, replaced, rows


def _with_replaced(
    frame: pl.DataFrame, flat: pl.DataFrame, replaced: dict[int, str], rows: set[int], messages: str
) -> pl.DataFrame:
    """`frame` with the message lists of the conversations in `rows` rebuilt from `flat`
    (one row per message), the contents in `replaced` in place of theirs."""
    fields = [f.name for f in frame.schema[messages].inner.fields]  # type: ignore[union-attr]
    touched = flat.filter(pl.col("__row").is_in(list(rows)))
    new_content = pl.Series(
        [replaced.get(i, c) for i, c in touched.select("__message", "content").iter_rows()],
        dtype=pl.String(),
    )
    rebuilt = (
        touched.with_columns(new_content.alias("content"))
        .group_by("__row", maintain_order=True)
        .agg(pl.struct(fields).alias("__redacted"))
    )
    return (
        frame.with_row_index("__row")
        .join(rebuilt, on="__row", how="left", maintain_order="left")
        .with_columns(pl.coalesce("__redacted", messages).alias(messages))
        .drop("__row", "__redacted")
    )
