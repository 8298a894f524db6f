"""Error-injection prompts are data: one YAML file per prompt in ``recipes/prompts/``.

Keeping the wording out of the code lets a user add or tune a prompt by adding a file and naming
it in a recipe's ``inject.prompts``. The file is validated on load so a typo names the file and
the field instead of producing silently bad rewrites later.
"""

from __future__ import annotations

import string
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bpo_data import resources
from bpo_data.prompting import strip_image_marker
from bpo_data.recipe import RecipeError, SamplingParams, load_yaml_model
from bpo_data.schema import ERROR_TYPES, Unit

PLACEHOLDERS = ("question", "answer")


class PromptFileError(RecipeError):
    """A prompt file that cannot be used; the message names the file and the field."""


class InjectionSampling(SamplingParams):
    """Rewrites need variety (the paper samples them), hence warmer defaults than answering."""

    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, ge=1)


class PromptExample(BaseModel):
    """A few-shot example: shown to the model as an earlier user/assistant exchange."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = None
    answer: str = Field(min_length=1)
    rewrite: str = Field(min_length=1)


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = Field(min_length=1, description="one line: what the prompt is for")
    system: str = Field(min_length=1)
    template: str = Field(min_length=1, description="user text with {question} and/or {answer}")
    examples: list[PromptExample] = Field(default_factory=list)
    error_types: list[str] = Field(min_length=1, description="the error types the prompt asks for")
    sampling: InjectionSampling = Field(default_factory=InjectionSampling)

    @field_validator("description")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value.strip():
            raise ValueError("must be a single line; put the details in 'system'")
        return value.strip()

    @field_validator("error_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in ERROR_TYPES]
        if unknown:
            raise ValueError(
                f"unknown error types {unknown}; the dataset's vocabulary is {list(ERROR_TYPES)}"
            )
        return value

    @field_validator("template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            fields = [
                (name, spec, conv)
                for _, name, spec, conv in string.Formatter().parse(value)
                if name is not None
            ]
        except ValueError as err:
            raise ValueError(f"cannot be parsed ({err}); write a literal brace as '{{{{' or '}}}}'") from err
        for name, spec, conv in fields:
            if name not in PLACEHOLDERS or spec or conv:
                written = name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
                raise ValueError(
                    f"unknown placeholder {{{written}}}; use only {{question}} and {{answer}} "
                    "(write a literal brace as '{{' or '}}')"
                )
        if "answer" not in _placeholders(value):
            raise ValueError("must contain {answer}: the ground truth the model rewrites")
        return value

    @model_validator(mode="after")
    def _examples_fill_template(self):
        if "question" in _placeholders(self.template):
            for index, example in enumerate(self.examples):
                if not example.question:
                    raise ValueError(
                        f"examples.{index}.question is missing but the template uses {{question}}; "
                        "give every example a question"
                    )
        return self

    def render(self, question: str, answer: str) -> str:
        return self.template.format(question=question.strip(), answer=answer.strip()).strip()


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def resolve_prompt_path(name_or_path: str) -> Path:
    """A YAML path, or the bare name of a prompt shipped in ``recipes/prompts/`` (``qa`` → qa.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_file():
            return path
        raise PromptFileError(
            f"prompt file {path} does not exist; check the path in the recipe's inject.prompts"
        )
    shipped = resources.prompt_file(name_or_path)
    if shipped is not None:
        return shipped
    raise PromptFileError(
        f"injection prompt {name_or_path!r} not found: give a YAML path or one of {resources.prompt_names()}"
    )


def load_prompt_file(name_or_path: str) -> PromptFile:
    return load_yaml_model(resolve_prompt_path(name_or_path), PromptFile, "a prompt file", PromptFileError)


def render_messages(prompt: PromptFile, unit: Unit) -> list[dict[str, str]]:
    """System text, each few-shot example as a user/assistant pair, then the unit to rewrite."""
    messages = [{"role": "system", "content": prompt.system.strip()}]
    for example in prompt.examples:
        messages.append({"role": "user", "content": prompt.render(example.question or "", example.answer)})
        messages.append({"role": "assistant", "content": example.rewrite.strip()})
    messages.append(
        {"role": "user", "content": prompt.render(strip_image_marker(unit.question), unit.answer)}
    )
    return messages
