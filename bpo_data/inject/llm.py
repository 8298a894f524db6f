"""The LLM rewriter: units → prompt-file requests for a text engine, its replies → rejected answers.

A reply is cleaned of chatter, validated (with a reject reason when unusable), and its applied
error types are read off the difference to the ground truth.
"""

from __future__ import annotations

from concurrent.futures import Future

from bpo_data.engines.base import EngineResult, TextEngine, TextRequest, streams
from bpo_data.hashing import stable_u64
from bpo_data.inject.cleaning import clean_rewrite
from bpo_data.inject.error_types import applied_error_types
from bpo_data.inject.prompt_files import PromptFile, PromptFileError, load_prompt_file, render_messages
from bpo_data.inject.validation import validate_rewrite
from bpo_data.recipe import InjectSpec
from bpo_data.schema import Reject, Unit, pair_key

Rewrite = tuple[str, list[str]]  # (rejected answer, error types applied)


class LLMRewriter:
    """Rewrites with any text engine (the MLLM's own language model, vLLM, an OpenAI-compatible server)."""

    def __init__(self, engine: TextEngine, spec: InjectSpec, seed: int):
        self.engine = engine
        self.prompts: dict[str, PromptFile] = {
            style: load_prompt_file(ref) for style, ref in spec.prompts.items()
        }
        self.validation = spec.validation
        self.sampling_override = spec.sampling
        self.seed = seed
        self.generated_tokens = 0  # what the engine generated, for throughput figures

    def prompt_for(self, unit: Unit) -> PromptFile:
        try:
            return self.prompts[unit.style]
        except KeyError:
            raise PromptFileError(
                f"unit {unit.key} has style {unit.style!r} but the recipe's inject.prompts only maps "
                f"{sorted(self.prompts)}; add '{unit.style}: <prompt name or path>' to inject.prompts"
            ) from None

    @property
    def in_flight(self) -> int:
        """Units to keep submitted when the engine streams (0: it answers whole batches)."""
        return streams(self.engine)

    def request(self, unit: Unit) -> TextRequest:
        """The unit's prompt; its seed depends on the unit alone, so any batch or order gives one answer."""
        return TextRequest(
            messages=render_messages(self.prompt_for(unit), unit),
            sampling=self.sampling_override or self.prompt_for(unit).sampling,
            seed=stable_u64(unit.key, self.seed, "inject") % (1 << 31),
        )

    def requests(self, units: list[Unit]) -> list[TextRequest]:
        return [self.request(unit) for unit in units]

    def submit(self, unit: Unit) -> Future[EngineResult]:
        return self.engine.submit(self.request(unit))  # type: ignore[attr-defined]

    def finish(self, unit: Unit, result: EngineResult) -> Rewrite | Reject:
        self.generated_tokens += result.completion_tokens
        key = pair_key(unit.key, "inject")
        if result.error is not None:
            return Reject(
                key,
                unit.source,
                "engine_error",
                f"the text engine failed on this unit: {result.error}",
                negative_type="inject",
            )
        rewrite = clean_rewrite(result.text or "", original=unit.answer)
        verdict = validate_rewrite(unit.answer, rewrite, self.validation)
        if not verdict.ok:
            return Reject(key, unit.source, verdict.reason, verdict.detail, negative_type="inject")
        return rewrite, applied_error_types(unit.answer, rewrite)

    def rewrite(self, units: list[Unit]) -> list[Rewrite | Reject]:
        results = self.engine.generate(self.requests(units))
        return [self.finish(unit, result) for unit, result in zip(units, results)]
