"""Realistic sample conversations for the demo, the tests and the benchmarks.

`generate_conversations` yields canonical input records (`contract.Conversation`) built
from the reference seed files and topic-specific sentence banks, so that the joins, the
quality gates and the heuristic enricher all have something real to work on. It is
deterministic for a seed and fast enough for 100,000 conversations in a few seconds: every
message is a handful of whole sentences picked from a bank, never per-character work.

What the data carries on purpose:
- defects (`defect_rate`, one of `DEFECT_KINDS` each) that validation must
  quarantine; `broken_json` is yielded as a `str`, a truncated JSON line;
- mojibake (`mojibake_rate` of the messages): UTF-8 text really mis-decoded as
  cp1252 (`donâ€™t`) or MacRoman (`don‚Äôt`), which normalization must repair;
- correct non-ASCII text (accents, emoji, CJK) that repair must leave alone;
- reference ids the seed files do not know (`unknown_reference_rate`): valid,
  the enrichment join leaves their metadata empty.

`write_sample_files` writes them as landing files in the canonical, OpenAI
and ShareGPT shapes.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TypeVar

import orjson

from enrichment_assets.sample_sentences import (
    DOMAIN_ASSISTANT,
    DOMAIN_USER,
    EDGE_REPLIES,
    EMOTION_CLOSERS,
    EMOTION_OPENERS,
    SYSTEM_PROMPTS,
    TOPIC_ASSISTANT,
    TOPIC_USER,
    TYPOGRAPHIC,
    UNKNOWN_SLUGS,
)

SEEDS_DIR = Path(__file__).parent / "seeds"

DEFECT_KINDS = (
    "missing_assistant",
    "unknown_role",
    "empty_content",
    "malformed_id",
    "bad_tier",
    "bad_timestamp",
    "broken_json",
)

# Output format -> file suffix. Formats cycle over the files written.
FORMAT_SUFFIXES = {
    "jsonl": ".jsonl",
    "json_array": ".json",
    "openai_jsonl": ".jsonl",
    "sharegpt_json": ".json",
}

USER_POOL_SIZE = 50
CREATED_AT_SPREAD = timedelta(days=7)
TAPE_LENGTH = 2048  # sentences per topic and role; a message is a slice
REFERENCE_FIELDS = ("persona_id", "emotional_arc_id", "training_topic_id", "template_id")
_SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}
_EPOCH = datetime(1970, 1, 1)
T = TypeVar("T")


@dataclass(frozen=True)
class _Reference:
    """The seed rows a generated conversation may point at, and its sentence banks."""

    personas: tuple[dict[str, str], ...]
    arcs: tuple[dict[str, str], ...]
    topics: tuple[dict[str, str], ...]
    templates: tuple[dict[str, str], ...]
    user_banks: dict[str, tuple[str, ...]]  # training_topic_id -> sentences
    assistant_banks: dict[str, tuple[str, ...]]
    system_prompts: dict[str, tuple[str, ...]]  # persona_id -> prompts


def read_seed(name: str) -> list[dict[str, str]]:
    """Rows of one reference seed file (`personas`, `emotional_arcs`, ...)."""
    with (SEEDS_DIR / f"{name}.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@cache
def _reference() -> _Reference:
    personas = tuple(read_seed("personas"))
    topics = tuple(read_seed("training_topics"))
    # Topic-specific sentences twice: they carry the keywords a topic is known by.
    user_banks = {
        t["training_topic_id"]: TOPIC_USER.get(t["training_topic_id"], ()) * 2
        + DOMAIN_USER[t["domain"]]
        for t in topics
    }
    assistant_banks = {
        t["training_topic_id"]: TOPIC_ASSISTANT.get(t["training_topic_id"], ()) * 2
        + DOMAIN_ASSISTANT[t["domain"]]
        for t in topics
    }
    system_prompts = {
        p["persona_id"]: tuple(
            s.format(name=p["name"].lower(), style=p["communication_style"]) for s in SYSTEM_PROMPTS
        )
        for p in personas
    }
    return _Reference(
        personas=personas,
        arcs=tuple(read_seed("emotional_arcs")),
        topics=topics,
        templates=tuple(read_seed("templates")),
        user_banks=user_banks,
        assistant_banks=assistant_banks,
        system_prompts=system_prompts,
    )


@cache
def _mojibake() -> tuple[str, ...]:
    """Typographic sentences as a UTF-8 reader using the wrong code page sees them."""
    out = []
    for sentence in TYPOGRAPHIC:
        for codec in ("cp1252", "mac_roman"):
            try:
                out.append(sentence.encode("utf-8").decode(codec))
            except UnicodeDecodeError:  # cp1252 has holes (e.g. the byte of ”)
                continue
    return tuple(out)


def _default_end() -> datetime:
    # Midnight UTC today: created_at covers the last 7 full days, and a seed gives
    # the same records all day long.
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class _SentenceTape:
    """A long shuffled run of a sentence bank: a message is a random slice of it.

    One slice per message instead of one random pick per sentence is what keeps
    100,000 conversations within a few seconds.
    """

    sentences: tuple[str, ...]
    bank_size: int
    twice_mean_count: float  # sentences per message: max(1, round(U * this)), mean ~ half

    @classmethod
    def of(cls, rng: random.Random, bank: tuple[str, ...], message_chars: int) -> _SentenceTape:
        mean_chars = sum(map(len, bank)) / len(bank) + 1  # + the joining space
        twice_mean_count = 2 * message_chars / mean_chars
        order, run = list(bank), []
        while len(run) < max(TAPE_LENGTH, 4 * twice_mean_count):
            rng.shuffle(order)
            run.extend(order)
        return cls(tuple(run), len(bank), twice_mean_count)

    def message(self, random_: Callable[[], float]) -> list[str]:
        k = max(1, int(0.5 + random_() * self.twice_mean_count))
        start = int(random_() * (len(self.sentences) - 2 * k))
        if k > self.bank_size:  # longer than the bank: repeats are unavoidable
            return list(self.sentences[start : start + k])
        # A window of 2k holds at least k distinct sentences (it spans <= 2 shuffles).
        return list(dict.fromkeys(self.sentences[start : start + 2 * k]))[:k]


@cache
def _clock_strings() -> tuple[str, ...]:
    """`THH:MM:SSZ` for every second of a day: timestamps are formatted by lookup."""
    return tuple(
        f"T{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60)
    )


def generate_conversations(
    n: int,
    *,
    seed: int = 7,
    defect_rate: float = 0.03,
    mojibake_rate: float = 0.02,
    min_messages: int = 4,
    max_messages: int = 20,
    message_chars: int = 300,
    unknown_reference_rate: float = 0.05,
    system_prompt_rate: float = 0.6,
    end: datetime | None = None,
) -> Iterator[dict | str]:
    """Yield exactly `n` canonical conversation records, deterministic for `seed`.

    A record with a defect (probability `defect_rate`) breaks one validation rule
    (see `DEFECT_KINDS`); a `broken_json` defect is yielded as a `str`. Records
    start in the 7 days before `end` (default: today's midnight UTC); messages
    follow each other by 5-300 s. `message_chars` is the mean message length.
    """
    if not 4 <= min_messages <= max_messages:
        raise ValueError(
            f"need 4 <= min_messages <= max_messages, got {min_messages}, {max_messages}"
        )
    mix = _Mix(
        defect_rate=defect_rate,
        mojibake_rate=mojibake_rate,
        min_messages=min_messages,
        max_messages=max_messages,
        unknown_reference_rate=unknown_reference_rate,
        system_prompt_rate=system_prompt_rate,
    )
    maker = _ConversationMaker(random.Random(seed), mix, message_chars, end or _default_end())
    for _ in range(n):
        yield maker.record()


@dataclass(frozen=True)
class _Mix:
    """How often each feature shows up: the rates and sizes `generate_conversations` takes."""

    defect_rate: float
    mojibake_rate: float
    min_messages: int
    max_messages: int
    unknown_reference_rate: float
    system_prompt_rate: float


class _Clock:
    """ISO-8601 UTC stamps of the 7 days before `end`, by lookup: datetime formatting is slow."""

    def __init__(self, end: datetime) -> None:
        self.end_s = int(
            (end if end.tzinfo else end.replace(tzinfo=UTC)).timestamp()
        )  # naive = UTC
        self.spread_s = int(CREATED_AT_SPREAD.total_seconds())
        self._seconds = _clock_strings()
        self._days = {
            d: (_EPOCH + timedelta(days=d)).date().isoformat()
            for d in range((self.end_s - self.spread_s) // 86400, self.end_s // 86400 + 2)
        }

    def stamp(self, epoch_s: int) -> str:
        return self._days[epoch_s // 86400] + self._seconds[epoch_s % 86400]


class _ConversationMaker:
    """One generator's state: its random stream, sentence tapes, users and clock.

    Every draw from the random stream happens in a fixed order, so a seed gives the same
    records; the loops run a million times for 100,000 conversations, hence the local names.
    """

    def __init__(self, rng: random.Random, mix: _Mix, message_chars: int, end: datetime) -> None:
        self.rng, self.random, self.mix = rng, rng.random, mix
        self.ref = ref = _reference()
        self.mojibake = _mojibake()
        self.tapes = {
            topic_id: (
                _SentenceTape.of(rng, ref.user_banks[topic_id], message_chars),
                _SentenceTape.of(rng, ref.assistant_banks[topic_id], message_chars),
            )
            for topic_id in ref.user_banks
        }
        self.users = tuple(f"user-{i:04d}" for i in range(1, USER_POOL_SIZE + 1))
        # A few users are far more active than the rest, as in real chat logs.
        self.user_weights = tuple(
            itertools.accumulate(1.0 / i**0.8 for i in range(1, USER_POOL_SIZE + 1))
        )
        self.clock = _Clock(end)
        self.openers = {
            arc["start_emotion"]: _by_emotion(EMOTION_OPENERS, arc["start_emotion"])
            for arc in ref.arcs
        }
        self.closers = {
            arc["end_emotion"]: _by_emotion(EMOTION_CLOSERS, arc["end_emotion"]) for arc in ref.arcs
        }

    def pick(self, seq: Sequence[T]) -> T:  # rng.choice without its overhead
        return seq[int(self.random() * len(seq))]

    def record(self) -> dict | str:
        """The next conversation: its reference rows, messages and ids (maybe a defect)."""
        pick, random_, ref, clock = self.pick, self.random, self.ref, self.clock
        persona, arc, topic, template = (
            pick(ref.personas),
            pick(ref.arcs),
            pick(ref.topics),
            pick(ref.templates),
        )
        created_at = clock.end_s - 1 - int(random_() * clock.spread_s)
        messages = self._messages(persona, arc, topic, template, created_at)
        record = {
            "conversation_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "user_id": self.users[
                bisect.bisect(self.user_weights, random_() * self.user_weights[-1])
            ],
            "template_id": template["template_id"],
            "persona_id": persona["persona_id"],
            "emotional_arc_id": arc["emotional_arc_id"],
            "training_topic_id": topic["training_topic_id"],
            "tier": template["tier"],
            "created_at": clock.stamp(created_at),
            "messages": messages,
        }
        if random_() < self.mix.unknown_reference_rate:
            field = pick(REFERENCE_FIELDS)
            record[field] = f"{record[field].split('-', 1)[0]}-unknown-{pick(UNKNOWN_SLUGS)}"
        if random_() < self.mix.defect_rate:
            return _with_defect(self.rng, record, pick(DEFECT_KINDS))
        return record

    def _messages(
        self, persona: dict, arc: dict, topic: dict, template: dict, t: int
    ) -> list[dict[str, str]]:
        """The turns, from `t` on: an optional system prompt, then user and assistant in turn
        (the emotional arc shows at both ends of the user's side)."""
        pick, random_, stamp, mix = self.pick, self.random, self.clock.stamp, self.mix
        user_tape, assistant_tape = self.tapes[topic["training_topic_id"]]
        edge_replies = EDGE_REPLIES.get(template["template_id"], ())
        messages = []
        if random_() < mix.system_prompt_rate:
            content = pick(self.ref.system_prompts[persona["persona_id"]])
            messages.append({"role": "system", "content": content, "timestamp": stamp(t)})
            t += 5 + int(random_() * 296)
        n_turns = (
            mix.min_messages
            + int(random_() * (mix.max_messages - mix.min_messages + 1))
            - len(messages)
        )
        for i in range(n_turns):
            if i % 2:
                role, sentences = "assistant", assistant_tape.message(random_)
            else:
                role, sentences = "user", user_tape.message(random_)
                if i == 0:
                    sentences.insert(0, pick(self.openers[arc["start_emotion"]]))
                elif i >= n_turns - 2:
                    sentences.append(pick(self.closers[arc["end_emotion"]]))
                elif edge_replies and random_() < 0.5:
                    sentences = [pick(edge_replies)]
            if random_() < mix.mojibake_rate:
                sentences.append(pick(self.mojibake))
            messages.append({"role": role, "content": " ".join(sentences), "timestamp": stamp(t)})
            t += 5 + int(random_() * 296)
        return messages


def _with_defect(rng: random.Random, record: dict, kind: str) -> dict | str:
    """Break exactly one validation rule of `record` (or its JSON syntax)."""
    messages = record["messages"]
    turns = [m for m in messages if m["role"] != "system"]
    if kind == "missing_assistant":
        record["messages"] = [m for m in messages if m["role"] != "assistant"]
    elif kind == "unknown_role":
        rng.choice(turns)["role"] = "narrator"
    elif kind == "empty_content":
        rng.choice(turns)["content"] = ""
    elif kind == "malformed_id":
        record["conversation_id"] = f"conv-{rng.randint(1, 999)}"
    elif kind == "bad_tier":
        record["tier"] = "gold"
    elif kind == "bad_timestamp":
        if rng.random() < 0.5:
            record["created_at"] = "yesterday"
        else:
            rng.choice(messages)["timestamp"] = "yesterday"
    elif kind == "broken_json":
        line = orjson.dumps(record).decode()
        # Cut anywhere before the closing brace: never valid JSON, never a newline.
        return line[: rng.randint(1, len(line) - 2)]
    else:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    return record


def to_openai(record: dict | str) -> dict | str:
    """The OpenAI chat shape: `{"messages": [{"role", "content"}]}`, no ids or metadata."""
    if isinstance(record, str):
        return record
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in record["messages"]]}


def to_sharegpt(record: dict | str) -> dict | str:
    """The ShareGPT shape: `{"conversations": [{"from", "value"}]}`; unknown roles pass through."""
    if isinstance(record, str):
        return record
    return {
        "conversations": [
            {"from": _SHAREGPT_ROLES.get(m["role"], m["role"]), "value": m["content"]}
            for m in record["messages"]
        ]
    }


def write_sample_files(
    directory: Path,
    n: int,
    *,
    files: int = 1,
    seed: int = 7,
    formats: tuple[str, ...] = ("jsonl",),
    **kw,
) -> list[Path]:
    """Write `n` generated conversations over `files` files; return their paths.

    File i is written in `formats[i % len(formats)]`:
    - `jsonl`: one canonical record per line;
    - `json_array`: one JSON array of canonical records;
    - `openai_jsonl`: one `{"messages": [...]}` per line (no ids: derived downstream);
    - `sharegpt_json`: one JSON array of `{"conversations": [{"from", "value"}]}`.
    A `broken_json` defect is written as its broken line in the JSONL formats and
    as a JSON string element in the array formats, so that an array file stays
    parseable and still holds exactly one (unusable) record per conversation.
    Every file is written atomically (hidden temp file, then rename). `kw` goes to
    `generate_conversations`.
    """
    unknown = [f for f in formats if f not in FORMAT_SUFFIXES]
    if unknown or not formats:
        raise ValueError(
            f"unknown formats {unknown or formats}; expected some of {list(FORMAT_SUFFIXES)}"
        )
    if files < 1:
        raise ValueError(f"files must be >= 1, got {files}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    records = generate_conversations(n, seed=seed, **kw)
    paths = []
    for i in range(files):
        fmt = formats[i % len(formats)]
        size = n // files + (1 if i < n % files else 0)
        path = (
            directory
            / f"conversations-{seed}-{i:04d}-{fmt.replace('_', '-')}{FORMAT_SUFFIXES[fmt]}"
        )
        chunk = (next(records) for _ in range(size))
        _write_atomically(path, _encode(fmt, chunk))
        paths.append(path)
    return paths


def _encode(fmt: str, records: Iterator[dict | str]) -> Iterator[bytes]:
    shape = {"openai_jsonl": to_openai, "sharegpt_json": to_sharegpt}.get(fmt, lambda r: r)
    if fmt.endswith("jsonl"):
        for record in records:
            shaped = shape(record)
            yield (shaped.encode() if isinstance(shaped, str) else orjson.dumps(shaped)) + b"\n"
        return
    yield b"["
    for i, record in enumerate(records):
        yield (b"," if i else b"") + orjson.dumps(shape(record))
    yield b"]\n"


def _write_atomically(path: Path, chunks: Iterable[bytes]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb", buffering=1 << 20) as f:
            for chunk in chunks:
                f.write(chunk)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _by_emotion(bank: dict[str, tuple[str, ...]], emotion: str) -> tuple[str, ...]:
    return bank.get(emotion) or bank["neutral"]


# --- Sentence banks -------------------------------------------------------------
# One sentence per line. Words that keyword, label and sentiment heuristics look
# for (error, crash, install, refund, anxious, grateful, poem, traceback, ...) are
# here on purpose; so is correct non-ASCII text (accents, emoji, CJK).
