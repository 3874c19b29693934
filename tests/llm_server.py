"""A loopback OpenAI-compatible server for tests and benchmarks (stdlib only).

Implements, minimally: `POST /v1/chat/completions`, `POST /v1/files`,
`GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `POST /v1/batches`,
`GET /v1/batches/{id}`. Answers are deterministic and schema-valid: derived
from a hash of the conversation text (the last user message of the request),
so online and batch mode give the same annotation for the same conversation.

Faults are injected per request and deterministic: the draw for a request is a
hash of (seed, conversation, attempt number of that conversation), so a test
sees the same faults on every run whatever the thread interleaving.

    with LoopbackLLMServer(Faults(latency_s=0.2, rate_429=0.2)) as server:
        ... server.base_url ...
        server.counters.successes  # Counter: conversation hash -> successful answers
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from enrichment_assets.enrichers.base import EMOTIONAL_TONES, LABELS

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


@dataclass
class Counters:
    """What the server saw; read them after the client is done."""

    requests: Counter[str] = field(default_factory=Counter)  # "POST /v1/chat/completions" -> n
    attempts: Counter[str] = field(default_factory=Counter)  # conversation hash -> chat requests
    successes: Counter[str] = field(default_factory=Counter)  # conversation hash -> 200 answers
    faults: Counter[str] = field(default_factory=Counter)  # fault kind -> n
    response_formats: Counter[str] = field(default_factory=Counter)
    authorization: set[str] = field(default_factory=set)

    @property
    def chat_requests(self) -> int:
        return self.requests["POST /v1/chat/completions"]


def conversation_hash(body: dict[str, Any]) -> str:
    """The key the server files a chat request under: its last user message."""
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return hashlib.sha256((users[-1] if users else "").encode()).hexdigest()


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
    def __init__(self, faults: Faults) -> None:
        self.lock = threading.Lock()
        self.faults = faults
        self.counters = Counters()
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
        if path == "/v1/chat/completions":
            self._count(path)
            self._chat(json.loads(body))
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
        elif parts[:2] == ["v1", "batches"] and len(parts) == 3:
            self._count("/v1/batches/{id}")
            self._poll_batch(parts[2])
        else:
            self._send(404, _error(f"no route GET {self.path}", "invalid_request_error"))

    # -- chat -------------------------------------------------------------------
    def _chat(self, body: dict[str, Any]) -> None:
        state, faults = self.server.state, self.server.state.faults
        key = conversation_hash(body)
        response_format = (body.get("response_format") or {}).get("type", "text")
        with state.lock:
            state.counters.attempts[key] += 1
            attempt = state.counters.attempts[key]
            state.counters.response_formats[response_format] += 1
        if faults.latency_s:
            time.sleep(faults.latency_s)

        status, payload, headers, fault = self._chat_outcome(body, key, attempt, response_format)
        with state.lock:
            if fault:
                state.counters.faults[fault] += 1
            if status == 200 and fault is None:
                state.counters.successes[key] += 1
        if fault == "hang":
            time.sleep(faults.hang_s)
            self.close_connection = True
            return
        self._send(status, payload, headers)

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
        return 200, _completion(body, json.dumps(_annotation(key))), {}, None

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
            "polls": 0,
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
            if batch["status"] != "completed" and batch["polls"] > state.faults.batch_polls:
                self._run_batch(batch)
            elif batch["status"] != "completed":
                batch["status"] = "in_progress"
        self._send(200, _public(batch))

    def _run_batch(self, batch: dict[str, Any]) -> None:  # called holding the lock
        state, faults = self.server.state, self.server.state.faults
        outputs, errors = [], []
        for line in state.files[batch["input_file_id"]].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            custom_id, body = item["custom_id"], item["body"]
            key = conversation_hash(body)
            u = _draw(faults.seed, key, 0)
            if u < faults.batch_rate_missing:
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
        batch["status"] = "completed"
        batch["completed_at"] = int(time.time())
        batch["request_counts"] = {
            "total": len(outputs) + len(errors),
            "completed": len(outputs),
            "failed": len(errors),
        }


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "polls"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    state: _State


class LoopbackLLMServer:
    """The server on 127.0.0.1 with an ephemeral port, served from a daemon thread."""

    def __init__(self, faults: Faults | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(faults or Faults())
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

    def configure(self, faults: Faults) -> None:
        """Replace the fault plan and clear the counters."""
        with self._server.state.lock:
            self._server.state.faults = faults
            self._server.state.counters = Counters()

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
