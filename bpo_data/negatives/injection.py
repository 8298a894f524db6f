"""Error injection: an LLM rewrites the ground truth with plausible wrong details (BPO, Pi et al. 2024).

This module turns units into text requests (through the prompt files), and model outputs back
into rejected answers: it strips the chatter instruction-tuned models wrap around a rewrite and
rejects outputs that are not usable negatives (empty, refusals, unchanged, far off in length),
each with a reason code the run summary counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpo_data.engines.base import EngineResult, TextEngine, TextRequest
from bpo_data.hashing import stable_u64
from bpo_data.negatives.prompt_files import PromptFile, PromptFileError, load_prompt_file, render_messages
from bpo_data.negatives.rules import RulesInjector
from bpo_data.recipe import Recipe, SamplingParams, ValidationSpec
from bpo_data.schema import Pair, Reject, Unit, pair_key

if TYPE_CHECKING:
    from bpo_data.engines.hf import LlavaRuntime
    from bpo_data.engines.vllm_engine import VllmRuntime

_COURTESY = r"(?:sure|certainly|of\s+course|okay|ok|absolutely|alright|all\s+right|no\s+problem)"
_MODIFIER = (
    r"(?:modified|rewritten|revised|altered|changed|updated|edited|new|incorrect|wrong|hallucinated|"
    r"corrupted|final)"
)
_SUBJECT = r"(?:description|answer|caption|response|version|text|output|rewrite|result)"
_LABEL_WORDS = (
    rf"(?:(?:the\s+|my\s+)?(?:{_MODIFIER}\s+)+{_SUBJECT}|description|answer|caption|response|rewrite)"
)
_BOLD = r"(?:\*\*|__)"
_APOSTROPHE = r"(?:'|’)"

_FLAGS = re.IGNORECASE
# "Sure, here is the modified description:" / "Here's the rewritten answer:" (same line or the next).
_INTRO = re.compile(
    rf"\A(?:{_COURTESY}\s*[,.!]*\s*)?(?:here{_APOSTROPHE}s|here\s+is|here\s+are|below\s+is)\b"
    rf"[^\n:]*?\b(?:{_MODIFIER}|{_SUBJECT})\b[^\n:]*:\s*",
    _FLAGS,
)
# "The modified description is as follows:" / "My rewritten answer would be:"
_IS_INTRO = re.compile(
    rf"\A(?:the\s+|my\s+)?(?:{_MODIFIER}\s+)+{_SUBJECT}\s+(?:is|would\s+be|reads)(?:\s+as\s+follows)?\s*:\s*",
    _FLAGS,
)
_HERE_YOU_GO = re.compile(rf"\A(?:{_COURTESY}\s*[,.!]*\s*)?here\s+you\s+go\s*[.!:]*\s*", _FLAGS)
# A first line that is only politeness: "Sure!" / "Certainly, I can do that." followed by the text.
_COURTESY_LINE = re.compile(
    rf"\A{_COURTESY}\s*[,.!]*(?:\s*(?:i\s+can\s+(?:do\s+that|help(?:\s+with\s+that)?)|"
    rf"i{_APOSTROPHE}d\s+be\s+happy\s+to(?:\s+help)?|happy\s+to\s+help))?\s*[.!]*[ \t]*\n\s*(?=\S)",
    _FLAGS,
)
# "I have modified the description as follows:" on a line of its own.
_DID_LINE = re.compile(
    rf"\Ai(?:{_APOSTROPHE}ve|\s+have)?\s+(?:modified|rewritten|rewrote|changed|revised|altered|introduced|"
    r"made|added|updated|edited)\b[^\n]*:[ \t]*\n\s*",
    _FLAGS,
)
# "Modified description:", "**Rewritten answer:**", "### New caption" on its own line, "Answer:".
_LABEL = re.compile(
    rf"\A(?:#{{1,6}}\s*)?{_BOLD}?\s*{_LABEL_WORDS}\s*(?:{_BOLD}?\s*:\s*{_BOLD}?|{_BOLD}\s*\n|\s*\n(?=\S))\s*",
    _FLAGS,
)
# "Note: ...", "Changes made:" lists, "(Note: ...)", on a new line: everything after is commentary.
_TRAIL_LABELLED = re.compile(
    rf"\n\s*(?:[-*]\s*)?\(?\s*{_BOLD}?\s*(?:notes?|changes(?:\s+made)?|modifications(?:\s+made)?|"
    r"edits(?:\s+made)?|explanation|errors?\s+(?:introduced|added)|hallucinations?\s+(?:introduced|added)|"
    rf"summary\s+of\s+changes|what\s+(?:i|was)\s+changed)\s*{_BOLD}?\s*:.*\Z",
    _FLAGS | re.DOTALL,
)
# "I changed the colour of ..." / "In this version, ..." as a paragraph after a blank line.
_TRAIL_SENTENCE = re.compile(
    rf"\n[ \t]*\n\s*\(?\s*(?:i(?:{_APOSTROPHE}ve|\s+have)?\s+(?:changed|modified|replaced|added|removed|"
    r"introduced|altered|made|swapped|updated)|in\s+this\s+(?:version|rewrite|modified|rewritten|revised)|"
    r"the\s+(?:changes|modifications|errors)\s+(?:are|were|include|made)|this\s+(?:version|rewrite)\s)\b.*\Z",
    _FLAGS | re.DOTALL,
)
# "... on the table. (Note: I changed the colour.)" at the very end of the text.
_TRAIL_PAREN = re.compile(
    r"\s*\(\s*(?:note\b|i\s+(?:changed|modified|replaced|added|removed|introduced|altered|swapped)\b)"
    r"[^()]*\)\s*\Z",
    _FLAGS,
)
_CODE_FENCE = re.compile(r"\A```[\w-]*[ \t]*\n?(.*?)\n?```\Z", re.DOTALL)
_QUOTE_PAIRS = {'"': '"', "“": "”", "'": "'", "‘": "’", "`": "`", "«": "»"}
_BARE_QUOTE = {
    "'": re.compile(r"(?<![^\W\d_])'|'(?![^\W\d_])"),
    "‘": re.compile(r"(?<![^\W\d_])’|’(?![^\W\d_])"),
}

_LEADING = (_INTRO, _IS_INTRO, _HERE_YOU_GO, _COURTESY_LINE, _DID_LINE, _LABEL)
_TRAILING = (_TRAIL_LABELLED, _TRAIL_SENTENCE, _TRAIL_PAREN)

_REFUSAL = re.compile(
    rf"\A\W*(?:i{_APOSTROPHE}m\s+sorry|i\s+am\s+sorry|sorry\b|i\s+apologi[sz]e|i\s+cannot|i\s+can\s*not|"
    rf"i\s+can{_APOSTROPHE}t|i{_APOSTROPHE}m\s+(?:not\s+able|unable)|i\s+am\s+(?:not\s+able|unable)|"
    rf"i\s+won{_APOSTROPHE}t|i\s+will\s+not|as\s+an\s+ai\b|as\s+a\s+language\s+model|"
    r"unfortunately,?\s+i\b)",
    _FLAGS,
)
_PUNCT = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def _normalise(text: str) -> str:
    return _SPACES.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def _unwrap(text: str) -> str:
    fenced = _CODE_FENCE.match(text)
    if fenced:
        return fenced.group(1).strip()
    if len(text) < 2 or _QUOTE_PAIRS.get(text[0]) != text[-1]:
        return text
    inner = text[1:-1]
    bare = _BARE_QUOTE.get(text[0])
    if bare is not None:
        # Apostrophes inside words ("dog's") are not quotes; any other quote mark means the text
        # quotes several things ('"OPEN" on the left, "CLOSED" on the right') and is not wrapped.
        return text if bare.search(inner) else inner.strip()
    return text if text[0] in inner or text[-1] in inner else inner.strip()


def clean_rewrite(text: str, original: str | None = None) -> str:
    """The rewrite without the model's preamble, labels, wrapping quotes and trailing notes.

    A leading phrase is kept when the ground truth starts with it too (``original``), and a
    trailing "Note:" section when the ground truth has one: then it is part of the answer ("Sure,
    the sign says OPEN."), not the model talking about its task. Politeness alone is only removed
    when it stands on a line of its own.
    """
    original_norm = _normalise(original) if original else ""
    trailing = [pattern for pattern in _TRAILING if not (original and pattern.search(original))]
    current = text.strip()
    for _ in range(4):
        previous = current
        for pattern in _LEADING:
            match = pattern.match(current)
            if match and not (original_norm and original_norm.startswith(_normalise(match.group()))):
                current = current[match.end() :].lstrip()
        for pattern in trailing:
            current = pattern.sub("", current).rstrip()
        current = _unwrap(current)
        if current == previous:
            break
    return current


@dataclass
class Verdict:
    ok: bool
    reason: str | None
    detail: str


def validate_rewrite(original: str, rewrite: str, spec: ValidationSpec) -> Verdict:
    """Whether a cleaned rewrite can be a rejected answer; ``reason`` is the reject code when not."""
    if not rewrite.strip():
        return Verdict(False, "invalid_rewrite:empty", "the rewrite is empty after cleaning")
    if _REFUSAL.match(rewrite) and not _REFUSAL.match(original):
        return Verdict(
            False, "invalid_rewrite:refusal", f"the model refused instead of rewriting: {rewrite[:80]!r}"
        )
    if _normalise(rewrite) == _normalise(original):
        return Verdict(
            False,
            "invalid_rewrite:identical",
            "the rewrite equals the ground truth (ignoring case, spacing and punctuation)",
        )
    ratio = len(rewrite) / max(len(original), 1)
    sizes = f"{len(rewrite)} vs {len(original)} characters, ratio {ratio:.2f}"
    if ratio < spec.min_length_ratio:
        return Verdict(
            False, "invalid_rewrite:too_short", f"{sizes}, below min_length_ratio {spec.min_length_ratio}"
        )
    if ratio > spec.max_length_ratio:
        return Verdict(
            False, "invalid_rewrite:too_long", f"{sizes}, above max_length_ratio {spec.max_length_ratio}"
        )
    return Verdict(True, None, f"accepted: {sizes}")


class Injector:
    """Units → text requests for an LLM, and its outputs → (rejected answer, error types) or a reject."""

    def __init__(
        self,
        prompts: dict[str, str],
        validation: ValidationSpec,
        sampling_override: SamplingParams | None = None,
        seed: int | None = None,
    ):
        self.prompts: dict[str, PromptFile] = {style: load_prompt_file(ref) for style, ref in prompts.items()}
        self.validation = validation
        self.sampling_override = sampling_override
        self.seed = seed

    def prompt_for(self, unit: Unit) -> PromptFile:
        try:
            return self.prompts[unit.style]
        except KeyError:
            raise PromptFileError(
                f"unit {unit.key} has style {unit.style!r} but the recipe's inject.prompts only maps "
                f"{sorted(self.prompts)}; add '{unit.style}: <prompt name or path>' to inject.prompts"
            ) from None

    def requests(self, units: list[Unit]) -> list[TextRequest]:
        out = []
        for unit in units:
            prompt = self.prompt_for(unit)
            seed = None if self.seed is None else stable_u64(unit.key, self.seed, "inject") % (1 << 31)
            out.append(
                TextRequest(
                    messages=render_messages(prompt, unit),
                    sampling=self.sampling_override or prompt.sampling,
                    seed=seed,
                )
            )
        return out

    def finish(self, unit: Unit, result: EngineResult) -> tuple[str, list[str]] | Reject:
        key = pair_key(unit.key, "inject")
        if result.error is not None:
            return Reject(
                key=key,
                source=unit.source,
                reason="engine_error",
                detail=f"the text engine failed on this unit: {result.error}",
                negative_type="inject",
            )
        rewrite = clean_rewrite(result.text or "", original=unit.answer)
        verdict = validate_rewrite(unit.answer, rewrite, self.validation)
        if not verdict.ok:
            return Reject(
                key=key,
                source=unit.source,
                reason=verdict.reason,
                detail=verdict.detail,
                negative_type="inject",
            )
        return rewrite, list(self.prompt_for(unit).error_types)


class InjectedNegatives:
    """The pipeline's maker of error-injected pairs: an LLM through ``Injector``, or ``rules``."""

    negative_type = "inject"

    def __init__(
        self,
        generator: str,
        batch_size: int,
        meta: dict,
        *,
        injector: Injector | None = None,
        engine: TextEngine | None = None,
        rules: RulesInjector | None = None,
    ):
        if (rules is None) == (engine is None or injector is None):
            raise ValueError("InjectedNegatives needs either rules, or an engine with an injector")
        self.generator = generator
        self.batch_size = batch_size
        self.meta = meta
        self.injector = injector
        self.engine = engine
        self.rules = rules

    @classmethod
    def from_recipe(
        cls,
        recipe: Recipe,
        runtime: LlavaRuntime | None,
        meta: dict,
        vllm_runtime: VllmRuntime | None = None,
    ) -> InjectedNegatives:
        spec = recipe.inject
        if spec.engine == "rules":
            rules = RulesInjector(seed=recipe.seed, validation=spec.validation)
            return cls("rules", max(spec.batch_size, 256), meta, rules=rules)
        injector = Injector(spec.prompts, spec.validation, spec.sampling, seed=recipe.seed)
        if spec.engine == "openai":
            from bpo_data.engines.openai_compat import OpenAITextEngine

            if not spec.model:
                raise ValueError(
                    "inject.engine 'openai' needs inject.model (or --inject-model): the served model name"
                )
            engine = OpenAITextEngine(
                spec.model,
                base_url=spec.base_url,
                api_key_env=spec.api_key_env,
                concurrency=spec.concurrency,
                max_retries=spec.max_retries,
                timeout_s=spec.timeout_s,
            )
            return cls(f"openai:{spec.model}", spec.batch_size, {}, injector=injector, engine=engine)
        if spec.model and spec.model != recipe.model:
            raise ValueError(
                f"inject.engine {spec.engine!r} uses the MLLM's own language model (as in the paper); to "
                "rewrite with another model, serve it (vLLM, transformers serve) and use inject.engine "
                "'openai' with inject.model"
            )
        if spec.engine == "vllm":
            from bpo_data.engines.vllm_engine import VllmTextEngine

            if vllm_runtime is None:
                raise ValueError(
                    "inject.engine 'vllm' needs the vLLM runtime; this is a bug in run.build_makers"
                )
            engine = VllmTextEngine(vllm_runtime)
            return cls(f"vllm:{recipe.model}", spec.batch_size, meta, injector=injector, engine=engine)
        from bpo_data.engines.hf import HFTextEngine

        if runtime is None:
            raise ValueError("inject.engine 'hf' needs the MLLM loaded; this is a bug in run.build_makers")
        return cls(
            f"hf:{recipe.model}", spec.batch_size, meta, injector=injector, engine=HFTextEngine(runtime)
        )

    def make(self, items: list[tuple[Unit, object]]) -> tuple[list[Pair], list[Reject]]:
        pairs: list[Pair] = []
        rejects: list[Reject] = []
        units = [unit for unit, _ in items]
        if self.rules is not None:
            outcomes = [self._rules_outcome(unit) for unit in units]
        else:
            results = self.engine.generate(self.injector.requests(units))
            outcomes = [self.injector.finish(unit, result) for unit, result in zip(units, results)]
        for unit, outcome in zip(units, outcomes):
            if isinstance(outcome, Reject):
                rejects.append(outcome)
            else:
                text, error_types = outcome
                pairs.append(
                    Pair.from_unit(
                        unit, "inject", text, self.generator, error_types=error_types, meta=self.meta
                    )
                )
        return pairs, rejects

    def _rules_outcome(self, unit: Unit) -> tuple[str, list[str]] | Reject:
        outcome = self.rules.rewrite(unit)
        if outcome is None:
            return Reject(
                pair_key(unit.key, "inject"),
                unit.source,
                "invalid_rewrite:no_rule_applies",
                "the rules injector found no object, colour, count, position or number it could change "
                "within the length limits; use an LLM injector (inject.engine hf or openai) for such answers",
                negative_type="inject",
            )
        return outcome
