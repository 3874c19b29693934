"""The HTTP client the openai enricher talks through: httpx (the SDK's own), configured.

What the SDK's default client does not do, and an endpoint we do not control may
need:
- **no other origin**: a redirect is followed only within the endpoint's own
  scheme, host and port. A 307 to another host would carry the conversation text
  there (httpx strips the Authorization header, not the body), so the hop is
  refused before it is sent (`RedirectRefused`), by a request hook that sees every
  hop;
- **a body cap**: an answer is read up to `max_body_bytes` and no further
  (`ResponseTooLarge`), whether its Content-Length says so up front or a chunked
  body runs past it; compressed answers are not asked for (`Accept-Encoding:
  identity`) and refused if sent anyway, since a small compressed body can
  decompress to gigabytes. Batch output files (`/files/{id}/content`) are exempt:
  their size follows the batch, and they are downloaded, not held per request.

Both errors are `openai.OpenAIError`s, which the SDK passes through as they are,
and neither is retried: the same request would meet the same answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import openai

_MAX_REDIRECTS = 3
_EXEMPT_FROM_BODY_CAP = "/content"  # GET /v1/files/{id}/content: batch output files


class EndpointPolicyError(openai.OpenAIError):
    """An answer the client refuses by policy; not worth a retry."""


class RedirectRefused(EndpointPolicyError):
    """A redirect to another origin than the endpoint's."""


class ResponseTooLarge(EndpointPolicyError):
    """An answer body over the cap."""


def origin(url: httpx2.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port made explicit."""
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default_port


def _show(url: httpx2.URL) -> str:
    scheme, host, port = origin(url)
    return f"{scheme}://{host}:{port}"


class _SameOriginOnly:
    """Request hook: every hop must go to the endpoint's origin (set once it is known)."""

    def __init__(self) -> None:
        self.allowed: tuple[str, str, int | None] | None = None

    async def __call__(self, request: httpx2.Request) -> None:
        if self.allowed is not None and origin(request.url) != self.allowed:
            raise RedirectRefused(
                f"redirect to another origin refused: {_show(request.url)} is not the endpoint's"
            )


class _CappedStream(httpx2.AsyncByteStream):
    """A response body that stops with ResponseTooLarge once past `cap` bytes."""

    def __init__(self, stream: httpx2.AsyncByteStream, cap: int) -> None:
        self._stream, self._cap = stream, cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._stream:
            received += len(chunk)
            if received > self._cap:
                raise ResponseTooLarge(f"response body over the {self._cap:,}-byte cap")
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class _BodyCap:
    """Response hook: refuse a declared oversize or compressed body, cap the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    async def __call__(self, response: httpx2.Response) -> None:
        if response.request.url.path.endswith(_EXEMPT_FROM_BODY_CAP):
            return
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.cap:
            raise ResponseTooLarge(
                f"response body over the {self.cap:,}-byte cap (Content-Length: {int(declared):,})"
            )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ResponseTooLarge(
                f"compressed response ({encoding}) refused: its size after decompression "
                "cannot be capped before it is in memory"
            )
        response.stream = _CappedStream(response.stream, self.cap)  # type: ignore[arg-type]


def endpoint_client(
    *, base_url: str | None, api_key: str, timeout_s: float, max_body_bytes: int
) -> openai.AsyncOpenAI:
    """An AsyncOpenAI client for `base_url` with the policies of the module docstring.

    Retries are off (the enricher's own: backoff, Retry-After, budget, breaker).
    """
    same_origin = _SameOriginOnly()
    http_client = openai.DefaultAsyncHttpxClient(
        timeout=timeout_s,
        follow_redirects=True,
        max_redirects=_MAX_REDIRECTS,
        headers={"Accept-Encoding": "identity"},
        event_hooks={"request": [same_origin], "response": [_BodyCap(max_body_bytes)]},
    )
    client = openai.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout_s,
        max_retries=0,
        http_client=http_client,
    )
    # The SDK resolves the endpoint (argument, OPENAI_BASE_URL or its default): ask it.
    same_origin.allowed = origin(httpx2.URL(str(client.base_url)))
    return client
