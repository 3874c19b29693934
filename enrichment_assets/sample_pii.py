"""Generated conversations with planted personal data, and PII-free text that looks risky.

For the redaction tests and `benchmarks/bench_redaction.py`:
- `planted_conversations(n)`: the sample generator's conversations (`sample_data`) with
  e-mail addresses, phone numbers of many countries (international notation, and the US
  national one), Luhn-valid card numbers, IBANs of several countries and IPv4/IPv6
  addresses written into their messages, each planted value recorded;
- `clean_messages(n)`: the generator's messages with the numbers PII detectors trip over
  added (dates, times, prices, order and ticket ids, versions, error codes, quantities):
  none of them is personal data, so a redactor should leave them as they are;
- `planted_corpus(n)`: both in one corpus (what the egress acceptance test and
  `benchmarks/bench_pii_egress.py` send through the enricher).

Deterministic for a seed. Every planted value is checked against the library that defines it
(`phonenumbers`, `stdnum`, `ipaddress`) when it is made, so a value the redactor misses is
the redactor's miss, not the generator's.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn

from enrichment_assets.sample_data import generate_conversations

PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "ES", "IT", "NL", "MX", "CH")
# Country code -> BBAN layout: (kind, length) runs; n = digits, a = upper-case letters,
# c = letters or digits.
IBAN_LAYOUTS = {
    "DE": (("n", 18),),
    "GB": (("a", 4), ("n", 14)),
    "FR": (("n", 10), ("c", 11), ("n", 2)),
    "ES": (("n", 20),),
    "IT": (("a", 1), ("n", 10), ("c", 12)),
    "NL": (("a", 4), ("n", 10)),
    "AT": (("n", 16),),
    "PL": (("n", 24),),
    "CH": (("n", 5), ("c", 12)),
}
# (first digits, length, grouping) of the card numbers planted.
CARD_LAYOUTS = (
    ("4", 16, (4, 4, 4, 4)),  # Visa
    ("4", 13, (4, 4, 4, 1)),
    ("51", 16, (4, 4, 4, 4)),  # Mastercard
    ("2221", 16, (4, 4, 4, 4)),
    ("34", 15, (4, 6, 5)),  # American Express
    ("37", 15, (4, 6, 5)),
    ("6011", 16, (4, 4, 4, 4)),  # Discover
    ("3528", 16, (4, 4, 4, 4)),  # JCB
)
_FIRST = ("anna", "li", "jose", "marie", "omar", "kenji", "fatima", "john", "zoe", "pieter")
_LAST = ("schmidt", "garcia", "nguyen", "dubois", "smith", "kowalski", "rossi", "tanaka")
_DOMAINS = (
    "example.com",
    "mail.de",
    "correo.es",
    "univ-lyon.fr",
    "company.co.uk",
    "outlook.com",
    "web-shop.nl",
)
TEMPLATES = {
    "EMAIL": (
        "You can write to me at {v}.",
        "My email address is {v}",
        "Please send the invoice to {v} instead of the old address.",
        "I registered with {v} last year.",
    ),
    "PHONE": (
        "Call me back on {v}, please.",
        "My number is {v}.",
        "You can reach me at {v} after 6pm.",
        "The number on file should be {v}.",
    ),
    "CARD": (
        "I paid with my card {v} yesterday.",
        "The card number is {v}, expiry 09/27.",
        "Please refund it to {v}.",
    ),
    "IBAN": (
        "My IBAN is {v}.",
        "Send the refund to IBAN {v} please.",
        "Account for the transfer: {v}",
    ),
    "IP": (
        "The login came from {v} last night.",
        "My router's public address is {v}.",
        "The server at {v} refuses the connection.",
    ),
}
ECHO = "Thanks, I have noted {v} on your file."


@dataclass(frozen=True)
class PlantedValue:
    """One piece of personal data written into a conversation, as written."""

    kind: str
    text: str


def _email(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = rng.choice((f"{first}.{last}", f"{first}_{last}{rng.randint(1, 99)}", first + last))
    if rng.random() < 0.2:
        local += "+orders"
    value = f"{local}@{rng.choice(_DOMAINS)}"
    return value.capitalize() if rng.random() < 0.2 else value


def _phone(rng: random.Random) -> str:
    while True:
        region = rng.choice(PHONE_REGIONS)
        kind = rng.choice(
            (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)
        )
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        national = str(example.national_number)
        tail = "".join(rng.choice("0123456789") for _ in range(4))
        number = phonenumbers.PhoneNumber(
            country_code=example.country_code, national_number=int(national[:-4] + tail)
        )
        if not phonenumbers.is_valid_number(number):
            continue
        international = phonenumbers.format_number(
            number, phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
        draw = rng.random()
        if region == "US" and draw < 0.3:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        if draw < 0.55:
            return international
        if draw < 0.7:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if draw < 0.85:  # the `00` international prefix
            return "00" + international[1:]
        # People group the digits their own way.
        significant = str(number.national_number)
        groups = [significant[i : i + 3] for i in range(0, len(significant), 3)]
        return f"+{number.country_code} " + " ".join(groups)


def _card(rng: random.Random) -> str:
    prefix, length, groups = rng.choice(CARD_LAYOUTS)
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    digits = body + luhn.calc_check_digit(body)
    separator = rng.choice((" ", "-", ""))
    parts, start = [], 0
    for size in groups:
        parts.append(digits[start : start + size])
        start += size
    return separator.join(parts)


def _iban(rng: random.Random) -> str:
    while True:
        country = rng.choice(tuple(IBAN_LAYOUTS))
        alphabet = {"n": "0123456789", "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
        bban = "".join(
            "".join(
                rng.choice(alphabet.get(kind, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
                for _ in range(n)
            )
            for kind, n in IBAN_LAYOUTS[country]
        )
        value = country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban
        if stdnum_iban.is_valid(value):  # some countries add a national check: draw again
            return stdnum_iban.format(value) if rng.random() < 0.7 else value


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.6:
        first = rng.choice([n for n in range(11, 224) if n != 127])
        return ".".join(str(part) for part in (first, *(rng.randint(0, 255) for _ in range(3))))
    address = ipaddress.IPv6Address(
        (0x2001 << 112) | (rng.getrandbits(16) << 96) | rng.getrandbits(64)
    )
    return address.compressed if rng.random() < 0.7 else address.exploded


MAKERS = {"EMAIL": _email, "PHONE": _phone, "CARD": _card, "IBAN": _iban, "IP": _ip}


def planted_conversations(n: int, *, seed: int = 11) -> list[tuple[dict, list[PlantedValue]]]:
    """`n` valid sample conversations, each with 1-3 planted values (and what was planted).

    A planted value goes into a random user message as a sentence of `TEMPLATES`; a quarter
    of them are also echoed by the next assistant message, so one value appears twice.
    """
    rng = random.Random(seed)
    out = []
    for record in generate_conversations(n, seed=seed, defect_rate=0.0):
        assert isinstance(record, dict)
        messages = record["messages"]
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        planted = []
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice(tuple(MAKERS))
            value = MAKERS[kind](rng)
            at = rng.choice(users)
            sentence = rng.choice(TEMPLATES[kind]).format(v=value)
            messages[at]["content"] = f"{messages[at]['content']} {sentence}"
            if rng.random() < 0.25 and at + 1 < len(messages):
                messages[at + 1]["content"] += " " + ECHO.format(v=value)
            planted.append(PlantedValue(kind, value))
        out.append((record, planted))
    return out


def _clean_fragment(rng: random.Random) -> str:
    year = rng.randint(2019, 2026)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    hour, minute = rng.randint(0, 23), rng.randint(0, 59)
    price = f"{rng.randint(1, 4999)}.{rng.randint(0, 99):02d}"
    iso_day = f"{year}-{month:02d}-{day:02d}"
    fragments = (
        f"Your order ORD-{year}-{rng.randint(0, 999999):06d} ships on {iso_day}.",
        f"The total is ${int(float(price)):,}.{price.split('.')[1]} including tax.",
        f"It costs {price.replace('.', ',')} € in the shop and €{price} online.",
        f"I updated to version {rng.randint(1, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 99)} "
        "and it still crashes.",
        f"The meeting is at {hour:02d}:{minute:02d} tomorrow, not {hour % 12 + 1}:{minute:02d} pm.",
        f"Ticket #{rng.randint(10000, 999999)} was closed on {day:02d}/{month:02d}/{year}.",
        f"It took {rng.randint(2, 59)} minutes and {rng.randint(2, 59)} seconds to load.",
        f"The log says error 0x{rng.getrandbits(32):08X} at {hour:02d}:{minute:02d}:{day:02d}.",
        f"I bought {rng.randint(2, 12)} items, {rng.randint(100, 999)} ml each, "
        f"{rng.randint(5, 95)}% off.",
        f"Invoice INV-{year}-{rng.randint(0, 99999):05d} from {iso_day}T"
        f"{hour:02d}:{minute:02d}:00Z is still open.",
        f"Windows 11 build 10.0.{rng.randint(19041, 26100)} on a {rng.randint(2015, 2024)} laptop.",
        f"Order {rng.randint(1000, 9999)}-{rng.randint(1000, 9999)} has "
        f"{rng.randint(2, 9)} parcels of {rng.randint(1, 30)}.{rng.randint(0, 9)} kg.",
        f"We moved to Suite {rng.randint(100, 999)}, {rng.randint(1, 300)} Main Street, "
        f"ZIP {rng.randint(10000, 99999)}.",
        f"The API answered 429 then 503; retry after {rng.randint(1, 120)} s.",
    )
    return rng.choice(fragments)


def clean_messages(n: int, *, seed: int = 13) -> list[str]:
    """`n` PII-free messages: generated text, most with one or two risky-looking numbers."""
    rng = random.Random(seed)
    out: list[str] = []
    for record in generate_conversations(max(1, n // 8) + 1, seed=seed, defect_rate=0.0):
        assert isinstance(record, dict)
        for message in record["messages"]:
            extra = [_clean_fragment(rng) for _ in range(rng.choice((0, 1, 1, 2)))]
            out.append(" ".join([message["content"], *extra]))
            if len(out) == n:
                return out
    return out


def planted_corpus(
    n: int, *, seed: int = 11, clean_share: float = 0.5
) -> tuple[list[dict], list[PlantedValue], list[tuple[str, str]]]:
    """`planted_conversations(n)` where `clean_share` of the messages without a planted value
    are replaced by `clean_messages` text; returns the records, every planted value, and every
    PII-free message as (role, content)."""
    rng = random.Random(seed + 1)
    clean = iter(clean_messages(16 * n + 16, seed=seed + 2))
    records, values, pii_free = [], [], []
    for record, planted in planted_conversations(n, seed=seed):
        for m in record["messages"]:
            if any(v.text in m["content"] for v in planted):
                continue
            if rng.random() < clean_share:
                m["content"] = next(clean)
            pii_free.append((m["role"], m["content"]))
        records.append(record)
        values += planted
    return records, values, pii_free
