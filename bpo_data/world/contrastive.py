"""Stage 1: contrastive (CLIP) pre-training of the world model's vision tower, as LLaVA starts from CLIP.

A language model and a vision tower that both start from random weights do not find each other on
CPU budgets: the language model learns the captions' text long before the image helps, and then
describes every picture alike. So, as LLaVA starts from a CLIP encoder, the vision tower is first
trained with ``CLIPModel(return_loss=True)`` on (picture, short caption) pairs of the training
split, and its weights are copied into the LLaVA model. The caption is the scene graph in words
("large brown dog left. small red ball bottom. sign OPEN top left."). Each batch pairs every scene
with a twin that differs in one detail (a colour, a position, a count, the sign's text), so the
tower must see details, not just which classes are present. Twins change no class: the language
prior is learned later, from the training text alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bpo_data.world.params import WORLD, WorldParams
from bpo_data.world.scenes import Scene, draw_scene


@dataclass(frozen=True)
class ContrastiveSettings:
    steps: int = 500
    scenes_per_batch: int = 64  # each with its twin: 128 pictures per batch
    learning_rate: float = 1e-3
    text_layers: int = 2


def scene_caption(scene: Scene, params: WorldParams = WORLD) -> str:
    """The scene graph as a short text, objects in a fixed position order."""
    order = {p: i for i, p in enumerate(params.positions)}
    parts = []
    for obj in sorted(scene.objects, key=lambda o: order[o.position]):
        count = f"{obj.count} " if obj.count > 1 else ""
        parts.append(f"{count}{obj.size} {obj.colour} {obj.cls} {obj.position}.")
    if scene.sign is not None:
        parts.append(f"sign {scene.sign.text} {scene.sign.corner}.")
    return " ".join(parts)


def twin(scene: Scene, rng: random.Random, params: WorldParams = WORLD) -> Scene:
    """The same scene with one detail changed (colour, position, count or sign text), same classes."""
    objects = list(scene.objects)
    i = rng.randrange(len(objects))
    obj = objects[i]
    spec = params.cls(obj.cls)
    free = [p for p in params.positions if p not in {o.position for o in objects}]
    changes = ["colour"] + (["position"] if free else []) + (["count"] if spec.countable else [])
    if scene.sign is not None:
        changes.append("sign")
    change = rng.choice(changes)
    if change == "sign":
        texts = [t for t in (*params.sign_words, *params.sign_numbers) if t != scene.sign.text]
        return replace(scene, sign=replace(scene.sign, text=rng.choice(texts)))
    if change == "colour":
        obj = replace(obj, colour=rng.choice([c for c in spec.colours if c != obj.colour]))
    elif change == "position":
        obj = replace(obj, position=rng.choice(free))
    else:
        count = rng.choice([c for c in params.count_weights if c != obj.count])
        obj = replace(obj, count=count, size="small" if count > 1 else obj.size)
    objects[i] = obj
    return replace(scene, objects=tuple(objects))


class _Pairs:
    """Each training scene with its twin (a map-style dataset for the Trainer)."""

    def __init__(self, scenes: Sequence[Scene], seed: int):
        self.scenes, self.seed = scenes, seed

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[Scene, Scene]:
        scene = self.scenes[index]
        return scene, twin(scene, random.Random(f"bpo-world-twin/{self.seed}/{scene.id}"))


class _Collator:
    def __init__(self, processor, params: WorldParams):
        self.processor, self.params = processor, params

    def __call__(self, pairs: list[tuple[Scene, Scene]]) -> dict:
        scenes = [s for pair in pairs for s in pair]
        text = self.processor.tokenizer(
            [scene_caption(s, self.params) + self.processor.tokenizer.eos_token for s in scenes],
            padding="longest",
            padding_side="right",
            add_special_tokens=False,
            return_tensors="pt",
        )
        pixels = self.processor.image_processor(
            [draw_scene(s, self.params) for s in scenes], return_tensors="pt"
        )
        return {
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "pixel_values": pixels["pixel_values"],
            "return_loss": True,
        }


def pretrain_vision_tower(
    scenes: Sequence[Scene],
    processor,
    vision_config,
    settings: ContrastiveSettings,
    seed: int,
    work_dir: str,
    params: WorldParams = WORLD,
) -> dict:
    """Train a CLIPModel on the scenes; return its vision tower's weights (``CLIPVisionModel`` keys)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, Trainer, TrainingArguments

    tokenizer = processor.tokenizer
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=vision_config.hidden_size,
        intermediate_size=vision_config.hidden_size * 4,
        num_hidden_layers=settings.text_layers,
        num_attention_heads=vision_config.num_attention_heads,
        max_position_embeddings=96,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=vision_config.projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    args = TrainingArguments(
        output_dir=work_dir,
        per_device_train_batch_size=settings.scenes_per_batch,
        max_steps=settings.steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.05,
        logging_steps=50,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=_Pairs(scenes, seed), data_collator=_Collator(processor, params)
    )
    result = trainer.train()
    return {
        "state_dict": model.vision_model.state_dict(),
        "loss": result.training_loss,
        "steps": result.global_step,
    }
