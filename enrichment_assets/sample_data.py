"""Realistic sample conversations for the demo, the tests and the benchmarks.

`generate_conversations` yields canonical input records (SPEC.md, "Canonical
input record") built from the reference seed files and topic-specific sentence
banks, so that the joins, the quality gates and the heuristic enricher all have
something real to work on. It is deterministic for a seed and fast enough for
100,000 conversations in a few seconds: every message is a handful of whole
sentences picked from a bank, never per-character work.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import orjson

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
    rng = random.Random(seed)
    random_ = rng.random

    def pick(seq):  # rng.choice without its overhead; this loop runs a million times
        return seq[int(random_() * len(seq))]

    ref = _reference()
    mojibake = _mojibake()
    tapes = {
        topic_id: (
            _SentenceTape.of(rng, ref.user_banks[topic_id], message_chars),
            _SentenceTape.of(rng, ref.assistant_banks[topic_id], message_chars),
        )
        for topic_id in ref.user_banks
    }
    users = tuple(f"user-{i:04d}" for i in range(1, USER_POOL_SIZE + 1))
    # A few users are far more active than the rest, as in real chat logs.
    user_weights = tuple(itertools.accumulate(1.0 / i**0.8 for i in range(1, USER_POOL_SIZE + 1)))
    end = end or _default_end()
    end_s = int((end if end.tzinfo else end.replace(tzinfo=UTC)).timestamp())  # naive = UTC
    spread_s = int(CREATED_AT_SPREAD.total_seconds())
    clock = _clock_strings()
    days = {
        d: (_EPOCH + timedelta(days=d)).date().isoformat()
        for d in range((end_s - spread_s) // 86400, end_s // 86400 + 2)
    }

    def stamp(epoch_s: int) -> str:  # ISO-8601 UTC, by lookup: datetime formatting is slow
        return days[epoch_s // 86400] + clock[epoch_s % 86400]

    openers = {
        arc["start_emotion"]: _by_emotion(EMOTION_OPENERS, arc["start_emotion"]) for arc in ref.arcs
    }
    closers = {
        arc["end_emotion"]: _by_emotion(EMOTION_CLOSERS, arc["end_emotion"]) for arc in ref.arcs
    }

    for _ in range(n):
        persona, arc, topic, template = (
            pick(ref.personas),
            pick(ref.arcs),
            pick(ref.topics),
            pick(ref.templates),
        )
        user_tape, assistant_tape = tapes[topic["training_topic_id"]]
        edge_replies = EDGE_REPLIES.get(template["template_id"], ())
        t = created_at = end_s - 1 - int(random_() * spread_s)
        messages = []
        if random_() < system_prompt_rate:
            content = pick(ref.system_prompts[persona["persona_id"]])
            messages.append({"role": "system", "content": content, "timestamp": stamp(t)})
            t += 5 + int(random_() * 296)
        n_turns = min_messages + int(random_() * (max_messages - min_messages + 1)) - len(messages)
        for i in range(n_turns):
            if i % 2:
                role, sentences = "assistant", assistant_tape.message(random_)
            else:  # user turn: the emotional arc shows at both ends
                role, sentences = "user", user_tape.message(random_)
                if i == 0:
                    sentences.insert(0, pick(openers[arc["start_emotion"]]))
                elif i >= n_turns - 2:
                    sentences.append(pick(closers[arc["end_emotion"]]))
                elif edge_replies and random_() < 0.5:
                    sentences = [pick(edge_replies)]
            if random_() < mojibake_rate:
                sentences.append(pick(mojibake))
            messages.append({"role": role, "content": " ".join(sentences), "timestamp": stamp(t)})
            t += 5 + int(random_() * 296)

        record = {
            "conversation_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": users[bisect.bisect(user_weights, random_() * user_weights[-1])],
            "template_id": template["template_id"],
            "persona_id": persona["persona_id"],
            "emotional_arc_id": arc["emotional_arc_id"],
            "training_topic_id": topic["training_topic_id"],
            "tier": template["tier"],
            "created_at": stamp(created_at),
            "messages": messages,
        }
        if random_() < unknown_reference_rate:
            field = pick(REFERENCE_FIELDS)
            record[field] = f"{record[field].split('-', 1)[0]}-unknown-{pick(UNKNOWN_SLUGS)}"
        if random_() < defect_rate:
            yield _with_defect(rng, record, pick(DEFECT_KINDS))
        else:
            yield record


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


def _lines(block: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in block.strip().splitlines() if line.strip())


DOMAIN_USER = {
    "support": _lines("""
        I need help with my account, it has been a problem since yesterday.
        Can you check what is going on with my subscription?
        I already contacted support twice and nobody answered my ticket.
        My order number is in the email I got last week.
        Is there a way to speak to a human agent about this?
        I updated my email address but the old one still receives the invoices.
        Please tell me how long this usually takes to resolve.
        I’m using the mobile app on an iPhone, if that matters.
        The confirmation email never arrived, not even in spam.
        Could you escalate this, it is quite urgent for my business.
    """),
    "troubleshooting": _lines("""
        I keep getting an error when I open the app.
        The app crashes right after the splash screen.
        I tried to reinstall it but the install fails at 80 percent.
        Restarting the computer did not fix anything.
        The error log says the connection timed out.
        It worked fine until the last update, now it freezes every few minutes.
        I cleared the cache and it still crashes.
        Is there a way to roll back to the previous version?
        The installer says a required driver is missing.
        I’m on Windows 11 with the latest updates installed.
        My laptop is a MacBook Air running macOS Sonoma.
        The same error happens on my phone too.
    """),
    "emotional_support": _lines("""
        I have been feeling really anxious lately and I can’t sleep.
        Everything feels overwhelming at the moment.
        I feel lonely even when I am surrounded by people.
        I am so tired of pretending that I am fine.
        Some days I feel hopeful, other days I just feel sad.
        My friends say I should talk to someone, so here I am.
        I worry that I am letting everyone down.
        It helps a little to write down how I feel.
        I feel guilty for taking a day off.
        My heart races whenever I think about Monday.
        I miss how things used to be.
    """),
    "creative_writing": _lines("""
        I am working on a short story about a lighthouse keeper.
        Can you help me make the main character more believable?
        The plot feels slow in the middle chapter.
        I want the ending to surprise the reader without feeling cheap.
        Here is the opening line of my draft, what do you think?
        I love the idea of a story told backwards.
        My poem uses the sea as a metaphor for memory.
        I’m not sure whether to write it in first or third person.
        The dialogue between the two sisters sounds stiff to me.
        The story is set in a small village near Lyon, in a café called Le Péché.
    """),
    "coding": _lines("""
        I get a traceback when I run my Python script.
        The function returns None instead of the list I expect.
        My SQL query is very slow on a table with ten million rows.
        Should I add an index on the customer_id column?
        The API returns a 401 error even though my token is valid.
        I am getting a KeyError when I read the JSON response.
        How do I write a unit test for this function?
        The exception only happens in production, not on my machine.
        I used a LEFT JOIN but I get duplicate rows.
        My loop takes forever on a large file, is there a faster way?
    """),
}

DOMAIN_ASSISTANT = {
    "support": _lines("""
        I’m sorry about the trouble, let me look into your account.
        I can see the request on our side and I have escalated it.
        You should receive a confirmation email within the next hour.
        For security reasons I cannot share account details in this chat.
        I have added a note to your ticket so the next agent sees the full history.
        Thanks for your patience, I know this has taken longer than it should.
        Is there anything else I can help you with today?
        Please check your spam folder as well, just in case.
        I have updated the settings, it may take a few minutes to apply.
    """),
    "troubleshooting": _lines("""
        Let’s try to fix this step by step.
        First, please uninstall the app and install the latest version again.
        Can you share the exact error message or a screenshot of it?
        This crash is a known issue in version 4.2, a fix is on the way.
        Please try clearing the cache and restarting the device.
        Could you check whether your firewall blocks the connection?
        If the error persists, send us the log file from the settings page.
        Updating the graphics driver usually fixes this kind of crash.
        Try running the installer as an administrator.
        That error usually means the download was incomplete.
    """),
    "emotional_support": _lines("""
        Thank you for sharing that with me, it takes courage.
        It sounds like you are carrying a lot right now.
        Your feelings are valid, and it is okay to not be okay.
        Would it help to try a short breathing exercise together?
        Be gentle with yourself, you are doing the best you can.
        Talking to someone you trust can make a real difference.
        If you ever feel unsafe, please contact a local crisis line right away.
        What is one small thing that usually brings you comfort?
        It is completely understandable to feel anxious in this situation.
        I’m glad you reached out today.
    """),
    "creative_writing": _lines("""
        What a lovely premise, the lighthouse gives you a strong image to build on.
        Try giving your character a clear want and a hidden fear.
        You could tighten the middle by cutting the second flashback.
        A twist works best when the clues were there all along.
        Reading the dialogue aloud often shows where it sounds stiff.
        First person would make the reader feel closer to her doubts.
        Here is an alternative opening line you could play with.
        The metaphor is strong, consider repeating it in the final stanza.
        Show the emotion through action rather than naming it.
    """),
    "coding": _lines("""
        The function returns None because the return statement is inside the loop.
        Adding an index on that column should make the query much faster.
        A 401 error usually means the Authorization header is missing or malformed.
        Use dict.get to avoid the KeyError when the field is optional.
        Here is a corrected version of your function.
        You can use pytest and write a small test for each case.
        The duplicates come from the join, group by the key first.
        Reading the file in chunks will keep the memory usage low.
        Check the logs in production, the environment variables may differ.
        Consider using a set for the lookups, it makes the loop linear.
    """),
}

TOPIC_USER = {
    "topic-password-reset": _lines("""
        I forgot my password and the reset link does not work.
        The password reset email says the link has expired.
        I can’t log in after changing my password.
    """),
    "topic-billing-dispute": _lines("""
        I was charged twice for the same invoice this month.
        There is a charge on my card that I do not recognise.
        The invoice shows the premium plan but I am on the basic plan.
    """),
    "topic-refund-request": _lines("""
        I would like a refund for my last order.
        The product arrived broken, can I get my money back?
        How long does a refund take to reach my bank account?
    """),
    "topic-account-privacy": _lines("""
        I want to delete my account and all my personal data.
        Who can see my conversation history?
        How do I download a copy of the data you store about me?
    """),
    "topic-app-crash": _lines("""
        The app crashes on startup every single time.
        It shows a blank screen and then crashes.
        The crash started right after the update.
    """),
    "topic-software-install": _lines("""
        The install fails with error 0x80070005.
        I cannot install the software, it says access denied.
        Where do I download the installer for Linux?
    """),
    "topic-network-connectivity": _lines("""
        My Wi-Fi keeps disconnecting every ten minutes.
        The app says there is no internet connection but my browser works.
        The VPN connection drops and I lose all my work.
    """),
    "topic-anxiety-coping": _lines("""
        I get panic attacks before meetings.
        My anxiety is worse in the morning.
        I keep worrying about things that have not happened yet.
    """),
    "topic-grief-support": _lines("""
        My father passed away last month and I still can’t believe it.
        I keep picking up the phone to call my mother, then I remember.
        The grief comes in waves and I never know when.
    """),
    "topic-work-stress": _lines("""
        My manager keeps adding deadlines and I feel burnt out.
        I work late every night and I am exhausted.
        I dread opening my work email on Sunday evenings.
    """),
    "topic-short-story": _lines("""
        I want to write a short story about a robot who learns to paint.
        My story needs a stronger conflict in the second act.
        Can you suggest a title for my short story?
    """),
    "topic-poetry-feedback": _lines("""
        Here is my poem, I would love some feedback on the rhythm.
        Does my poem rhyme too much?
        I wrote a haiku about autumn rain: 秋の雨 falls softly.
    """),
    "topic-python-debugging": _lines("""
        Python says TypeError: 'NoneType' object is not subscriptable.
        My list comprehension gives an IndexError.
        The debugger skips my breakpoint in the loop.
    """),
    "topic-sql-queries": _lines("""
        How do I write a window function to rank orders per customer?
        My GROUP BY query returns the wrong totals.
        Should I use a CTE or a subquery here?
    """),
}

TOPIC_ASSISTANT = {
    "topic-password-reset": _lines("""
        I have sent you a new password reset link, it is valid for 30 minutes.
        Please use the reset link in a private browser window.
    """),
    "topic-billing-dispute": _lines("""
        I can see the duplicate charge, I have refunded the second payment.
        The invoice was generated on the wrong plan, I have corrected it.
    """),
    "topic-refund-request": _lines("""
        Your refund has been approved and will arrive in 5 to 7 business days.
        I have issued a full refund to your original payment method.
    """),
    "topic-account-privacy": _lines("""
        You can request the deletion of your data under Settings, Privacy.
        Only you and our support team, when you ask for help, can see your history.
    """),
    "topic-app-crash": _lines("""
        The crash on startup is fixed in version 4.3, please update.
        Please send the crash report so our engineers can fix it.
    """),
    "topic-software-install": _lines("""
        Error 0x80070005 means the installer lacks permission, run it as administrator.
        The Linux installer is on the downloads page, as a .deb and an .rpm package.
    """),
    "topic-network-connectivity": _lines("""
        Try forgetting the Wi-Fi network and connecting again.
        Please check whether the VPN client is up to date.
    """),
    "topic-anxiety-coping": _lines("""
        Grounding can help: name five things you can see right now.
        Slow breathing, in for four seconds and out for six, calms the body.
    """),
    "topic-grief-support": _lines("""
        I’m so sorry for your loss, grief has no timetable.
        It is normal for grief to come in waves, be patient with yourself.
    """),
    "topic-work-stress": _lines("""
        Burnout is real, setting boundaries on your working hours is a good start.
        Could you talk to your manager about which deadlines matter most?
    """),
    "topic-short-story": _lines("""
        A robot who learns to paint is a charming premise, what does it want most?
        For the title, how about The Colour of Rust?
    """),
    "topic-poetry-feedback": _lines("""
        The rhythm is lovely in the first stanza, the third line breaks it a little.
        Your poem does not need every line to rhyme, slant rhyme can feel fresher.
    """),
    "topic-python-debugging": _lines("""
        That TypeError means a variable is None where you expected a list.
        Print the index before the failing line to find the IndexError.
    """),
    "topic-sql-queries": _lines("""
        Use ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY created_at) to rank orders.
        A CTE makes the query easier to read, and DuckDB optimizes both the same way.
    """),
}

SYSTEM_PROMPTS = (
    "You are a helpful, patient assistant. The user is a {name}; they are {style}.",
    "You are a support agent for a software company. Be concise and friendly."
    " User profile: {name}.",
    "You are an empathetic listener. Never give medical diagnoses. The user is a {name}.",
    "You are an expert assistant. Adapt to the user's communication style: {style}.",
)

EMOTION_OPENERS = {
    "frustration": _lines("""
        I am really frustrated, this is the third time I am asking.
        Honestly this is so annoying, nothing works.
    """),
    "anxiety": _lines("""
        I’m a bit anxious about this, sorry if it is a silly question.
        I am worried I broke something and I am panicking a little.
    """),
    "confusion": _lines("""
        I am confused, I don’t understand how this is supposed to work.
        Sorry, I am lost, the instructions make no sense to me.
    """),
    "sadness": _lines("""
        I feel sad and tired today.
        It has been a really hard week and I feel down.
    """),
    "anger": _lines("""
        This is UNACCEPTABLE, I am really angry.
        I am furious, I want this fixed now.
    """),
    "curiosity": _lines("""
        I am curious about something.
        Quick question, I have always wondered about this.
    """),
    "excitement": _lines("""
        I am so excited, I have been waiting for this! 🎉
        Great news, I finally started, and I love it so far!
    """),
    "skepticism": _lines("""
        I am not sure this will help, but let’s see.
        I doubt a chatbot can fix this, honestly.
    """),
    "overwhelm": _lines("""
        I feel overwhelmed, there is too much to do and I don’t know where to start.
        Everything is piling up and I can’t keep up.
    """),
    "hope": _lines("""
        I hope this is a quick fix.
        Fingers crossed you can help me with this 🤞
    """),
    "neutral": _lines("""
        Hello.
        Hi, I have a question.
    """),
}

EMOTION_CLOSERS = {
    "relief": _lines("""
        That worked, what a relief, thank you so much!
        Phew, it is fixed, thanks a lot.
    """),
    "calm": _lines("""
        I feel calmer now, thank you for listening.
        Okay, I feel better, I can handle this.
    """),
    "clarity": _lines("""
        Now I understand, that makes sense.
        Got it, thank you, it is clear now.
    """),
    "hope": _lines("""
        I feel a bit more hopeful now, thank you.
        Maybe things will get better, thanks for this.
    """),
    "acceptance": _lines("""
        Fine, I understand, I accept that solution.
        Okay, it is not what I wanted but it is fair.
    """),
    "satisfaction": _lines("""
        Great answer, that is exactly what I wanted to know.
        Perfect, thanks, I am happy with that.
    """),
    "disappointment": _lines("""
        That is disappointing, I really hoped it would work.
        Oh well, that is a shame.
    """),
    "trust": _lines("""
        Okay, you were right, I trust your advice now.
        Thanks, that was genuinely helpful, I will come back.
    """),
    "confidence": _lines("""
        I feel confident I can do this now, thank you!
        I have a plan now, I feel much more confident.
    """),
    "frustration": _lines("""
        It still does not work, this is so frustrating.
        I give up, nothing works and I am fed up.
    """),
    "neutral": _lines("""
        Okay, thanks.
        Noted.
    """),
}

# Edge-case templates: user turns that are odd but valid.
EDGE_REPLIES = {
    "tmpl-edge-very-short": _lines("""
        ok
        ??
        no
        yes pls
        hm. nvm
        k thx
    """),
    "tmpl-edge-mixed-language": _lines("""
        Merci beaucoup, ça marche très bien !
        ¿Puedes explicarlo otra vez, por favor?
        Danke schön, das hat geholfen.
        谢谢你的帮助，我明白了。
        ありがとうございます、助かりました。
        Obrigado, não sabia disso.
    """),
    "tmpl-edge-emoji-heavy": _lines("""
        😭😭😭
        omg 🙏 ty
        👍👍
        still broken 😤💀
        lol ok 😂
        ❤️✨ love it
    """),
}

# Sentences with ’ “ ” → é: their mis-decoded forms are the mojibake we inject.
TYPOGRAPHIC = _lines("""
    I don’t know what else to try.
    It says “access denied” every time.
    Go to Settings → Privacy → Delete account.
    We’ll send you the résumé template by email.
    It’s the café’s account, not mine.
    The button labelled “Retry” doesn’t do anything.
    Open File → Export and choose CSV.
    That’s exactly what I needed, merci!
    Here’s the cliché I’m trying to avoid.
""")

UNKNOWN_SLUGS = ("x", "legacy", "deprecated-2023", "imported", "draft")
