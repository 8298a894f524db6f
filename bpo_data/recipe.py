"""Recipes: what to sample from which source and how to make its negatives.

A recipe is a YAML file validated by pydantic, so a typo or a bad value names the field
(``sources.0.quota: Input should be greater than or equal to 0``) instead of failing later.
Every field has the paper's default; the CLI can override the paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
PROMPTS_DIR = RECIPES_DIR / "prompts"


ModelT = TypeVar("ModelT", bound=BaseModel)


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingParams(_Strict):
    temperature: float = Field(0.2, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, ge=1)


class SourceSpec(_Strict):
    """One source: its format, where its files are, and how many units to take from it."""

    name: str
    format: str = Field("llava", description="sharegptv | llavar | llava-instruct | llava | sample")
    data: str | None = None
    image_root: str | None = None
    quota: int | None = Field(None, ge=0, description="units to sample; null = all")
    turns: Literal["first", "all", "random"] = "first"
    style: Literal["description", "qa"] = "qa"
    negatives: dict[Literal["weaken", "inject"], float] | Literal["both"] = Field(
        default_factory=lambda: {"weaken": 0.5, "inject": 0.5}
    )

    @field_validator("negatives")
    @classmethod
    def _ratio_sums_to_one(cls, value):
        if isinstance(value, dict):
            if not value or any(v < 0 for v in value.values()) or abs(sum(value.values()) - 1.0) > 1e-6:
                raise ValueError("negative-type ratios must be non-negative and sum to 1, or the word 'both'")
        return value


class NoiseSpec(_Strict):
    """DDPM forward noise on the image (DESIGN.md): step 0 = clean = the 'self-generated' ablation."""

    step: int = Field(500, ge=0, le=999)
    schedule: Literal["sigmoid", "linear"] = "sigmoid"
    space: Literal["pixel", "features"] = "pixel"
    steps_total: int = Field(1000, ge=1)


class WeakenSpec(_Strict):
    engine: Literal["hf", "vllm"] = "hf"
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    batch_size: int = Field(16, ge=1)


class VllmSpec(_Strict):
    """The vLLM engine's ``LLM``: one per shard, shared by weakening and injection."""

    gpu_memory_utilization: float = Field(
        0.85, gt=0.0, le=1.0, description="below vLLM's 0.9: the HF vision tower shares the GPU"
    )
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(4096, ge=1, description="LLaVA-1.5's context; null = the model's")
    enforce_eager: bool = Field(False, description="skip CUDA graph capture: faster start, slower decode")


class ValidationSpec(_Strict):
    min_length_ratio: float = Field(0.5, gt=0.0)
    max_length_ratio: float = Field(2.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError("min_length_ratio must be below max_length_ratio")
        return self


class InjectSpec(_Strict):
    """How rejected answers are rewritten. ``model: null`` = the MLLM's own language model."""

    engine: Literal["hf", "openai", "rules", "vllm"] = "hf"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    prompts: dict[Literal["description", "qa"], str] = Field(
        default_factory=lambda: {"description": "description", "qa": "qa"}
    )
    sampling: SamplingParams | None = None
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    batch_size: int = Field(16, ge=1)
    concurrency: int = Field(8, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(120.0, gt=0)


class ImageSpec(_Strict):
    max_pixels: int = Field(64_000_000, ge=1, description="larger images are rejected as image_too_large")


class Recipe(_Strict):
    name: str
    version: str = "0.1.0"
    seed: int = 0
    model: str = "llava-hf/llava-1.5-7b-hf"
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    sources: list[SourceSpec]
    weaken: WeakenSpec = Field(default_factory=WeakenSpec)
    inject: InjectSpec = Field(default_factory=InjectSpec)
    vllm: VllmSpec = Field(default_factory=VllmSpec)
    images: ImageSpec = Field(default_factory=ImageSpec)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, value):
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if not value:
            raise ValueError("a recipe needs at least one source")
        return value

    def source(self, name: str) -> SourceSpec:
        for spec in self.sources:
            if spec.name == name:
                return spec
        raise RecipeError(
            f"recipe {self.name!r} has no source {name!r}; it has {[s.name for s in self.sources]}"
        )


def resolve_recipe_path(path_or_name: str) -> Path:
    """Accept a path, or the bare name of a recipe shipped in ``recipes/`` (``demo`` → recipes/demo.yaml)."""
    path = Path(path_or_name)
    if path.exists():
        return path
    shipped = RECIPES_DIR / f"{path_or_name}.yaml"
    if shipped.exists():
        return shipped
    raise RecipeError(
        f"recipe {path_or_name!r} not found: give a YAML path or one of "
        f"{sorted(p.stem for p in RECIPES_DIR.glob('*.yaml'))}"
    )


def load_yaml_model(path: Path, model: type[ModelT], what: str, error: type[RecipeError]) -> ModelT:
    """Read a YAML mapping into a pydantic model; every problem names the file and the bad field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        required = [name for name, field in model.model_fields.items() if field.is_required()]
        raise error(f"{path}: {what} is a YAML mapping with at least {', '.join(required)}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()]
        raise error(f"{path}: invalid {what.removeprefix('a ')}\n" + "\n".join(lines)) from err


def load_recipe(path_or_name: str) -> Recipe:
    return load_yaml_model(resolve_recipe_path(path_or_name), Recipe, "a recipe", RecipeError)
