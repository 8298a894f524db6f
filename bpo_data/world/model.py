"""The world model: a tiny LLaVA-1.5 built from configs, and where the trained one ships.

Real classes only — ``LlavaForConditionalGeneration`` wired by ``bpo_data.smoke_model.llava_config``
(a CLIP vision tower, LLaVA's two-layer projector, a Llama language model), a byte-level BPE
tokenizer trained on the world's own text with a single ``<image>`` special token, and a
``LlavaProcessor`` that renders ``bpo_data.prompting.LLAVA_CHAT_TEMPLATE`` — so every engine, the
pipeline and TRL run on it exactly as on ``llava-hf/llava-1.5-7b-hf``; only the size differs.
The trained weights ship in ``bpo_data/world/model/`` (``world_model_dir()``), with
``provenance.json`` saying which world, seed and settings made them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

from bpo_data.prompting import IMAGE_TOKEN, LLAVA_CHAT_TEMPLATE

WORLD_MODEL_ID = "world"
PROVENANCE_FILE = "provenance.json"
# </s> is not id 2: CLIP's text model treats eos_token_id == 2 as a legacy config and pools the wrong token.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of the world model: ~2.2 M parameters (a 0.9 M language model), trained in 14 min on 2 threads.

    96-px pictures in 32-px patches give 9 image tokens, one per cell of the world's 3x3 grid (the
    five positions and the four sign corners), so a whole conversation fits in ~100 tokens.
    """

    image_size: int = 96
    patch_size: int = 32
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    vocab_size: int = 1024
    max_positions: int = 512

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_json(self) -> dict:
        return asdict(self)


def world_model_dir() -> Path:
    """The shipped world model's folder (inside the installed package; no network)."""
    path = Path(str(files("bpo_data.world").joinpath("model")))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the world model is missing from {path}; reinstall bpo-data, or rebuild it with "
            "`bpo-data world train --out bpo_data/world/model` in a source checkout"
        )
    return path


def trained_world(model_dir: Path) -> dict[str, int]:
    """Seed and training scenes of the world a world model was trained on ({} without provenance.json)."""
    import json

    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        return {}
    world = json.loads(path.read_text("utf-8")).get("world", {})
    return {"seed": world.get("seed", 0), "scenes": world.get("splits", {}).get("train", {}).get("scenes")}


def build_tokenizer(texts: Iterable[str], spec: ModelSpec = ModelSpec()):
    """A byte-level BPE trained on ``texts`` (deterministic for the same texts in the same order)."""
    from bpo_data.smoke_model import llava_tokenizer

    return llava_tokenizer(texts, spec.vocab_size, SPECIAL_TOKENS)


def build_processor(tokenizer, spec: ModelSpec = ModelSpec()):
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def vision_config(spec: ModelSpec = ModelSpec()):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_hidden * 4,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )


def build_model(tokenizer, spec: ModelSpec = ModelSpec(), seed: int = 0):
    """A freshly initialised world model (weights drawn from ``seed``)."""
    import torch
    from transformers import LlamaConfig, LlavaForConditionalGeneration

    from bpo_data.smoke_model import llava_config

    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_hidden * 8 // 3 // 16 * 16,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    config = llava_config(
        vision_config(spec), text, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.pad_token_id
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
