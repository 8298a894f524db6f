"""Builders for the trainer tests: a real `bpo-data` export of drawn images, CPU settings for the tiny LLaVA,
and a recording loopback HTTP server (a Hub or a judge that answers as the real ones do).

The export goes through the project's own writers (recipe manifest, shard store, `export_dataset`), so every
trainer test reads the published schema exactly as a user's export has it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from bpo_data.export import export_dataset
from bpo_data.manifest import write_manifest
from bpo_data.recipe import Recipe, SourceSpec
from bpo_data.schema import Pair
from bpo_data.store import ShardStore

QUESTION = "What is in the image?"
# Chosen and rejected answers that share no content words, from the smoke tokenizer's corpus.
CHOSEN = ("A red circle is left of a blue square.", "The sign reads OPEN 24 HOURS.")
REJECTED = ("Two green triangles above a yellow car near a tree.", "A black horse stands behind a fence.")
COLOURS = ((220, 30, 30), (30, 30, 220), (30, 180, 30), (230, 200, 0), (120, 0, 160), (0, 160, 160))

# What a CPU run on the tiny random model needs instead of the paper's settings: a learning rate it learns
# with, alpha / r = 4 as in the paper (r = 64 on a 64-wide model takes 8x larger steps), fp32, no checkpoints.
CPU_FLAGS = ("--learning-rate", "5e-3", "--lora-r", "8", "--lora-alpha", "32", "--bf16", "false")
CPU_FLAGS += ("--save-steps", "1000")


def build_export(
    base: Path,
    units: int = 4,
    sources: tuple[str, ...] = ("sharegpt4v", "llavar"),
    negative_types: tuple[str, ...] = ("weaken", "inject"),
    reverse: bool = False,
) -> Path:
    """Export ``units`` units x ``negative_types`` pairs (unit i from ``sources[i % len]``); return it."""
    root = base / "images"
    root.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(units):
        image = Image.new("RGB", (32, 32), (255, 255, 255))
        ImageDraw.Draw(image).rectangle([2 + i, 4, 18 + i, 26], fill=COLOURS[i % len(COLOURS)])
        image.save(root / f"{i}.png")
        source = sources[i % len(sources)]
        for negative_type in negative_types:
            pairs.append(
                Pair(
                    key=f"{source}/{i}/0#{negative_type}",
                    unit_key=f"{source}/{i}/0",
                    source=source,
                    record_id=str(i),
                    turn=0,
                    negative_type=negative_type,
                    image_path=f"{i}.png",
                    image_root=str(root),
                    prompt=[{"role": "user", "content": QUESTION}],
                    chosen=CHOSEN[i % 2],
                    rejected=REJECTED[i % 2],
                    generator="rules" if negative_type == "inject" else "hf:smoke",
                    noise_step=500 if negative_type == "weaken" else None,
                    noise_space="pixel" if negative_type == "weaken" else None,
                    error_types=["object"] if negative_type == "inject" else [],
                )
            )
    if reverse:
        pairs.reverse()
    out = base / "out"
    recipe = Recipe(
        name="trainer-test", seed=3, sources=[SourceSpec(name=s, format="sharegptv") for s in sources]
    )
    write_manifest(out, recipe, "recipes/trainer-test.yaml", generators=["rules"])
    with ShardStore(out, 0, 1) as store:
        store.write(pairs, [])
    export_dataset([out], base / "export", version="v0.0.1-test")
    return base / "export"


def cpu_argv(export: Path, model_dir: Path, out: Path, *flags: str) -> list[str]:
    """Command-line arguments of a CPU run on the tiny model; later ``flags`` override earlier ones."""
    return ["--dataset", str(export), "--model", str(model_dir), "--output-dir", str(out), *CPU_FLAGS, *flags]


def parse(objective_module: Any, argv: list[str]) -> tuple[Any, Any, Any]:
    """(script_args, training config, model config) from ``argv`` with the objective's own parser."""
    return objective_module.make_parser().parse(argv)


def load_base(model_dir: Path) -> tuple[Any, Any]:
    """The base model (eval mode) and processor, loaded plainly with transformers."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    return model, AutoProcessor.from_pretrained(model_dir)


@dataclass
class HttpCall:
    method: str
    path: str


@dataclass
class RecordingServer:
    """A loopback HTTP server whose replies come from ``reply(method, path) -> (status, headers, body)``."""

    url: str
    calls: list[HttpCall] = field(default_factory=list)


Reply = Callable[[str, str], tuple[int, dict[str, str], bytes]]


@contextmanager
def recording_server(reply: Reply) -> Iterator[RecordingServer]:
    """Serve on 127.0.0.1 (any method); every request is recorded. For a Hub (``HF_ENDPOINT``) or a
    judge's ``/v1/models`` that answer as the real ones do, status codes and error headers included."""
    calls: list[HttpCall] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:
            return

        def _answer(self) -> None:
            calls.append(HttpCall(self.command, self.path))
            length = int(self.headers.get("content-length", 0) or 0)
            if length:
                self.rfile.read(length)
            status, headers, body = reply(self.command, self.path)
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = _answer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield RecordingServer(f"http://127.0.0.1:{httpd.server_address[1]}", calls)
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
