"""A loopback OpenAI-compatible server for tests and benchmarks (stdlib only).

Implements, minimally: `POST /v1/chat/completions`, `POST /v1/files`,
`GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `POST /v1/batches` (with
`metadata`), `GET /v1/batches` (newest first) and `GET /v1/batches/{id}`.
Answers are deterministic and schema-valid: derived from a hash of the
conversation text (the last user message of the request), so online and batch
mode give the same annotation for the same conversation.

Faults are injected per request and deterministic: the draw for a request is a
hash of (seed, conversation, attempt number of that conversation), so a test
sees the same faults on every run whatever the thread interleaving. Faults can
also be aimed at chosen conversations: `Faults(targeted={"MARKER": "drip"})`
gives every request whose conversation text holds MARKER that fault (one of
TARGETED_FAULTS), so a test knows exactly which conversations must fail.

    with LoopbackLLMServer(Faults(latency_s=0.2, rate_429=0.2)) as server:
        ... server.base_url ...
        server.counters.successes  # Counter: conversation hash -> successful answers
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from enrichment_assets.enrichers.base import EMOTIONAL_TONES, LABELS

# Served like /v1/chat/completions, without targeted faults: a same-origin redirect target.
MOVED_CHAT_PATH = "/v1/moved/chat/completions"

_TOPIC_WORDS = (
    "billing",
    "refunds",
    "passwords",
    "travel",
    "cooking",
    "anxiety",
    "python",
    "poetry",
    "gardening",
    "taxes",
    "fitness",
    "music",
)


# What a targeted conversation gets (every attempt unless the name says otherwise):
TARGETED_FAULTS: dict[str, str] = {
    # the envelope
    "choices_null": '200 {"choices": [null]}',
    "choices_string": '200 {"choices": "oops"}',
    "choices_empty": '200 {"choices": []}',
    "message_string": '200 {"choices": [{"message": "oops"}]}',
    "usage_list": '200, a good annotation with "usage": [1, 2]',
    "usage_negative": '200, a good annotation with "prompt_tokens": -5',
    "usage_huge": '200, a good annotation with "prompt_tokens": 10**30',
    "body_list": "200 [1, 2]",
    "body_not_json": "200 whose body is cut JSON",
    "content_number": "200 whose message content is the number 42",
    # the annotation
    "content_not_json": "200 whose content is prose, not JSON",
    "confidence_true": "confidence: true",
    "confidence_string": 'confidence: "0.9"',
    "sentiment_out_of_range": "sentiment: -3",
    "quality_out_of_range": "quality_score: 250",
    "label_unknown": 'label: "spam_detection"',
    "tone_unknown": 'emotional_tone: "furious"',
    "topic_not_string": "topics: [1, 2]",
    "extra_field": 'an extra key "debug"',
    "summary_long": "a 100,000-character summary (a body under the 1 MB cap)",
    "topic_long": "one topic of 5,000 characters",
    # the transport
    "body_huge": "200 whose body is `huge_body_bytes` (default 50 MB) of valid JSON",
    "body_huge_unsized": "the same, chunked: no Content-Length to refuse it by",
    "drip": "headers, then one body byte every `drip_interval_s`",
    "reset": "headers and half the body, then a TCP reset",
    "reset_once": "a reset on the first attempt, a good answer after",
    "redirect": "307 to `redirect_to` (another origin: the body would follow)",
    "status_500": "500 on every attempt",
    "status_500_once": "500 on the first attempt, a good answer after",
    "status_401": "401 whose message quotes the API key, as OpenAI's does",
}


@dataclass
class Faults:
    """What the server does wrong, and how often (fractions of chat requests)."""

    seed: int = 0
    latency_s: float = 0.0
    rate_429: float = 0.0
    retry_after: str | None = "0"  # Retry-After header sent with 429s (None: no header)
    ratelimit_reset_requests: str | None = None  # x-ratelimit-reset-requests with 429s
    first_attempts_429: int = 0  # the first N attempts of every conversation answer 429
    rate_500: float = 0.0
    first_attempt_rate_500: float = 0.0  # 500 on a conversation's first attempt only
    rate_hang: float = 0.0  # sleeps `hang_s`, then drops the connection
    hang_s: float = 5.0
    rate_malformed: float = 0.0  # a 200 whose body is not JSON
    rate_schema_violation: float = 0.0  # a 200 whose annotation has confidence 1.7
    permanent_status: int | None = None  # every chat request answers this status
    echo_key_in_errors: bool = False  # the permanent error quotes the API key, as OpenAI's 401 does
    json_schema_unsupported: bool = False  # 400 on response_format json_schema
    batch_polls: int = 2  # GET /v1/batches/{id} answers in_progress this many times
    batch_rate_error: float = 0.0  # batch lines that land in the error file
    batch_rate_missing: float = 0.0  # batch lines absent from both files
    batch_malformed_marker: str | None = None  # lines of these conversations: odd shapes
    # How a batch ends once its polls are over: "completed"; "expired" (the 24 h window
    # passed: the lines done by then, those with an even hash, in the output file, the
    # rest nowhere); "failed" (rejected whole, with `errors`, no output).
    batch_end: str = "completed"
    targeted: dict[str, str] = field(default_factory=dict)  # marker in the text -> fault
    drip_interval_s: float = 5.0
    huge_body_bytes: int = 50 * 1024 * 1024
    redirect_to: str | None = None  # where "redirect" points (e.g. another server's URL)
    stall_after_successes: int | None = None  # then every chat request hangs for `hang_s`
    # Good answers (not faults): what they report and say.
    usage_scale: float = 1.0  # usage tokens reported x this (a provider billing over the estimate)
    cached_prefix_tokens: int = 0  # usage.prompt_tokens_details.cached_tokens (prompt caching)
    confidence_by_marker: dict[str, float] = field(default_factory=dict)  # marker -> confidence
    confidence_by_model: dict[str, float] = field(default_factory=dict)  # model -> confidence


@dataclass
class Counters:
    """What the server saw; read them after the client is done."""

    requests: Counter[str] = field(default_factory=Counter)  # "POST /v1/chat/completions" -> n
    attempts: Counter[str] = field(default_factory=Counter)  # conversation hash -> chat requests
    successes: Counter[str] = field(default_factory=Counter)  # conversation hash -> 200 answers
    # conversation hash -> good answers sent whole: what no retry or rerun may buy again
    billed: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)  # fault kind -> n
    response_formats: Counter[str] = field(default_factory=Counter)
    authorization: set[str] = field(default_factory=set)
    models: Counter[str] = field(default_factory=Counter)  # model -> chat requests
    texts: Counter[str] = field(default_factory=Counter)  # conversation text -> chat requests
    # "system,user" -> chat requests: the roles of the messages sent, in order
    message_roles: Counter[str] = field(default_factory=Counter)
    system_prompts: set[str] = field(default_factory=set)

    @property
    def chat_requests(self) -> int:
        return self.requests["POST /v1/chat/completions"]

    def paid_twice(self) -> list[str]:
        """Conversations that were sent more than one good answer (paid twice)."""
        return [key for key, n in self.billed.items() if n > 1]


def conversation_text(body: dict[str, Any]) -> str:
    """What a chat request asks about: its last user message."""
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def conversation_hash(body: dict[str, Any]) -> str:
    """The key the server files a chat request under: its last user message."""
    return hashlib.sha256(conversation_text(body).encode()).hexdigest()


def expected_annotation(conversation_text: str) -> dict[str, Any]:
    """The answer the server gives for a conversation (what tests compare against)."""
    return _annotation(hashlib.sha256(conversation_text.encode()).hexdigest())


def _annotation(key: str) -> dict[str, Any]:
    h = bytes.fromhex(key)
    topics = sorted({_TOPIC_WORDS[b % len(_TOPIC_WORDS)] for b in h[5:8]})
    return {
        "summary": f"The user asks about {topics[0]}; the assistant helps (case {key[:8]}).",
        "topics": topics,
        "emotional_tone": EMOTIONAL_TONES[h[0] % len(EMOTIONAL_TONES)],
        "sentiment": round(h[1] / 255 * 2 - 1, 3),
        "label": LABELS[h[2] % len(LABELS)],
        "confidence": round(h[3] / 255, 3),
        "quality_score": round(h[4] / 255 * 100, 1),
    }


def _draw(seed: int, key: str, attempt: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    prompt_tokens, completion_tokens = prompt_chars // 4 + 1, len(content) // 4 + 1
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "loopback"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error(message: str, kind: str = "server_error", param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class _State:
    def __init__(self, faults: Faults, record_bodies: bool = False) -> None:
        self.lock = threading.Lock()
        self.faults = faults
        self.counters = Counters()
        # Every POST body as received (chat requests, batch input uploads, batch creations),
        # in arrival order; None when not asked for (a long benchmark would hold them all).
        self.bodies: list[tuple[str, bytes]] | None = [] if record_bodies else None
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections
    # Headers and body leave in one segment (flushed after each request), with Nagle
    # off: otherwise every answer waits out the client's delayed ACK (~40 ms).
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing ---------------------------------------------------------------
    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _count(self, route: str) -> None:
        state = self.server.state
        with state.lock:
            state.counters.requests[f"{self.command} {route}"] += 1
            state.counters.authorization.add(self.headers.get("Authorization", ""))

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        body = self._body()
        state = self.server.state
        if state.bodies is not None:
            with state.lock:
                state.bodies.append((path, body))
        if path in ("/v1/chat/completions", MOVED_CHAT_PATH):
            self._count(path)
            # The moved route (a same-origin redirect's target) answers without targeted faults.
            self._chat(json.loads(body), targeted_faults=path != MOVED_CHAT_PATH)
        elif path == "/v1/files":
            self._count(path)
            self._upload(body)
        elif path == "/v1/batches":
            self._count(path)
            self._create_batch(json.loads(body))
        else:
            self._send(404, _error(f"no route POST {path}", "invalid_request_error"))

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        state = self.server.state
        if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
            self._count("/v1/files/{id}/content")
            data = state.files.get(parts[2])
            if data is None:
                self._send(404, _error("no such file", "invalid_request_error"))
            else:
                self._send(200, data)
        elif parts[:2] == ["v1", "files"] and len(parts) == 3:
            self._count("/v1/files/{id}")
            self._send(200, self._file_object(parts[2]))
        elif parts == ["v1", "batches"]:
            self._count("/v1/batches")
            with state.lock:
                listed = sorted(
                    state.batches.values(), key=lambda b: (b["created_at"], b["seq"]), reverse=True
                )
                data = [_public(b) for b in listed]
            self._send(200, {"object": "list", "data": data, "has_more": False})
        elif parts[:2] == ["v1", "batches"] and len(parts) == 3:
            self._count("/v1/batches/{id}")
            self._poll_batch(parts[2])
        else:
            self._send(404, _error(f"no route GET {self.path}", "invalid_request_error"))

    # -- chat -------------------------------------------------------------------
    def _chat(self, body: dict[str, Any], *, targeted_faults: bool = True) -> None:
        state, faults = self.server.state, self.server.state.faults
        key = conversation_hash(body)
        response_format = (body.get("response_format") or {}).get("type", "text")
        with state.lock:
            state.counters.attempts[key] += 1
            attempt = state.counters.attempts[key]
            state.counters.response_formats[response_format] += 1
            state.counters.models[str(body.get("model"))] += 1
            state.counters.texts[conversation_text(body)] += 1
            messages = body.get("messages", [])
            state.counters.message_roles[",".join(str(m.get("role")) for m in messages)] += 1
            state.counters.system_prompts.update(
                str(m.get("content")) for m in messages if m.get("role") == "system"
            )
            stalled = (
                faults.stall_after_successes is not None
                and sum(state.counters.successes.values()) >= faults.stall_after_successes
            )
        if faults.latency_s:
            time.sleep(faults.latency_s)

        text = conversation_text(body)
        targeted = next(
            (kind for marker, kind in faults.targeted.items() if marker in text),
            None,
        )
        if not targeted_faults:
            targeted = None
        if stalled:
            status, payload, headers, fault = 0, None, {}, "hang"
        elif targeted is not None:
            status, payload, headers, fault = self._targeted(body, key, attempt, targeted)
        else:
            status, payload, headers, fault = self._chat_outcome(
                body, key, attempt, response_format
            )
        with state.lock:
            if fault:
                state.counters.faults[fault] += 1
            if status == 200 and fault is None:
                state.counters.successes[key] += 1
        if fault == "hang":
            time.sleep(faults.hang_s)
            self.close_connection = True
            return
        if fault in ("drip", "reset", "body_huge_unsized"):
            self._misbehave(fault, body, key)
            return
        self._send(status, payload, headers)
        if status == 200 and fault is None:
            with state.lock:
                state.counters.billed[key] += 1

    def _targeted(
        self, body: dict[str, Any], key: str, attempt: int, kind: str
    ) -> tuple[int, Any, dict[str, str], str | None]:
        """The answer of a targeted fault (see TARGETED_FAULTS); None as fault: a good one."""
        faults = self.server.state.faults
        good = _completion(body, json.dumps(_annotation(key)))
        if kind in ("status_500_once", "reset_once") and attempt > 1:
            return 200, good, {}, None
        if kind in ("status_500", "status_500_once"):
            return 500, _error("internal error"), {}, kind
        if kind == "reset_once":
            return 0, None, {}, "reset"
        if kind == "status_401":
            key_sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
            message = f"Incorrect API key provided: {key_sent}. Find your key at ..."
            return 401, _error(message, "invalid_request_error"), {}, kind
        if kind == "redirect":
            assert faults.redirect_to, "the redirect fault needs Faults.redirect_to"
            return 307, _error("moved"), {"Location": faults.redirect_to}, kind
        if kind in ("drip", "reset", "body_huge_unsized"):
            return 0, None, {}, kind
        envelopes: dict[str, Any] = {
            "choices_null": {"choices": [None]},
            "choices_string": {"choices": "oops"},
            "choices_empty": {"choices": []},
            "message_string": {"choices": [{"message": "oops"}]},
            "usage_list": dict(good, usage=[1, 2]),
            "usage_negative": dict(good, usage={"prompt_tokens": -5, "completion_tokens": 1}),
            "usage_huge": dict(good, usage={"prompt_tokens": 10**30, "completion_tokens": 1}),
            "body_list": [1, 2],
            "body_not_json": b'{"id": "chatcmpl-broken", "choices": [{"mess',
        }
        if kind in envelopes:
            return 200, envelopes[kind], {}, kind
        if kind == "body_huge":
            return 200, _completion(body, "x" * faults.huge_body_bytes), {}, kind
        if kind == "content_number":
            completion = _completion(body, "")
            completion["choices"][0]["message"]["content"] = 42
            return 200, completion, {}, kind
        if kind == "content_not_json":
            return 200, _completion(body, "Sure! Here is the annotation you asked for."), {}, kind
        bad = _annotation(key)
        changes: dict[str, dict[str, Any]] = {
            "confidence_true": {"confidence": True},
            "confidence_string": {"confidence": "0.9"},
            "sentiment_out_of_range": {"sentiment": -3},
            "quality_out_of_range": {"quality_score": 250},
            "label_unknown": {"label": "spam_detection"},
            "tone_unknown": {"emotional_tone": "furious"},
            "topic_not_string": {"topics": [1, 2]},
            "extra_field": {"debug": "x"},
            "summary_long": {"summary": "word " * 20_000},
            "topic_long": {"topics": ["t" * 5_000]},
        }
        if kind not in changes:
            raise ValueError(f"unknown targeted fault {kind!r}; see TARGETED_FAULTS")
        return 200, _completion(body, json.dumps({**bad, **changes[kind]})), {}, kind

    def _misbehave(self, kind: str, body: dict[str, Any], key: str) -> None:
        """Faults of the transport itself: a dripping, reset or unsized huge body."""
        faults = self.server.state.faults
        data = json.dumps(_completion(body, json.dumps(_annotation(key)))).encode()
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if kind == "body_huge_unsized":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            piece = b" " * 65536
            try:
                for _ in range(faults.huge_body_bytes // len(piece)):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
                self.wfile.flush()
            except OSError:  # the client stopped reading: what a cap does
                pass
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            if kind == "reset":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                # SO_LINGER 0: close() sends a RST instead of a FIN.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                return
            self.wfile.flush()
            for byte in data:  # "drip": a byte at a time, each read within any read timeout
                time.sleep(faults.drip_interval_s)
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            pass

    def _chat_outcome(
        self, body: dict[str, Any], key: str, attempt: int, response_format: str
    ) -> tuple[int, Any, dict[str, str], str | None]:
        faults = self.server.state.faults
        if faults.permanent_status:
            message = "permanently broken"
            if faults.echo_key_in_errors:
                key_sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
                message = f"Incorrect API key provided: {key_sent}. Find your key at ..."
            return faults.permanent_status, _error(message), {}, "permanent"
        if faults.json_schema_unsupported and response_format == "json_schema":
            message = "response_format json_schema is not supported by this server"
            return 400, _error(message, "invalid_request_error", "response_format"), {}, "schema"
        rate_limited = attempt <= faults.first_attempts_429
        u = _draw(faults.seed, key, attempt)
        cut = faults.rate_429
        if rate_limited or u < cut:
            headers = {}
            if faults.retry_after is not None:
                headers["Retry-After"] = faults.retry_after
            if faults.ratelimit_reset_requests is not None:
                headers["x-ratelimit-remaining-requests"] = "0"
                headers["x-ratelimit-reset-requests"] = faults.ratelimit_reset_requests
            return 429, _error("rate limited", "requests"), headers, "429"
        first_500 = faults.first_attempt_rate_500
        if attempt == 1 and cut <= u < cut + first_500:
            return 500, _error("internal error"), {}, "500"
        cut += first_500
        for kind, rate in (
            ("500", faults.rate_500),
            ("hang", faults.rate_hang),
            ("malformed", faults.rate_malformed),
            ("schema_violation", faults.rate_schema_violation),
        ):
            if cut <= u < cut + rate:
                if kind == "500":
                    return 500, _error("internal error"), {}, kind
                if kind == "hang":
                    return 0, None, {}, kind
                if kind == "malformed":
                    return 200, b'{"id": "chatcmpl-broken", "choices": [{"mess', {}, kind
                bad = dict(_annotation(key), confidence=1.7)
                return 200, _completion(body, json.dumps(bad)), {}, kind
            cut += rate
        return 200, self._good_answer(body, key), {}, None

    def _good_answer(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        """A schema-valid answer, shaped by the `Faults` fields on good answers."""
        faults = self.server.state.faults
        annotation = _annotation(key)
        text = conversation_text(body)
        for marker, confidence in faults.confidence_by_marker.items():
            if marker in text:
                annotation["confidence"] = confidence
        if body.get("model") in faults.confidence_by_model:
            annotation["confidence"] = faults.confidence_by_model[body["model"]]
        completion = _completion(body, json.dumps(annotation))
        usage = completion["usage"]
        if faults.usage_scale != 1.0:
            for name in ("prompt_tokens", "completion_tokens"):
                usage[name] = int(usage[name] * faults.usage_scale)
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if faults.cached_prefix_tokens:
            cached = min(faults.cached_prefix_tokens, usage["prompt_tokens"])
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return completion

    # -- files and batches --------------------------------------------------------
    def _upload(self, body: bytes) -> None:
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields = {
            part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()
        }
        file_id = f"file-{uuid.uuid4().hex[:16]}"
        self.server.state.files[file_id] = fields["file"]
        self._send(200, self._file_object(file_id, purpose=fields.get("purpose", b"").decode()))

    def _file_object(self, file_id: str, purpose: str = "batch") -> dict[str, Any]:
        data = self.server.state.files.get(file_id, b"")
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": f"{file_id}.jsonl",
            "purpose": purpose or "batch",
            "status": "processed",
        }

    def _create_batch(self, body: dict[str, Any]) -> None:
        batch_id = f"batch_{uuid.uuid4().hex[:16]}"
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "created_at": int(time.time()),
            "status": "validating",
            "metadata": body.get("metadata"),
            "polls": 0,
            "seq": len(self.server.state.batches),
        }
        self.server.state.batches[batch_id] = batch
        self._send(200, _public(batch))

    def _poll_batch(self, batch_id: str) -> None:
        state = self.server.state
        with state.lock:
            batch = state.batches.get(batch_id)
            if batch is None:
                self._send(404, _error("no such batch", "invalid_request_error"))
                return
            batch["polls"] += 1
            ended = batch["status"] in ("completed", "expired", "failed")
            if not ended and batch["polls"] > state.faults.batch_polls:
                self._run_batch(batch)
            elif not ended:
                batch["status"] = "in_progress"
        self._send(200, _public(batch))

    def _run_batch(self, batch: dict[str, Any]) -> None:  # called holding the lock
        state, faults = self.server.state, self.server.state.faults
        outputs, errors = [], []
        if faults.batch_end == "failed":
            batch["status"], batch["failed_at"] = "failed", int(time.time())
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "the input file was rejected"}],
            }
            return
        for line in state.files[batch["input_file_id"]].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            custom_id, body = item["custom_id"], item["body"]
            key = conversation_hash(body)
            u = _draw(faults.seed, key, 0)
            if u < faults.batch_rate_missing:
                continue
            if faults.batch_end == "expired" and int(key, 16) % 2:
                continue  # not done when the window closed
            malformed = _BATCH_MALFORMED_LINES[int(u * 1e6) % len(_BATCH_MALFORMED_LINES)]
            if faults.batch_malformed_marker and faults.batch_malformed_marker in str(body):
                outputs.append({"custom_id": custom_id, **malformed})
                continue
            if u < faults.batch_rate_missing + faults.batch_rate_error:
                errors.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:12]}",
                        "custom_id": custom_id,
                        "response": {"status_code": 500, "body": _error("batch item failed")},
                        "error": None,
                    }
                )
                continue
            state.counters.successes[key] += 1
            content = json.dumps(_annotation(key))
            outputs.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:12]}",
                    "custom_id": custom_id,
                    "response": {"status_code": 200, "body": _completion(body, content)},
                    "error": None,
                }
            )
        for name, rows in (("output_file_id", outputs), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{uuid.uuid4().hex[:16]}"
                state.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[name] = file_id
        expired = faults.batch_end == "expired"
        batch["status"] = "expired" if expired else "completed"
        batch["expired_at" if expired else "completed_at"] = int(time.time())
        batch["request_counts"] = {
            "total": len(outputs) + len(errors),
            "completed": len(outputs),
            "failed": len(errors),
        }


# Output lines of odd shapes (after their custom_id), one per marked conversation in turn.
_BATCH_MALFORMED_LINES: tuple[dict[str, Any], ...] = (
    {"response": "oops"},
    {"error": "a string, not an object"},
    {"response": {"status_code": 200, "body": {"choices": [None]}}},
    {"response": {"status_code": 200, "body": {"choices": "oops", "usage": [1, 2]}}},
    {"response": {"status_code": 503, "body": {"error": "not an object"}}},
    {"response": {"status_code": 200, "body": [1, 2]}},
)


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k not in ("polls", "seq")}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up on a fault (a deadline, a body cap) is what the fault is for.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackLLMServer:
    """The server on 127.0.0.1 with an ephemeral port, served from a daemon thread."""

    def __init__(self, faults: Faults | None = None, *, record_bodies: bool = False) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(faults or Faults(), record_bodies)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))
        self._thread.daemon = True

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def counters(self) -> Counters:
        return self._server.state.counters

    @property
    def faults(self) -> Faults:
        return self._server.state.faults

    @property
    def recorded_bodies(self) -> list[tuple[str, bytes]]:
        """(path, raw body) of every POST received, in order (`record_bodies=True` only)."""
        bodies = self._server.state.bodies
        if bodies is None:
            raise RuntimeError("start the server with record_bodies=True to record bodies")
        with self._server.state.lock:
            return list(bodies)

    def configure(self, faults: Faults, *, keep_counters: bool = False) -> None:
        """Replace the fault plan and clear the counters (unless `keep_counters`)."""
        with self._server.state.lock:
            self._server.state.faults = faults
            if not keep_counters:
                self._server.state.counters = Counters()
                if self._server.state.bodies is not None:
                    self._server.state.bodies.clear()

    def start(self) -> LoopbackLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
