"""Error-injected negatives: each unit's ground truth rewritten by an LLM or by rules."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

from PIL import Image

from bpo_data.engines.base import EngineResult
from bpo_data.inject.cooccurrence import CoOccurrence
from bpo_data.inject.llm import LLMRewriter, Rewrite
from bpo_data.inject.rules import RulesInjector
from bpo_data.recipe import ValidationSpec
from bpo_data.schema import Pair, Reject, Unit, pair_key


class Rewriter(Protocol):
    def rewrite(self, units: list[Unit]) -> list[Rewrite | Reject]: ...


class RulesRewriter:
    """The model-free injector as a rewriter: a unit no rule applies to becomes a reject."""

    def __init__(
        self, seed: int, validation: ValidationSpec, cooccurrence: dict[str, CoOccurrence] | None = None
    ):
        self.rules = RulesInjector(seed=seed, validation=validation, cooccurrence=cooccurrence)

    def rewrite(self, units: list[Unit]) -> list[Rewrite | Reject]:
        return [self._one(unit) for unit in units]

    def _one(self, unit: Unit) -> Rewrite | Reject:
        outcome = self.rules.rewrite(unit)
        if outcome is not None:
            return outcome
        return Reject(
            pair_key(unit.key, "inject"),
            unit.source,
            "invalid_rewrite:no_rule_applies",
            "the rules injector found no object, colour, count, position or number it could change within "
            "the length limits; use the llm injector (inject.injector: llm) for such answers",
            negative_type="inject",
        )


class InjectedNegatives:
    """Makes ``inject`` pairs; never looks at the image, so the pipeline never decodes one for it.

    An LLM rewriter on an engine that serves many requests at once (openai, vllm) streams
    (``in_flight`` > 0: ``submit`` / ``finish`` one unit at a time); rules and the hf engine batch.
    """

    negative_type = "inject"
    needs_image = False

    def __init__(self, rewriter: Rewriter, generator: str, batch_size: int):
        self.rewriter = rewriter
        self.generator = generator
        self.batch_size = batch_size

    @property
    def in_flight(self) -> int:
        return self.rewriter.in_flight if isinstance(self.rewriter, LLMRewriter) else 0

    @property
    def generated_tokens(self) -> int:
        return getattr(self.rewriter, "generated_tokens", 0)

    def make(self, items: list[tuple[Unit, Image.Image | None]]) -> tuple[list[Pair], list[Reject]]:
        units = [unit for unit, _ in items]
        outcomes = [self._pair(unit, outcome) for unit, outcome in zip(units, self.rewriter.rewrite(units))]
        return [o for o in outcomes if isinstance(o, Pair)], [o for o in outcomes if isinstance(o, Reject)]

    def submit(self, unit: Unit, image: Image.Image | None) -> Future[EngineResult]:
        assert isinstance(self.rewriter, LLMRewriter), "only an LLM rewriter streams"
        return self.rewriter.submit(unit)

    def finish(self, unit: Unit, result: EngineResult) -> Pair | Reject:
        assert isinstance(self.rewriter, LLMRewriter), "only an LLM rewriter streams"
        return self._pair(unit, self.rewriter.finish(unit, result))

    def _pair(self, unit: Unit, outcome: Rewrite | Reject) -> Pair | Reject:
        if isinstance(outcome, Reject):
            return outcome
        text, error_types = outcome
        return Pair.from_unit(unit, "inject", text, self.generator, error_types=error_types)
