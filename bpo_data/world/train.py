"""Train the world model from scratch on a world's training split, on CPU, with the stock Trainer.

The examples are the training split's three source files as written (ShareGPT4V captions, LLaVAR
sign questions, LLaVA-Instruct conversations), each record laid out exactly as generation will
prompt it — ``bpo_data.prompting.llava_prompt``: ``USER: <image>\\n{q1} ASSISTANT: {a1} USER: {q2}
ASSISTANT: {a2}</s>`` — with the loss on the answers only. A whole conversation is one example
(the picture is encoded once for all its answers, the cheap way to train on CPU); only the last
answer ends in ``</s>``, so the model learns to stop where a generation prompt ends and never
sees a token the prompt layout does not have.

Everything is seeded (world, tokenizer, initial weights, data order); the same command on the
same machine gives the same weights. Across machines, float sums may differ in the last bits.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import torch
from PIL import Image
from transformers import Trainer, TrainingArguments

from bpo_data.prompting import IMAGE_TOKEN, llava_prompt, strip_image_marker
from bpo_data.world.make import SOURCE_FILES, read_scenes, scene_image
from bpo_data.world.model import PROVENANCE_FILE, ModelSpec, build_model, build_processor, build_tokenizer
from bpo_data.world.scenes import draw_scene
from bpo_data.world.vision import (
    VISION_FEATURE_LAYER,
    VisionSettings,
    pretrain_vision_tower,
    pretraining_scenes,
)

IGNORE = -100


@dataclass(frozen=True)
class TrainSettings:
    """How the model is trained; recorded in ``provenance.json`` beside the weights."""

    seed: int = 0
    epochs: float = 1.0  # used when max_steps <= 0
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    # > 0 overrides epochs; 5,400 x 16 is ~5.5 epochs of a 6,000-scene world. Half as many left a model
    # that repeated a sentence in 18 of 100 descriptions, which DPO on its own answers learns as "stop".
    max_steps: int = 5400
    threads: int = 2
    spec: ModelSpec = field(default_factory=ModelSpec)
    vision: VisionSettings = field(default_factory=VisionSettings)


@dataclass
class Example:
    """One source record: its picture and its (question, answer) turns."""

    image: Path
    turns: list[tuple[str, str]]
    source: str


def read_examples(split_dir: Path) -> list[Example]:
    """Every record of the split's three source files, in file order."""
    examples = []
    for fmt, (data, images) in SOURCE_FILES.items():
        path = split_dir / data
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: make the world first with `bpo-data world make --out DIR`"
            )
        text = path.read_text("utf-8")
        records = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(x) for x in text.splitlines() if x]
        )
        for record in records:
            messages = record["conversations"]
            turns = [
                (strip_image_marker(messages[i]["value"]), messages[i + 1]["value"])
                for i in range(0, len(messages), 2)
            ]
            examples.append(Example(split_dir / images / record["image"], turns, fmt))
    return examples


def layout(turns: list[tuple[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The training text of a conversation and the character spans the loss is computed on."""
    messages: list[dict[str, str]] = []
    text, spans = "", []
    for question, answer in turns:
        messages.append({"role": "user", "content": question})
        prompt = llava_prompt(messages)
        if not prompt.startswith(text):
            raise AssertionError("llava_prompt no longer extends the earlier turns; update layout()")
        text = prompt + " " + answer
        spans.append((len(prompt), len(text)))
        messages.append({"role": "assistant", "content": answer})
    return text, spans


class WorldDataset(torch.utils.data.Dataset):
    """Tokenised examples (answers labelled) and their decoded pictures, held in memory."""

    def __init__(self, examples: list[Example], tokenizer, image_tokens: int):
        self.images: dict[Path, Image.Image] = {}
        texts, all_spans = [], []
        for example in examples:
            text, spans = layout(example.turns)
            text += tokenizer.eos_token
            spans[-1] = (spans[-1][0], len(text))
            texts.append(text.replace(IMAGE_TOKEN, IMAGE_TOKEN * image_tokens))
            all_spans.append(
                [
                    (s + len(IMAGE_TOKEN) * (image_tokens - 1), e + len(IMAGE_TOKEN) * (image_tokens - 1))
                    for s, e in spans
                ]
            )
            if example.image not in self.images:
                with Image.open(example.image) as image:
                    self.images[example.image] = image.convert("RGB")
        encoded = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=False)
        self.rows = []
        for example, ids, offsets, spans in zip(
            examples, encoded["input_ids"], encoded["offset_mapping"], all_spans
        ):
            labels = [
                token if any(start <= s and e <= end for start, end in spans) else IGNORE
                for token, (s, e) in zip(ids, offsets)
            ]
            self.rows.append({"input_ids": ids, "labels": labels, "image": example.image})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


class Collator:
    """Right-pads a batch and turns its pictures into pixel values with the model's own processor."""

    def __init__(self, processor, images: dict[Path, Image.Image]):
        self.processor, self.images = processor, images
        self.pad = processor.tokenizer.pad_token_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad)
        labels = torch.full((len(rows), width), IGNORE)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            mask[i, :n] = 1
        pixels = self.processor.image_processor([self.images[r["image"]] for r in rows], return_tensors="pt")
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "pixel_values": pixels["pixel_values"],
        }


def picture_pixels(processor, pictures: Iterable[Path | Image.Image], chunk: int = 512) -> torch.Tensor:
    """The pictures (files, or images drawn as they are taken) as the model's own processor
    normalises them, ``chunk`` at a time (float16 to halve the memory)."""
    parts = []
    remaining = iter(pictures)
    while batch := list(islice(remaining, chunk)):
        images = []
        for picture in batch:
            if isinstance(picture, Image.Image):
                images.append(picture)
                continue
            with Image.open(picture) as image:
                images.append(image.convert("RGB"))
        parts.append(processor.image_processor(images, return_tensors="pt")["pixel_values"].half())
    return torch.cat(parts)


def centre_projector(model, pixels: torch.Tensor, batch_size: int = 256) -> None:
    """Fold the mean vision feature into the projector's first bias, so its input starts centred.

    A pre-LayerNorm tower's features carry a large component shared by every picture; uncentred,
    it dominates the projector's output and the language model sees almost the same tokens for
    every picture (what an earlier, contrastive stage 1 measured: the held-out caption loss was
    the same with a scene's own picture and with another's).
    """
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            states = tower(pixel_values=pixels[start : start + batch_size].float(), output_hidden_states=True)
            features = states.hidden_states[VISION_FEATURE_LAYER][:, 1:]
            total = total + features.sum((0, 1))
            count += features.shape[0] * features.shape[1]
        projector.linear_1.bias -= projector.linear_1.weight @ (total / count)


def freeze_vision_tower(model) -> int:
    """Keep the stage-1 tower as it is (LLaVA keeps its CLIP encoder frozen); return how many weights."""
    frozen = list(model.model.vision_tower.parameters())
    for param in frozen:
        param.requires_grad_(False)
    return sum(p.numel() for p in frozen)


def image_gain(model, processor, examples: list[Example], batch_size: int = 16) -> dict:
    """Held-out loss with each example's own picture and with another's: how much the picture is used."""
    dataset = WorldDataset(examples, processor.tokenizer, model.config.image_seq_length)
    collate = Collator(processor, dataset.images)
    own = other = 0.0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            batch = collate(dataset.rows[start : start + batch_size])
            own += model(**batch).loss.item()
            batch["pixel_values"] = batch["pixel_values"].roll(1, 0)
            other += model(**batch).loss.item()
    batches = -(-len(dataset) // batch_size)
    return {"own_picture_loss": own / batches, "other_picture_loss": other / batches}


def train_world_model(
    world_dir: Path, out_dir: Path, settings: TrainSettings = TrainSettings(), log=print
) -> dict:
    """Stage 1 (the vision tower reads the scene graph), then stage 2 (projector and language model).

    Trains on ``world_dir/train``; saves model, processor and ``provenance.json`` into ``out_dir``
    and returns the provenance.
    """
    torch.set_num_threads(settings.threads)
    started, cpu_started = time.time(), time.process_time()
    examples = read_examples(world_dir / "train")
    random.Random(settings.seed).shuffle(examples)
    # The tokenizer learns the prompt template too, so "USER:" and "ASSISTANT:" are a few tokens each.
    tokenizer = build_tokenizer([layout(e.turns)[0] for e in examples], settings.spec)
    processor = build_processor(tokenizer, settings.spec)
    dataset = WorldDataset(examples, tokenizer, settings.spec.image_tokens)
    model = build_model(tokenizer, settings.spec, settings.seed)
    log(
        f"world model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; "
        f"{len(dataset)} examples from {len(dataset.images)} pictures"
    )
    held_out = {split: read_scenes(world_dir / split)[:256] for split in ("eval_clean", "eval_violating")}
    held_out_pixels = {
        split: picture_pixels(processor, [scene_image(world_dir / split, s) for s in scenes])
        for split, scenes in held_out.items()
    }
    pretraining = pretraining_scenes(settings.vision.pictures, settings.seed)
    with tempfile.TemporaryDirectory(prefix="bpo-world-trainer-") as scratch:
        log(
            f"stage 1: the vision tower learns to read each cell "
            f"({settings.vision.steps} steps on {len(pretraining)} colour-balanced pictures)"
        )
        stage1 = pretrain_vision_tower(
            pretraining,
            picture_pixels(processor, (draw_scene(s) for s in pretraining)),  # drawn a chunk at a time
            model.model.vision_tower,
            settings.vision,
            settings.seed,
            held_out["eval_clean"],
            held_out_pixels["eval_clean"],
            scratch,
            violating=held_out["eval_violating"],
            violating_pixels=held_out_pixels["eval_violating"],
        )
        accuracy = stage1["held_out_accuracy"]
        log("stage 1 held-out accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
        log(
            "stage 1 class accuracy by colour (typical / atypical / no typical colour): "
            + "; ".join(
                f"{split} " + " / ".join("-" if v is None else f"{v:.3f}" for v in groups.values())
                for split, groups in stage1["class_accuracy_by_colour"].items()
            )
        )
        train_pictures = [scene_image(world_dir / "train", s) for s in read_scenes(world_dir / "train")]
        centre_projector(model, picture_pixels(processor, train_pictures))
        frozen = freeze_vision_tower(model)
        log(
            f"stage 2: projector and language model on {len(dataset)} examples "
            f"({frozen / 1e6:.2f} M weights of the vision tower fixed)"
        )
        trainer = Trainer(
            model=model,
            args=_stage2_args(settings, scratch),
            train_dataset=dataset,
            data_collator=Collator(processor, dataset.images),
        )
        result = trainer.train()
    model.eval()
    held_out_captions = [e for e in read_examples(world_dir / "eval_clean") if e.source == "sharegptv"][:64]
    gain = image_gain(model, processor, held_out_captions)
    log(
        f"held-out caption loss {gain['own_picture_loss']:.3f} with its own picture, "
        f"{gain['other_picture_loss']:.3f} with another one"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    provenance = {
        "world": json.loads((world_dir / "world.json").read_text("utf-8")),
        "settings": asdict(settings),
        "examples": len(dataset),
        "pictures": len(dataset.images),
        "stage1": stage1,
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "held_out_caption_loss": gain,
        "wall_s": round(time.time() - started, 1),
        "cpu_s": round(time.process_time() - cpu_started, 1),
    }
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
    return provenance


def _stage2_args(settings: TrainSettings, output_dir: str):
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=settings.batch_size,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=settings.warmup_ratio,
        weight_decay=settings.weight_decay,
        adam_beta2=0.98,
        logging_steps=50,
        save_strategy="no",
        report_to=[],
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",
        disable_tqdm=True,
    )
