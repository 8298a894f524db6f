"""Benchmark answers from a LLaVA-1.5 model: hf engine, batched, greedy, the LLaVA-1.5 prompt layout.

Answers are stored per benchmark with the settings that produced them, and reused when a rerun
asks for the same model, adapter and decoding, so a rescore (another judge, ``--drop-failed``)
does not regenerate and a replay is identical. A local checkpoint or adapter is recognised by its
weight and config files (names, sizes, modification times), so one retrained in place is answered
again rather than served stale answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from bpo_data.engines.base import VisionRequest
from bpo_data.images import ImageError, load_image
from bpo_data.recipe import DEFAULT_MAX_PIXELS, SamplingParams
from trainer_min.eval.common import write_json
from trainer_min.eval.errors import EvalError
from trainer_min.eval.progress import ProgressBoard, Task, silent

if TYPE_CHECKING:  # torch is imported only when answers are generated: scoring and reports do without it
    from bpo_data.engines.hf import LlavaRuntime

log = logging.getLogger(__name__)

PROMPT_LAYOUT = "llava-1.5: USER: <image>\\n{question} ASSISTANT:"
# What must match for stored answers to be reused; batch size and device do not change greedy text.
_REUSE_KEYS = ("decoding", "max_new_tokens", "prompt_layout")


@dataclass(frozen=True)
class Question:
    """One benchmark question: a stable id, the text asked, and how to open its image."""

    id: str
    text: str
    image: Callable[[], Image.Image]


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 1024
    batch_size: int = 8


def image_file(root: Path, rel: str, where: str) -> Callable[[], Image.Image]:
    """A loader for ``root/rel`` that names the benchmark record when the image is missing or unsafe."""

    def load() -> Image.Image:
        try:
            return load_image(root, rel, DEFAULT_MAX_PIXELS)
        except ImageError as err:
            raise EvalError(f"{where}: {err.detail}") from err

    return load


def load_runtime(model: str | None, adapter: str | None, device: str | None = None) -> LlavaRuntime:
    """The model to answer with: a base checkpoint, a trained LoRA adapter on its base, or both
    (``trainer_min.load_for_eval``), set up for batched generation with left padding."""
    from bpo_data.engines.hf import LlavaRuntime
    from trainer_min import load_for_eval

    loaded, processor = load_for_eval(model, adapter, device=device)
    return LlavaRuntime.from_loaded(model or str(adapter), loaded, processor)


def generate(
    runtime: LlavaRuntime,
    questions: Sequence[Question],
    settings: GenerationSettings,
    progress: Task | None = None,
) -> dict[str, str]:
    """Greedy answers by question id; batches of ``settings.batch_size`` with left padding."""
    from bpo_data.engines.hf import HFVisionEngine

    engine = HFVisionEngine(runtime)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=settings.max_new_tokens)
    answers: dict[str, str] = {}
    for start in range(0, len(questions), settings.batch_size):
        batch = questions[start : start + settings.batch_size]
        requests = [
            VisionRequest(image=q.image(), messages=[{"role": "user", "content": q.text}], sampling=sampling)
            for q in batch
        ]
        for question, result in zip(batch, engine.generate(requests)):
            if result.error is not None or result.text is None:
                raise EvalError(f"generation failed for {question.id}: {result.error}")
            answers[question.id] = result.text
        if progress is not None:
            progress.advance(len(batch))
    return answers


class AnswerSource:
    """Loads the model once, on first need, for every benchmark of a run."""

    def __init__(
        self,
        model: str | None,
        adapter: str | None,
        settings: GenerationSettings,
        device: str | None = None,
        board: ProgressBoard | None = None,
    ):
        self.model = model
        self.adapter = adapter
        self.settings = settings
        self.device = device
        self.board = board or silent()
        self._runtime: LlavaRuntime | None = None

    def record(self) -> dict[str, Any]:
        """The generation settings written into every benchmark's results."""
        record: dict[str, Any] = {
            "engine": "hf",
            "decoding": "greedy",
            "max_new_tokens": self.settings.max_new_tokens,
            "batch_size": self.settings.batch_size,
            "prompt_layout": PROMPT_LAYOUT,
        }
        if self._runtime is not None:
            record["device"] = str(self._runtime.device)
            record["dtype"] = str(self._runtime.model.dtype).removeprefix("torch.")
        return record

    def identity(self) -> dict[str, Any]:
        """What the stored answers must have been produced by: model, adapter and their files."""
        return {
            "model": self.model,
            "adapter": self.adapter,
            "files": [_fingerprint(self.model), _fingerprint(self.adapter)],
        }

    def stored(self, questions: Sequence[Question], store: Path) -> dict[str, Any] | None:
        """``store``'s content when it holds this model's answers to all ``questions``, else None."""
        stored = _read_store(store)
        wanted = {q.id for q in questions}
        if stored is not None and self._matches(stored) and wanted <= stored["answers"].keys():
            return stored
        return None

    def answers(
        self, questions: Sequence[Question], store: Path, name: str = "answers"
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """(answers by id, generation record): reused from ``store`` when it matches, else generated."""
        stored = self.stored(questions, store)
        if stored is not None:
            log.info("%s: reusing the %d answers in %s", name, len(questions), store)
            return {q.id: stored["answers"][q.id] for q in questions}, stored["generation"]
        progress = self.board.task(f"{name}: answering", total=len(questions))
        if self._runtime is None:
            self._runtime = load_runtime(self.model, self.adapter, self.device)
        answers = generate(self._runtime, questions, self.settings, progress)
        record = self.record()
        store.parent.mkdir(parents=True, exist_ok=True)
        payload = {**self.identity(), "generation": record, "answers": answers}
        write_json(store, payload)
        return answers, record

    def _matches(self, stored: dict[str, Any]) -> bool:
        mine = self.record()
        same_decoding = all(stored["generation"].get(k) == mine[k] for k in _REUSE_KEYS)
        same_model = all(stored.get(k) == v for k, v in self.identity().items())
        return same_model and same_decoding


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")


def _fingerprint(model: str | None) -> str | None:
    """For a local folder, a digest of its weight/config files' names, sizes and mtimes; else None."""
    if model is None or not Path(model).is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(model).rglob("*")):
        if path.is_file() and path.suffix in _WEIGHT_SUFFIXES:
            stat = path.stat()
            digest.update(f"{path.relative_to(model)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_store(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("%s is not valid JSON; the answers will be generated again", path)
        return None
    if not isinstance(stored, dict) or not isinstance(stored.get("answers"), dict):
        return None
    stored.setdefault("generation", {})
    return stored
