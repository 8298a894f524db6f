"""The judge: any OpenAI-compatible chat model, with every answer cached on disk.

Judges get retired and sampling makes them drift, so a benchmark number is only worth keeping
if it can be replayed. Every call is keyed by the sha256 of its canonical JSON (model, messages,
sampling parameters and a ``tag`` that tells deliberate repeats apart, such as MM-Vet's runs);
a rerun with the same out dir makes no call and gives bit-identical numbers. Transport, retries
(429, 5xx, timeouts) and bounded concurrency are :class:`OpenAITextEngine`'s; the key never
leaves the environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

import openai

from bpo_data.engines.base import TextRequest
from bpo_data.engines.openai_compat import (
    OPENAI_BASE_URL,
    PLACEHOLDER_KEY,
    OpenAITextEngine,
    normalize_base_url,
)
from bpo_data.jsonl import repair_tail
from bpo_data.recipe import SamplingParams
from trainer_min.eval.errors import EvalError
from trainer_min.eval.progress import Task

log = logging.getLogger(__name__)

CACHE_FILE = "judge_cache.jsonl"
CHECK_TIMEOUT_S = 10.0
# Requests per engine batch: the cache is written after each, so an interrupted run loses little.
_CHUNK = 64


T = TypeVar("T")
V = TypeVar("V")


class JudgeError(EvalError):
    """Some judge calls failed for good; the ones that succeeded are cached."""


@dataclass(frozen=True)
class JudgeRequest:
    """One chat completion. ``tag`` only enters the cache key (run index, attempt number)."""

    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int
    top_p: float = 1.0
    tag: dict[str, Any] = field(default_factory=dict)

    def key(self, model: str) -> str:
        payload = {
            "model": model,
            "messages": self.messages,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "tag": self.tag,
        }
        canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class JudgeStats:
    calls: int = 0
    cached: int = 0
    first_at: str | None = None
    last_at: str | None = None

    def saw(self, at: str) -> None:
        self.first_at = min(self.first_at or at, at)
        self.last_at = max(self.last_at or at, at)


class Judge:
    """Answers :class:`JudgeRequest` batches from the cache, or from the server for what is missing.

    The server connection is opened on the first cache miss, so a full replay needs neither the
    server nor a key.
    """

    def __init__(
        self,
        model: str,
        cache_path: str | os.PathLike,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 5,
        timeout_s: float = 120.0,
    ) -> None:
        self.model = model
        try:
            self.base_url = normalize_base_url(base_url) if base_url else OPENAI_BASE_URL
        except ValueError:
            raise EvalError(
                f"--judge-base-url {base_url!r} is not an absolute URL; write it as http://host:port/v1"
            ) from None
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.cache_path = Path(cache_path)
        self.stats = JudgeStats()
        self.progress: Task | None = None  # where complete() reports calls done, cached and failed
        self._cache = _load_cache(self.cache_path)
        self._engine: OpenAITextEngine | None = None

    def check(self) -> None:
        """Before any answer is generated: the key is there and the server answers one cheap request.

        ``GET {base_url}/models``, no retries: a refused connection, an unknown host or a refused key is
        an EvalError now rather than after hours of answering. A server without that route (404, 405)
        is reachable, which is all this asks. When the cache already holds replies (a replay, which
        needs neither key nor server) a failed check is a warning: only calls missing from it will fail.
        """
        try:
            self._check_server()
        except EvalError as err:
            if not self._cache:
                raise
            log.warning(
                "%s; going on with the %d judge replies cached in %s (a call not cached will fail)",
                err,
                len(self._cache),
                self.cache_path,
            )

    def _check_server(self) -> None:
        key = os.environ.get(self.api_key_env)
        if self.base_url == OPENAI_BASE_URL and not key:
            raise EvalError(self._no_key_message())
        client = openai.OpenAI(
            base_url=self.base_url, api_key=key or PLACEHOLDER_KEY, max_retries=0, timeout=CHECK_TIMEOUT_S
        )
        try:
            served = [model.id for model in client.models.list()]
        except openai.AuthenticationError as err:
            raise EvalError(
                f"the judge at {self.base_url} refused the key in {self.api_key_env} "
                f"(HTTP {err.status_code}); set a valid key there (or name another with --judge-api-key-env)"
            ) from None
        except openai.PermissionDeniedError as err:
            raise EvalError(
                f"the judge at {self.base_url} denied access with the key in {self.api_key_env} "
                f"(HTTP {err.status_code}); check the key's permissions"
            ) from None
        except openai.APIConnectionError as err:
            cause = err.__cause__ or err
            raise EvalError(
                f"cannot reach the judge at {self.base_url} ({type(cause).__name__}: {cause}); start the "
                "server, or fix --judge-base-url"
            ) from None
        except openai.APIStatusError:
            return  # reachable; the server just does not list its models
        finally:
            client.close()
        if served and self.model not in served:
            log.warning(
                "the judge at %s does not list %r among its models (%s); the calls may fail",
                self.base_url,
                self.model,
                ", ".join(served[:5]) + (" ..." if len(served) > 5 else ""),
            )

    def _no_key_message(self) -> str:
        return (
            f"judging with {self.model!r} at {self.base_url} needs an API key: set the environment "
            f"variable {self.api_key_env} (or name another with --judge-api-key-env), or point "
            "--judge-base-url at your own OpenAI-compatible server"
        )

    def describe(self) -> dict[str, Any]:
        """What goes into results: which judge, where, and when the answers used were produced."""
        return {
            "model": self.model,
            "base_url": self.base_url,
            "first_call_at": self.stats.first_at,
            "last_call_at": self.stats.last_at,
        }

    def complete(self, requests: Sequence[JudgeRequest]) -> list[str]:
        """The judge's text for each request, in order; raises JudgeError if any call failed."""
        keys = [r.key(self.model) for r in requests]
        missing, asked = [], set()
        for index, key in enumerate(keys):
            if key not in self._cache and key not in asked:  # a repeat within the batch is asked once
                asked.add(key)
                missing.append(index)
        if self.progress is not None:
            self.progress.grow(len(requests))
            self.progress.advance(len(requests) - len(missing), cached=len(requests) - len(missing))
        failures: list[str] = []
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start : start + _CHUNK]
            failed = self._call([requests[i] for i in chunk], [keys[i] for i in chunk])
            if self.progress is not None:
                self.progress.advance(len(chunk), failed=len(failed))
            failures += failed
        if failures:
            raise JudgeError(
                f"{len(failures)} of {len(missing)} calls to judge {self.model!r} at {self.base_url} failed "
                f"(first: {failures[0]}). The answers received are cached in {self.cache_path}; "
                "rerun the same command to retry only the failed calls."
            )
        self.stats.cached += len(requests) - len(missing)
        texts = []
        for key in keys:
            entry = self._cache[key]
            self.stats.saw(entry["at"])
            texts.append(entry["text"])
        return texts

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _call(self, requests: list[JudgeRequest], keys: list[str]) -> list[str]:
        engine = self._connect()
        results = engine.generate(
            [
                TextRequest(
                    messages=r.messages,
                    sampling=SamplingParams(
                        temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_tokens
                    ),
                )
                for r in requests
            ]
        )
        self.stats.calls += len(requests)
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        failures = []
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with self.cache_path.open("a", encoding="utf-8") as sink:
            for request, key, result in zip(requests, keys, results):
                if result.error is not None or result.text is None:
                    failures.append(result.error or "the reply had no text")
                    continue
                entry = {"key": key, "model": self.model, "at": at, "text": result.text}
                self._cache[key] = entry
                sink.write(
                    json.dumps({**entry, "request": _request_record(request)}, ensure_ascii=False) + "\n"
                )
        return failures

    def _connect(self) -> OpenAITextEngine:
        if self._engine is None:
            if self.base_url == OPENAI_BASE_URL and not os.environ.get(self.api_key_env):
                raise EvalError(self._no_key_message())
            self._engine = OpenAITextEngine(
                model=self.model,
                base_url=self.base_url,
                api_key_env=self.api_key_env,
                concurrency=self.concurrency,
                max_retries=self.max_retries,
                timeout_s=self.timeout_s,
                settings="judge",
            )
        return self._engine


@dataclass(frozen=True)
class Reply(Generic[V]):
    """The judge's last text about one item, its parsed value (None: never parsable), calls made."""

    text: str
    value: V | None
    tries: int


def ask_until_parsed(
    judge: Judge,
    items: Sequence[T],
    request: Callable[[T, int], JudgeRequest],
    parse: Callable[[str], V | None],
    tries: int,
) -> list[Reply[V]]:
    """Ask about every item, then re-ask (``request(item, attempt)``) those whose reply ``parse``
    rejects, at most ``tries`` calls per item; one batch per attempt. Replies in item order."""
    replies: list[Reply[V] | None] = [None] * len(items)
    pending = list(range(len(items)))
    for attempt in range(tries):
        if not pending:
            break
        texts = judge.complete([request(items[i], attempt) for i in pending])
        still = []
        for index, text in zip(pending, texts):
            value = parse(text)
            replies[index] = Reply(text, value, attempt + 1)
            if value is None:
                still.append(index)
        pending = still
    return replies  # type: ignore[return-value]  # every slot is filled when tries >= 1


def _request_record(request: JudgeRequest) -> dict[str, Any]:
    return {
        "messages": request.messages,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "tag": request.tag,
    }


def _load_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Entries by key. A torn last line (a run killed mid-write) is cut off, so that the next entry
    appended starts on a line of its own; that call is simply redone."""
    cache: dict[str, dict[str, Any]] = {}
    if repair_tail(path):
        log.warning(
            "%s ended in a torn line (a run killed mid-write); that judge call will be made again", path
        )
    if not path.exists():
        return cache
    with path.open(encoding="utf-8") as source:
        for number, line in enumerate(source, 1):
            try:
                entry = json.loads(line)
                cache[entry["key"]] = {"at": entry["at"], "text": entry["text"]}
            except (ValueError, KeyError, TypeError):
                log.warning(
                    "%s line %d is not a cache entry; that judge call will be made again", path, number
                )
    return cache
