"""Real servers on loopback for engine tests: ``transformers serve`` and a scripted chat server.

The scripted server plays back failures a real provider produces (rate limits, 5xx, hangs, broken
bodies) so retry behaviour is tested over real HTTP, and records what the client actually sent.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    """A port the OS just handed out on loopback (free now; tiny race before the server binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _transformers_cli() -> str:
    sibling = Path(sys.executable).with_name("transformers")
    found = str(sibling) if sibling.exists() else shutil.which("transformers")
    if not found:
        raise RuntimeError("the `transformers` command is not installed; pip install 'transformers[serving]'")
    return found


@contextmanager
def transformers_serve(
    model_dir: str | os.PathLike, port: int | None = None, deadline_s: float = 120.0
) -> Iterator[str]:
    """Serve ``model_dir`` with ``transformers serve`` on CPU; yield its base URL (``http://127.0.0.1:N``)."""
    port = port or free_port()
    cmd = [
        _transformers_cli(),
        "serve",
        str(model_dir),
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_healthy(proc, base_url, deadline_s, log)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(proc: subprocess.Popen, base_url: str, deadline_s: float, log) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    log.seek(0)
    tail = log.read().decode("utf-8", "replace")[-3000:]
    state = (
        f"exited with code {proc.returncode}"
        if proc.poll() is not None
        else f"not healthy after {deadline_s:g}s"
    )
    raise RuntimeError(f"`transformers serve` at {base_url} {state}; its output ends with:\n{tail}")


@dataclass
class Reply:
    """One scripted answer. ``raw`` replaces the JSON body; ``delay_s`` makes the server hang first."""

    status: int = 200
    body: dict | None = None
    raw: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def ok(text: str, prompt_tokens: int = 3, completion_tokens: int = 2, delay_s: float = 0.0) -> Reply:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(body=body, delay_s=delay_s)


def error(status: int, message: str = "scripted error", retry_after: float | None = None) -> Reply:
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return Reply(status=status, body={"error": {"message": message, "type": "scripted"}}, headers=headers)


def not_json() -> Reply:
    return Reply(raw=b"<html>upstream proxy error</html>")


def no_choices() -> Reply:
    return Reply(body={"id": "x", "object": "chat.completion", "created": 0, "model": "scripted"})


def null_content() -> Reply:
    reply = ok("placeholder")
    reply.body["choices"][0]["message"]["content"] = None
    return reply


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops concurrent connects (1 s SYN retry)


@dataclass
class Call:
    body: dict | None
    headers: dict[str, str]


Script = Sequence[Reply] | Callable[[dict], Reply]


class ScriptedServer:
    """Answers ``POST /v1/chat/completions`` from a script and records every call.

    ``script`` is either a list played in arrival order (the last entry repeats once it runs out)
    or a function of the request body, for concurrent tests where arrival order is not fixed.
    ``nodelay`` sends each reply at once (``TCP_NODELAY``), as production servers (uvicorn) do: with
    Nagle's algorithm the reply's headers and body go out as two segments and the second waits for
    the client's delayed acknowledgement, adding ≈40 ms to every request (benchmarks set it).
    """

    def __init__(self, script: Script, nodelay: bool = False) -> None:
        self.script = script
        self.nodelay = nodelay
        self.calls: list[Call] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _LoopbackServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def _next_reply(self, body: dict | None) -> Reply:
        if callable(self.script):
            return self.script(body or {})
        index = min(len(self.calls) - 1, len(self.script) - 1)
        return self.script[index]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = server.nodelay

            def log_message(self, format, *args) -> None:  # keep test output quiet
                return

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with server._lock:
                    server.calls.append(
                        Call(body=body, headers={k.lower(): v for k, v in self.headers.items()})
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    reply = (
                        server._next_reply(body)
                        if self.path.rstrip("/") == "/v1/chat/completions"
                        else error(404, f"no route {self.path}")
                    )
                try:
                    if reply.delay_s and server._stop.wait(reply.delay_s):
                        return
                    payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before the scripted delay ended
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler

    def start(self) -> ScriptedServer:
        threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="scripted-server", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def scripted_server(script: Script, nodelay: bool = False) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script, nodelay=nodelay).start()
    try:
        yield server
    finally:
        server.stop()
