"""Recipes: *what* a dataset is made of, apart from *how* one machine runs it.

A recipe is a YAML file validated by pydantic, so a typo or a bad value names the field
(``sources.0.quota: Input should be greater than or equal to 0``) instead of failing later.

The top level says what is made — sources, quotas, seed, the MLLM, negative ratios, noise, the
injector and its prompts, validation, filters — and is the only part a resume compares: a
rerun into the same folder must make the same pairs. ``run:`` says how this machine makes them —
engines, batch sizes, concurrency, device, vLLM settings — and may change between runs into one
folder (hf today, vllm tomorrow; a smaller batch after an out-of-memory), because it does not
change which pairs are made.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bpo_data import resources

ModelT = TypeVar("ModelT", bound=BaseModel)

# Pixels above this are refused before decoding (Pillow's bomb guard stops at 179M; a 64M-pixel RGB
# image is ~190 MB decoded, which is as much as one shard should hold for a single unit).
DEFAULT_MAX_PIXELS = 64_000_000
# LLaVA's processor scales the short side up to 336 px before cropping, so memory grows with the
# aspect ratio: 2000x1 takes ~2.5 GB. Photos, posters and panoramas stay well under 20:1.
DEFAULT_MAX_ASPECT_RATIO = 20.0


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

    def negative_kinds(self) -> list[str]:
        """The negative types this source can get (``both`` makes one pair of each)."""
        if self.negatives == "both":
            return ["weaken", "inject"]
        return [kind for kind in ("weaken", "inject") if self.negatives.get(kind, 0.0) > 0]


class NoiseSpec(_Strict):
    """DDPM forward noise on the image (DESIGN.md): step 0 = clean = the 'self-generated' ablation."""

    step: int = Field(500, ge=0, le=999)
    schedule: Literal["sigmoid", "linear"] = "sigmoid"
    space: Literal["pixel", "features"] = "pixel"
    steps_total: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _step_in_schedule(self):
        if self.step >= self.steps_total:
            raise ValueError(f"step {self.step} is outside a schedule of {self.steps_total} steps")
        return self


class WeakenSpec(_Strict):
    """What the weakened model sees (noise) and how its answer is sampled."""

    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    sampling: SamplingParams = Field(default_factory=SamplingParams)


class ValidationSpec(_Strict):
    min_length_ratio: float = Field(0.5, gt=0.0)
    max_length_ratio: float = Field(2.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError("min_length_ratio must be below max_length_ratio")
        return self


class InjectSpec(_Strict):
    """How rejected answers are rewritten with plausible errors.

    ``injector: llm`` asks a language model through the prompt files — ``model: null`` is the MLLM's
    own language model, text only, as in the paper; another model is reached through an
    OpenAI-compatible server (``run.inject.engine: openai``). ``injector: rules`` needs no model.
    """

    injector: Literal["llm", "rules"] = "llm"
    model: str | None = None
    prompts: dict[Literal["description", "qa"], str] = Field(
        default_factory=lambda: {"description": "description", "qa": "qa"}
    )
    sampling: SamplingParams | None = None
    validation: ValidationSpec = Field(default_factory=ValidationSpec)


class ImageSpec(_Strict):
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="larger images are rejected as image_too_large"
    )
    max_aspect_ratio: float = Field(
        DEFAULT_MAX_ASPECT_RATIO,
        ge=1.0,
        description="longer side / shorter side; beyond it an image is rejected as image_aspect_ratio",
    )


class TextSpec(_Strict):
    """Bounds on the text a unit carries: what any model is asked, and what training will read.

    Counted in characters, not tokens, so that which pairs exist never depends on an engine's
    tokenizer (and needs none to be loaded). A unit past a bound is a reject with its reason; with
    ``turns: all`` the prompt bound also bounds what one long conversation can write, since each
    turn's prompt repeats the turns before it.
    """

    max_prompt_chars: int = Field(
        12_000,
        ge=1,
        description="earlier turns + question; about 3k tokens of LLaVA-1.5's 4k context, beside "
        "576 image tokens and the answer (prompt_too_long)",
    )
    max_answer_chars: int = Field(
        8_000,
        ge=1,
        description="the ground-truth answer, which the injection prompt repeats (answer_too_long)",
    )


# FilterSpec fields that read a pair's evidence (what bpo_data.verify measures), and what each reads.
EVIDENCE_THRESHOLDS = {
    "min_clip_margin": "clip_chosen - clip_rejected",
    "min_clip_chosen": "clip_chosen",
    "max_clip_rejected": "clip_rejected",
    "min_objects_added": "objects_added",
    "min_claims_added": "claims_added",
}


class FilterSpec(_Strict):
    """A filter step after the negatives are made: a pair that misses a threshold becomes a reject.

    Each filter holds one or more thresholds on what is measured of a pair; ``negative_type``
    limits it to one kind of pair. The reject's reason names the threshold (``filter:max_text_overlap``).
    """

    negative_type: Literal["weaken", "inject"] | None = None
    min_rejected_words: int | None = Field(None, ge=0, description="words in the rejected answer")
    max_rejected_words: int | None = Field(None, ge=1)
    max_text_overlap: float | None = Field(
        None, ge=0.0, le=1.0, description="word-sequence similarity of chosen and rejected (1 = same)"
    )
    # Evidence thresholds (bpo_data.verify): read what the recipe's `verify:` step measured.
    min_clip_margin: float | None = Field(
        None, ge=-2.0, le=2.0, description="clip_chosen - clip_rejected at least this (cosines, -2..2)"
    )
    min_clip_chosen: float | None = Field(
        None, ge=-1.0, le=1.0, description="the chosen answer's CLIP cosine at least this (a wrong caption)"
    )
    max_clip_rejected: float | None = Field(None, ge=-1.0, le=1.0)
    min_objects_added: int | None = Field(
        None, ge=0, description="COCO objects the rejected answer names and the chosen does not"
    )
    min_claims_added: int | None = Field(
        None,
        ge=0,
        description="objects, colours, counts, places, sizes or sign text the rejected answer states "
        "and neither the chosen answer nor the question does",
    )

    @model_validator(mode="after")
    def _has_a_threshold(self):
        if not self.thresholds():
            names = [n for n in type(self).model_fields if n != "negative_type"]
            raise ValueError(f"a filter needs at least one threshold: {', '.join(names)}")
        return self

    def thresholds(self) -> dict[str, float]:
        return {
            name: value
            for name, value in self.model_dump(exclude={"negative_type"}).items()
            if value is not None
        }


class VerifySpec(_Strict):
    """The verifier that measures each pair's evidence (``bpo_data.verify``); part of *what* is made.

    ``clip_model``: an open-clip model name (with ``clip_pretrained``), a local folder in open-clip's
    layout, or ``world`` (the miniature world's verifier shipped with bpo-data); null measures only
    the object diff and text overlap (no CLIP, no ``open-clip-torch`` needed).
    """

    clip_model: str | None = "ViT-B-32"
    clip_pretrained: str | None = "laion2b_s34b_b79k"


class VerifyRun(_Strict):
    batch_size: int = Field(64, ge=1, description="pairs per CLIP batch")
    device: str = Field("cpu", description="where CLIP runs (it is small beside the MLLM)")


class WeakenRun(_Strict):
    engine: Literal["hf", "vllm"] = "hf"
    batch_size: int = Field(
        16, ge=1, description="hf: left-padded rows per generate call (vllm streams: run.vllm.in_flight)"
    )


class InjectRun(_Strict):
    engine: Literal["hf", "vllm", "openai"] = "hf"
    base_url: str | None = Field(None, description="the OpenAI-compatible server (engine openai)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    batch_size: int = Field(
        16, ge=1, description="hf: rows per generate call (openai and vllm stream; rules batch 256+)"
    )
    concurrency: int = Field(
        8, ge=1, description="openai: requests at the server at all times, independent of any batch"
    )
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(120.0, gt=0)


class VllmSpec(_Strict):
    """The vLLM engine: one per shard, shared by weakening and injection, fed continuously."""

    gpu_memory_utilization: float = Field(
        0.85, gt=0.0, le=1.0, description="below vLLM's 0.9: the HF vision tower shares the GPU"
    )
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(4096, ge=1, description="LLaVA-1.5's context; null = the model's")
    enforce_eager: bool = Field(False, description="skip CUDA graph capture: faster start, slower decode")
    in_flight: int = Field(
        512,
        ge=1,
        description="prompts kept submitted to vLLM: above what its scheduler runs at once (≤ 256 "
        "sequences by default), so a finished sequence's slot is refilled at the next step",
    )
    enable_prefix_caching: bool = Field(
        True, description="injection prompts share 612–675 tokens of system text and examples: computed once"
    )
    embed_batch: int = Field(
        32, ge=1, description="images per vision-tower call on the prefetch thread (weakening)"
    )


class RunSettings(_Strict):
    """How this machine runs the recipe; free to change between runs into one folder."""

    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="torch threads for a model on the CPU (null: torch's default, one per core); 1 suits "
        "a tiny model, whose threads only wait on each other when other work shares the cores",
    )
    trust_image_dirs: list[str] = Field(
        default_factory=list,
        description="folders outside an image root that its symbolic links may lead to (--trust-image-dir)",
    )
    weaken: WeakenRun = Field(default_factory=WeakenRun)
    inject: InjectRun = Field(default_factory=InjectRun)
    vllm: VllmSpec = Field(default_factory=VllmSpec)
    verify: VerifyRun = Field(default_factory=VerifyRun)


# Fields that sat beside the "what" before run settings had a section of their own:
# (old location, new location) — read with a warning for one release.
_MOVED = (
    (("device",), ("run", "device")),
    (("dtype",), ("run", "dtype")),
    (("vllm",), ("run", "vllm")),
    (("weaken", "engine"), ("run", "weaken", "engine")),
    (("weaken", "batch_size"), ("run", "weaken", "batch_size")),
    (("inject", "base_url"), ("run", "inject", "base_url")),
    (("inject", "api_key_env"), ("run", "inject", "api_key_env")),
    (("inject", "batch_size"), ("run", "inject", "batch_size")),
    (("inject", "concurrency"), ("run", "inject", "concurrency")),
    (("inject", "max_retries"), ("run", "inject", "max_retries")),
    (("inject", "timeout_s"), ("run", "inject", "timeout_s")),
)


def _migrate(raw: dict[str, Any]) -> list[str]:
    """Move old-layout fields into ``run`` in place; returns what moved, for the warning."""
    moved = []
    inject = raw.get("inject")
    if isinstance(inject, dict) and "engine" in inject:
        engine = inject.pop("engine")
        if engine == "rules":
            inject.setdefault("injector", "rules")
            moved.append("inject.engine: rules → inject.injector: rules")
        else:
            raw.setdefault("run", {}).setdefault("inject", {})["engine"] = engine
            moved.append("inject.engine → run.inject.engine")
    for old, new in _MOVED:
        parent = raw
        for part in old[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or old[-1] not in parent:
            continue
        target = raw
        for part in new[:-1]:
            target = target.setdefault(part, {})
        target[new[-1]] = parent.pop(old[-1])
        moved.append(f"{'.'.join(old)} → {'.'.join(new)}")
    return moved


class Recipe(_Strict):
    name: str
    version: str = "0.1.0"
    seed: int = 0
    model: str = "llava-hf/llava-1.5-7b-hf"
    sources: list[SourceSpec]
    weaken: WeakenSpec = Field(default_factory=WeakenSpec)
    inject: InjectSpec = Field(default_factory=InjectSpec)
    images: ImageSpec = Field(default_factory=ImageSpec)
    text: TextSpec = Field(default_factory=TextSpec)
    verify: VerifySpec | None = Field(
        None,
        description="measure each pair's evidence (objects added/removed, CLIP scores) before the filters",
    )
    filters: list[FilterSpec] = Field(default_factory=list)
    run: RunSettings = Field(default_factory=RunSettings)

    @model_validator(mode="before")
    @classmethod
    def _old_layout(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
            moved = _migrate(raw)
            if moved:
                warnings.warn(
                    "recipe fields moved under 'run:' (how a machine runs it, not compared on resume): "
                    + "; ".join(moved)
                    + ". The old spelling is read for one more release; update the recipe.",
                    FutureWarning,
                    stacklevel=2,
                )
        return raw

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, value):
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if not value:
            raise ValueError("a recipe needs at least one source")
        return value

    @model_validator(mode="after")
    def _injector_reaches_its_model(self):
        engine = self.run.inject.engine
        if self.inject.injector == "llm" and engine in ("hf", "vllm") and self.inject.model:
            if self.inject.model != self.model:
                raise ValueError(
                    f"inject.model {self.inject.model!r} with run.inject.engine {engine!r}: these engines "
                    "rewrite with the MLLM's own language model (as in the paper); to rewrite with another "
                    "model, serve it (vLLM, transformers serve) and set run.inject.engine to 'openai'"
                )
        if self.inject.injector == "llm" and engine == "openai" and not self.inject.model:
            raise ValueError(
                "run.inject.engine 'openai' needs inject.model (or --inject-model): the served model's name"
            )
        return self

    @model_validator(mode="after")
    def _evidence_is_measured(self):
        for i, spec in enumerate(self.filters):
            wanted = [name for name in spec.thresholds() if name in EVIDENCE_THRESHOLDS]
            if not wanted:
                continue
            if self.verify is None:
                raise ValueError(
                    f"filters.{i} bounds {', '.join(wanted)}, which the verify step measures: add "
                    "`verify: {clip_model: ViT-B-32, clip_pretrained: laion2b_s34b_b79k}` to the recipe"
                )
            clip = [name for name in wanted if "clip" in name]
            if clip and self.verify.clip_model is None:
                raise ValueError(
                    f"filters.{i} bounds {', '.join(clip)}, but verify.clip_model is null: name a CLIP model"
                )
        return self

    def source(self, name: str) -> SourceSpec:
        for spec in self.sources:
            if spec.name == name:
                return spec
        raise RecipeError(
            f"recipe {self.name!r} has no source {name!r}; it has {[s.name for s in self.sources]}"
        )

    def what(self) -> dict[str, Any]:
        """The part that decides which pairs are made: what a resume must find unchanged.

        Data paths are left out (another machine mounts them elsewhere); the manifest checks the
        data files themselves by content.
        """
        data = self.model_dump(mode="json", exclude={"run"})
        for source in data["sources"]:
            source.pop("data", None)
            source.pop("image_root", None)
        return data

    def negative_kinds(self, sources: list[str] | None = None) -> set[str]:
        """The negative types the selected sources need (all sources when ``sources`` is None)."""
        return {
            kind
            for spec in self.sources
            if sources is None or spec.name in sources
            for kind in spec.negative_kinds()
        }


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths where two recipe dumps differ (``weaken.noise.step``), for messages a person reads."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".") or "(top level)"]


def error_lines(err: ValidationError, names: dict[str, str] | None = None) -> list[str]:
    """One line per pydantic error, located by field path — or by the CLI flag that set it."""
    lines = []
    for error in err.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        shown = next((flag for path, flag in (names or {}).items() if where.startswith(path)), where)
        lines.append(f"{shown}: {error['msg']}")
    return lines


def resolve_recipe_path(path_or_name: str) -> Path:
    """A path, or the bare name of a recipe shipped with the package (``demo`` → recipes/demo.yaml)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = resources.recipe_file(path_or_name)
    if shipped is not None:  # a shipped name wins over a folder of that name (out/demo, say)
        return shipped
    if path.is_dir():
        raise RecipeError(f"--recipe {path_or_name!r} is a folder; give a recipe YAML file or a shipped name")
    raise RecipeError(
        f"recipe {path_or_name!r} not found: give a YAML path or one of {resources.recipe_names()}"
    )


def load_yaml_model(path: Path, model: type[ModelT], what: str, error: type[RecipeError]) -> ModelT:
    """Read a YAML mapping into a pydantic model; every problem names the file and the bad field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read {what} ({err})") from err
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        required = [name for name, field in model.model_fields.items() if field.is_required()]
        raise error(f"{path}: {what} is a YAML mapping with at least {', '.join(required)}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = "\n".join(f"  {line}" for line in error_lines(err))
        raise error(f"{path}: invalid {what.removeprefix('a ')}\n{lines}") from err


def load_recipe(path_or_name: str) -> Recipe:
    return load_yaml_model(resolve_recipe_path(path_or_name), Recipe, "a recipe", RecipeError)


# The flags of `bpo-data generate` / `launch` that set recipe fields, and where each one goes.
# Errors in a value name the flag, not the field path.
SETTING_FLAGS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "injector": ("inject", "injector"),
    "inject_model": ("inject", "model"),
    "weaken_engine": ("run", "weaken", "engine"),
    "inject_engine": ("run", "inject", "engine"),
    "base_url": ("run", "inject", "base_url"),
    "device": ("run", "device"),
    "weaken_batch_size": ("run", "weaken", "batch_size"),
    "inject_batch_size": ("run", "inject", "batch_size"),
    "concurrency": ("run", "inject", "concurrency"),
    "trust_image_dirs": ("run", "trust_image_dirs"),
}


def with_settings(recipe: Recipe, **settings: Any) -> Recipe:
    """The recipe with flag values applied (None = keep the recipe's); a bad value names its flag."""
    unknown = sorted(set(settings) - set(SETTING_FLAGS))
    if unknown:
        raise RecipeError(f"unknown settings {unknown}; known: {sorted(SETTING_FLAGS)}")
    raw = recipe.model_dump()
    for name, value in settings.items():
        if value is None:
            continue
        *parents, leaf = SETTING_FLAGS[name]
        target = raw
        for part in parents:
            target = target[part]
        target[leaf] = value
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        flags = {
            ".".join(path): f"--{name.replace('_', '-')}"
            for name, path in SETTING_FLAGS.items()
            if settings.get(name) is not None
        }
        raise RecipeError("; ".join(error_lines(err, flags))) from err
