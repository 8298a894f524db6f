"""Text engine for any OpenAI-compatible chat server: vLLM, ``transformers serve``, OpenAI itself.

Requests run concurrently (bounded by a semaphore) and retry transient failures (429, 5xx,
timeouts, dropped connections, malformed replies) with exponential backoff and jitter, honouring
``Retry-After``. The client's own retries are switched off so this policy is the only one, explicit
and testable. A request that still fails comes back as ``EngineResult.error``; the batch goes on.
``submit`` takes requests one at a time, so the pipeline can keep ``concurrency`` of them at the
server continuously (``StreamingEngine``); ``generate`` answers a whole list.

The API key is read from the environment only and never appears in a message, reply, log or repr:
every text that leaves this module — error details (before they are shortened, so a cut never keeps
part of a key), the reply's text (a server may echo the key) and log lines — passes through
:meth:`OpenAITextEngine._redact`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from email.utils import parsedate_to_datetime
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import openai

from bpo_data.engines.base import EngineResult, TextRequest

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
# vLLM's documented placeholder: servers started without --api-key accept any bearer token.
PLACEHOLDER_KEY = "EMPTY"
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_MAX_DETAIL_CHARS = 300
REDACTED = "[redacted]"


class _Failure(NamedTuple):
    retry: bool
    message: str
    wait_s: float | None = None  # what the server's Retry-After asked for


class _MalformedReply(Exception):
    """The server answered 2xx but the body is not a usable chat completion."""


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def normalize_base_url(base_url: str) -> str:
    """Accept ``http://host:port`` as well as ``http://host:port/v1``.

    Only a bare host gets ``/v1`` appended; any other path is kept, because some providers mount
    their OpenAI-compatible API elsewhere (``.../v1beta/openai``).
    """
    parts = urlsplit(base_url.strip())
    if not parts.scheme or not parts.netloc:
        raise ValueError(
            f"inject.base_url {base_url!r} is not an absolute URL; write it as http://host:port or http://host:port/v1"
        )
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _is_openai(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host == "openai.com" or host.endswith(".openai.com")


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, or ``retry-after`` (seconds or a date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class OpenAITextEngine:
    """Answers text requests through ``POST {base_url}/chat/completions``.

    The engine owns a private event loop on a daemon thread and runs every request there. Why not
    ``asyncio.run`` per batch: the async HTTP client's connection pool is bound to the loop that
    opened it, so one long-lived loop lets batches reuse connections, and the sync :meth:`generate`
    then works from any thread, including one that already runs a loop (a notebook).
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 5,
        timeout_s: float = 120.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        settings: str = "inject",
    ) -> None:
        # ``settings`` names where the user sets these values ("inject" → inject.model in a recipe,
        # "judge" → the eval command's --judge-* flags), so error messages point at the right place.
        self._names = {
            field: f"{settings}.{field}"
            if settings == "inject"
            else f"--{settings}-{field.replace('_', '-')}"
            for field in ("model", "base_url", "api_key_env", "concurrency", "max_retries")
        }
        if concurrency < 1:
            raise ValueError(f"{self._names['concurrency']} must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"{self._names['max_retries']} must be 0 or more, got {max_retries}")
        self.model = model
        self.base_url = normalize_base_url(base_url) if base_url else OPENAI_BASE_URL
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        key = os.environ.get(api_key_env) or None
        if key is None and _is_openai(self.base_url):
            raise ValueError(
                f"no API key for {self.base_url}: set the environment variable {api_key_env} "
                f"(or name another one with {self._names['api_key_env']}), or point "
                f"{self._names['base_url']} at your own server"
            )
        # Kept only for redaction; the engine's repr never shows it.
        self._secret = key
        self._client = openai.AsyncOpenAI(
            api_key=key or PLACEHOLDER_KEY, base_url=self.base_url, timeout=timeout_s, max_retries=0
        )
        self._semaphore = asyncio.Semaphore(concurrency)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-engine-loop", daemon=True)
        self._thread.start()
        self._closed = False

    def __repr__(self) -> str:
        return self._redact(
            f"OpenAITextEngine(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"
        )

    @property
    def in_flight(self) -> int:
        """Requests a streaming caller keeps submitted: twice ``concurrency``.

        Requests asleep in a backoff and answers not yet taken by the caller hold a place too, so
        with this many submitted the server still has ``concurrency`` at all times (the semaphore
        caps it there).
        """
        return 2 * self.concurrency

    def submit(self, request: TextRequest) -> Future[EngineResult]:
        """Start one request now; its future resolves to its result (cancel it to drop the request)."""
        self._check_open()
        return asyncio.run_coroutine_threadsafe(self._one(request), self._loop)

    def generate(self, requests: list[TextRequest]) -> list[EngineResult]:
        """Answer a batch synchronously; results are in request order."""
        future = self._submit(requests)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def agenerate(self, requests: list[TextRequest]) -> list[EngineResult]:
        """Answer a batch from any event loop; the work itself runs on the engine's loop."""
        return await asyncio.wrap_future(self._submit(requests))

    def close(self) -> None:
        """Close the HTTP client and stop the engine's loop; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _shutdown(self) -> None:
        """Cancel requests still running (an interrupted run), then close the HTTP client."""
        running = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self._client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this OpenAITextEngine is closed; create a new one to send more requests")

    def _submit(self, requests: list[TextRequest]) -> Future[list[EngineResult]]:
        self._check_open()
        return asyncio.run_coroutine_threadsafe(self._batch(requests), self._loop)

    async def _batch(self, requests: list[TextRequest]) -> list[EngineResult]:
        return list(await asyncio.gather(*(self._one(request) for request in requests)))

    async def _one(self, request: TextRequest) -> EngineResult:
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                async with self._semaphore:
                    return await self._call(request)
            except Exception as err:  # one request's failure must never fail the batch
                failure = self._classify(err)
            message = self._redact(failure.message)
            if not failure.retry:
                return EngineResult(error=message)
            if attempt + 1 < attempts:
                delay = self._backoff_s(attempt, failure.wait_s)
                log.info("retry %d of %d in %.2fs: %s", attempt + 1, self.max_retries, delay, message)
                await asyncio.sleep(delay)
        return EngineResult(error=f"gave up after {attempts} attempts; last error: {message}")

    async def _call(self, request: TextRequest) -> EngineResult:
        """One ``POST /chat/completions``, its reply read as plain JSON.

        The body is sent as built and the reply kept as the JSON it is (the client's documented
        ``post`` for any endpoint, ``cast_to=object``): its typed ``chat.completions.create`` walks
        every parameter and builds a model of every reply, which costs more CPU per request than
        the rest of the pipeline does per unit. Errors are the client's own (``APIStatusError``…).
        """
        body = {
            "model": self.model,
            "messages": request.messages,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "max_tokens": request.sampling.max_new_tokens,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        reply = await self._client.post("/chat/completions", body=body, cast_to=object)
        if not isinstance(reply, dict):
            # the whole text: ``_classify`` shortens it after redaction
            raise _MalformedReply(f"the reply body is not a JSON chat completion: {reply}")
        choices = reply.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise _MalformedReply("the reply has no choices")
        message = choices[0].get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str):
            raise _MalformedReply("the reply's first choice has no text content")
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        return EngineResult(
            text=self._redact(text),
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
        )

    def _classify(self, err: Exception) -> _Failure:
        if isinstance(err, openai.APIStatusError):
            return self._status_failure(err)
        if isinstance(err, openai.APITimeoutError):
            return _Failure(True, f"timed out after {self.timeout_s:g}s waiting for {self.base_url}")
        if isinstance(err, openai.APIConnectionError):
            return _Failure(True, f"cannot connect to {self.base_url}: is the server running?")
        detail = self._clip(str(err))
        if isinstance(err, (_MalformedReply, openai.APIResponseValidationError, ValueError)):
            return _Failure(True, f"malformed reply from {self.base_url}: {detail}")
        return _Failure(False, f"unexpected {type(err).__name__}: {detail}")

    def _status_failure(self, err: openai.APIStatusError) -> _Failure:
        status = err.status_code
        fatal = {
            401: f"authentication failed (HTTP 401) at {self.base_url}: set {self.api_key_env} "
            f"(or the variable named by {self._names['api_key_env']}) to a valid key",
            403: f"permission denied (HTTP 403) at {self.base_url}: the key in {self.api_key_env} "
            f"may not use model {self.model!r}",
            404: f"not found (HTTP 404): check {self._names['model']} ({self.model!r}) and "
            f"{self._names['base_url']} ({self.base_url}); the server may serve another model",
        }
        if status in fatal:
            return _Failure(False, fatal[status])
        retry = status in _RETRYABLE_STATUS or status >= 500
        message = f"HTTP {status} from {self.base_url}: {self._clip(err.message)}"
        return _Failure(retry, message, _retry_after_s(err.response.headers))

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.backoff_max_s)
        ceiling = min(self.backoff_base_s * 2**attempt, self.backoff_max_s)
        return ceiling * random.uniform(0.5, 1.0)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, REDACTED) if self._secret else text

    def _clip(self, detail: str) -> str:
        """A server's words, redacted first and shortened after: a cut must never keep part of a key."""
        return self._redact(detail)[:_MAX_DETAIL_CHARS]
