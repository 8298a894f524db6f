"""Text engine for any OpenAI-compatible chat server: vLLM, ``transformers serve``, OpenAI itself.

Requests run concurrently (bounded by a semaphore) and retry transient failures (429, 5xx,
timeouts, dropped connections, malformed replies) with exponential backoff and jitter, honouring
``Retry-After``. The client's own retries are switched off so this policy is the only one, explicit
and testable. A request that still fails comes back as ``EngineResult.error``; the batch goes on.

The API key is read from the environment only and never appears in a message, log or repr: every
error text passes through :meth:`OpenAITextEngine._redact` before it leaves this module.
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
from openai.types.chat import ChatCompletion

from bpo_data.engines.base import EngineResult, TextRequest

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
# vLLM's documented placeholder: servers started without --api-key accept any bearer token.
PLACEHOLDER_KEY = "EMPTY"
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_MAX_DETAIL_CHARS = 300


class _Failure(NamedTuple):
    retry: bool
    message: str
    wait_s: float | None = None  # what the server's Retry-After asked for


class _MalformedReply(Exception):
    """The server answered 2xx but the body is not a usable chat completion."""


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
        return (
            f"OpenAITextEngine(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"
        )

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
        asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _submit(self, requests: list[TextRequest]) -> Future[list[EngineResult]]:
        if self._closed:
            raise RuntimeError("this OpenAITextEngine is closed; create a new one to send more requests")
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
        extra = {} if request.seed is None else {"seed": request.seed}
        completion = await self._client.chat.completions.create(
            model=self.model,
            messages=request.messages,
            temperature=request.sampling.temperature,
            top_p=request.sampling.top_p,
            max_tokens=request.sampling.max_new_tokens,
            **extra,
        )
        if not isinstance(completion, ChatCompletion):
            raise _MalformedReply("the reply body is not a JSON chat completion")
        choices = getattr(completion, "choices", None)
        if not choices:
            raise _MalformedReply("the reply has no choices")
        message = getattr(choices[0], "message", None)
        text = getattr(message, "content", None)
        if not isinstance(text, str):
            raise _MalformedReply("the reply's first choice has no text content")
        usage = getattr(completion, "usage", None)
        return EngineResult(
            text=text,
            prompt_tokens=getattr(usage, "prompt_tokens", None) or 0,
            completion_tokens=getattr(usage, "completion_tokens", None) or 0,
        )

    def _classify(self, err: Exception) -> _Failure:
        if isinstance(err, openai.APIStatusError):
            return self._status_failure(err)
        if isinstance(err, openai.APITimeoutError):
            return _Failure(True, f"timed out after {self.timeout_s:g}s waiting for {self.base_url}")
        if isinstance(err, openai.APIConnectionError):
            return _Failure(True, f"cannot connect to {self.base_url}: is the server running?")
        detail = str(err)[:_MAX_DETAIL_CHARS]
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
        message = f"HTTP {status} from {self.base_url}: {err.message[:_MAX_DETAIL_CHARS]}"
        return _Failure(retry, message, _retry_after_s(err.response.headers))

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.backoff_max_s)
        ceiling = min(self.backoff_base_s * 2**attempt, self.backoff_max_s)
        return ceiling * random.uniform(0.5, 1.0)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text
