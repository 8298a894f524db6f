"""A tiny LLaVA-1.5 built locally from configs, for the demo, tests and CPU benchmarks.

It uses the real classes (``LlavaForConditionalGeneration`` from ``LlavaConfig(CLIPVisionConfig,
LlamaConfig)``, a ``LlavaProcessor`` with one additional image token, a byte-level BPE tokenizer
with a single ``<image>`` special token), so every code path is the one a user runs with
``llava-hf/llava-1.5-7b-hf``; only the size differs. Its weights are random: it is a *smoke model*
and its answers are noise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SMOKE_MODEL_ID = "smoke"
SMOKE_VERSION = "1"

_CORPUS = [
    "USER: What is in the image? ASSISTANT: A red circle is left of a blue square on a white background.",
    "Describe the picture in detail. There are two green triangles above a yellow car near a tree.",
    "How many dogs are there? Three. Is the cat on the table? Yes, the cat sits on the wooden table.",
    "The sign reads OPEN 24 HOURS. The bus number is 42. A person holds an umbrella next to a bicycle.",
    "Sure, here is the modified description: a black horse stands behind a fence under a cloudy sky.",
    "left right above below small large round square orange purple pink white black gray brown",
    "person bicycle car motorcycle airplane bus train truck boat bench bird cat dog horse sheep cow",
    "bottle cup fork knife spoon bowl banana apple sandwich orange pizza cake chair couch bed table",
    "0 1 2 3 4 5 6 7 8 9 one two three four five six seven eight nine ten",
]


@dataclass(frozen=True)
class SmokeSpec:
    """Sizes of the smoke model; the defaults keep a CPU generation step in the millisecond range."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 32
    text_hidden: int = 64
    layers: int = 2
    vocab_size: int = 600
    seed: int = 0


def default_cache_dir() -> Path:
    root = os.environ.get("BPO_DATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bpo-data")
    return Path(root) / f"smoke-llava-v{SMOKE_VERSION}"


def llava_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str]):
    """A byte-level BPE trained on ``texts`` with LLaVA-1.5's special tokens and chat template.

    Shared by the smoke model and the world model: deterministic for the same texts in the same order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from bpo_data.prompting import IMAGE_TOKEN, LLAVA_CHAT_TEMPLATE

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def build_smoke_model(out_dir: str | os.PathLike, spec: SmokeSpec = SmokeSpec()) -> Path:
    """Build, save and return a directory loadable with ``from_pretrained`` (model + processor)."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from bpo_data.prompting import IMAGE_TOKEN, LLAVA_CHAT_TEMPLATE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = llava_tokenizer(_CORPUS, spec.vocab_size, ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN))
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_hidden * 2,
        num_hidden_layers=spec.layers,
        num_attention_heads=2,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_hidden * 2,
        num_hidden_layers=spec.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = llava_config(vision, text, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.pad_token_id)
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def ensure_smoke_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the cached smoke model directory, building it on first use (no network)."""
    target = Path(cache_dir) if cache_dir else default_cache_dir()
    if not (target / "config.json").exists() or not (target / "processor_config.json").exists():
        # Build aside and rename, so concurrent shards never load a half-written directory.
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        build_smoke_model(tmp)
        try:
            tmp.replace(target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    return target


def llava_15_7b_config(image_token_index: int = 32000, pad_token_id: int = 32001):
    """The sizes of llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14-336 + Llama-2-7B), for benchmarks and tests."""
    from transformers import CLIPVisionConfig, LlamaConfig

    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        vocab_size=32064,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=pad_token_id,
    )
    return llava_config(vision, text, image_token_index, pad_token_id)


def llava_config(vision, text, image_token_index: int, pad_token_id: int):
    """LLaVA-1.5's wiring of a vision tower to a language model: the penultimate CLIP layer, CLS dropped."""
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_index,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        pad_token_id=pad_token_id,
    )
