"""The world verifier: a tiny open-clip CLIP trained on the miniature world, shipped in ``world_clip/``.

A real checkpoint cannot be downloaded here, and verification must still be measured (issue 14), so
this trains one on the world's pictures on CPU (900 steps: 31 CPU-minutes on 2 shared cores, see
``world_clip/provenance.json``), with open-clip's own classes: the
model is ``open_clip.CLIP`` built from ``WORLD_CLIP_CONFIG``, the loss ``open_clip.loss.ClipLoss``,
and the folder it writes (``open_clip_config.json`` + ``open_clip_model.safetensors``) is open-clip's
own layout, which ``open_clip.create_model_and_transforms("local-dir:…")`` loads like any other.

What it learns from, per step (all seeded):

- scenes of the world's training split (``sample_split("train", …)``, prior and prior-violating
  kinds, so the verifier does not learn the language prior the LLaVA world model is meant to have);
- each scene with a **twin** that differs in one detail — a colour, a size, a position, a count, an
  object swapped, added or removed, the sign's text — both drawn, and both described by the world's
  own text generator with the same random draws, so their texts differ only where the pictures do.
  Each picture's text is one scored segment (``clip.segments``: a description sentence, or a short
  answer with its question), preferably one its twin's texts do not have: the contrast in a batch is
  then between two pictures that differ in exactly what the two texts say;
- a **perturbed text** for each picture (NegCLIP's hard negatives, Yuksekgonul et al. 2023): one
  colour, number, position or object word replaced by another, including common words the world
  never uses (silver, beige, a fork), so that a text naming anything not in the picture scores low.
  These enter the image-to-text softmax as extra columns beside ``ClipLoss``.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bpo_data.coco_objects import coco_synonyms
from bpo_data.verify.clip import segments
from bpo_data.world import language
from bpo_data.world.make import sample_split
from bpo_data.world.params import WORLD, WorldParams
from bpo_data.world.scenes import Scene, SceneObject, Sign, draw_scene

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
PROVENANCE_FILE = "provenance.json"
# open_clip's SimpleTokenizer (shipped with open-clip) has 49,408 tokens; world segments stay under 32.
WORLD_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 96, "patch_size": 16, "width": 96, "layers": 3, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# CLIP's normalisation (open-clip's OPENAI_DATASET_MEAN/STD); no augmentation: left and right matter.
PREPROCESS_CFG = {
    "size": 96,
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
EXTRA_COLOURS = ("orange", "silver", "gold", "golden", "beige", "gray", "violet", "tan")
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven")
NEGATIONS = re.compile(r"\b(no|not|cannot|nothing)\b", re.IGNORECASE)
EXISTENCE = (
    ("Is there a {} in the image?", "No, there is no {} in the image."),
    ("Can you see a {} in the picture?", "No, I cannot see a {}."),
    ("Does the picture contain a {}?", "No, there is no {} in the picture."),
)
PLACES = ("left", "right", "top", "bottom", "centre", "middle", "upper", "lower", "above", "below")


@dataclass(frozen=True)
class WorldClipSettings:
    """How the world verifier is trained; recorded in ``provenance.json`` beside the weights."""

    seed: int = 0
    scenes: int = 6000
    steps: int = 900
    scenes_per_batch: int = 32  # each with its twin: 64 pictures and texts, and 64 perturbed texts
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    threads: int = 2


def twin(scene: Scene, rng: random.Random, params: WorldParams = WORLD) -> Scene:
    """The scene with one detail changed: colour, size, position, count, object, or the sign."""
    objects = list(scene.objects)
    i = rng.randrange(len(objects))
    obj = objects[i]
    spec = params.cls(obj.cls)
    free = [p for p in params.positions if p not in {o.position for o in objects}]
    absent = [c for c in params.class_names if c not in scene.classes]
    changes = ["colour", "swap"] + ["position", "add"] * bool(free) + ["remove"] * (len(objects) > 1)
    changes += ["count"] * spec.countable + ["size"] * (obj.count == 1) + ["sign"]
    change = rng.choice(changes)
    if change == "sign":
        texts = (*params.sign_words, *params.sign_numbers)
        if scene.sign is None:
            sign = Sign(rng.choice(texts), rng.choice(params.sign_boards), rng.choice(params.corners))
        elif rng.random() < 0.3:
            sign = None
        else:
            sign = replace(scene.sign, text=rng.choice([t for t in texts if t != scene.sign.text]))
        return replace(scene, sign=sign)
    if change == "colour":
        objects[i] = replace(obj, colour=rng.choice([c for c in spec.colours if c != obj.colour]))
    elif change == "size":
        objects[i] = replace(obj, size="small" if obj.size == "large" else "large")
    elif change == "position":
        objects[i] = replace(obj, position=rng.choice(free))
    elif change == "count":
        count = rng.choice([c for c in params.count_weights if c != obj.count])
        objects[i] = replace(obj, count=count, size="small" if count > 1 else obj.size)
    elif change == "swap":
        objects[i] = _new_object(rng.choice(absent), obj.position, rng, params)
    elif change == "add":
        objects.append(_new_object(rng.choice(absent), rng.choice(free), rng, params))
    else:
        del objects[i]
    return replace(scene, objects=tuple(objects))


def _new_object(cls: str, position: str, rng: random.Random, params: WorldParams) -> SceneObject:
    spec = params.cls(cls)
    count = rng.choice(list(params.count_weights)) if spec.countable else 1
    size = "small" if count > 1 else rng.choice(params.sizes)
    return SceneObject(cls, rng.choice(spec.colours), size, position, count)


def scene_texts(scene: Scene, seed: int, params: WorldParams = WORLD) -> list[str]:
    """The segments the world's text generator writes about a scene with the random draws of ``seed``."""
    texts = segments(language.describe(scene, random.Random(f"d{seed}"), params))
    texts += [
        piece
        for question, answer in language.conversation(scene, random.Random(f"c{seed}"), params)
        for piece in segments(answer, question)
    ]
    rng = random.Random(f"b{seed}")
    texts += segments(language.brief(scene, rng, params), rng.choice(language.BRIEF_PROMPTS))
    return texts


class Perturber:
    """One content word of a text replaced by another of its kind (a colour, a number, a place, an object)."""

    def __init__(self, params: WorldParams = WORLD):
        self.kinds = {
            "colour": sorted(set(params.colours) | set(EXTRA_COLOURS)),
            "number": list(NUMBERS),
            "place": list(PLACES),
            "object": sorted({name for names in coco_synonyms().values() for name in names[:1]}),
        }
        self.kind_of = {word: kind for kind, words in self.kinds.items() for word in words}
        for spec in params.classes:
            for word in (*spec.words, *spec.plurals):
                self.kind_of.setdefault(word, "object")
        self.pattern = re.compile(
            r"\b(" + "|".join(sorted(map(re.escape, self.kind_of), key=len, reverse=True)) + r")\b"
        )

    def __call__(self, text: str, rng: random.Random) -> str | None:
        if NEGATIONS.search(text):
            return None  # "no cup" → "no fork" may well stay true: not a negative
        found = list(self.pattern.finditer(text.lower()))
        if not found:
            return None
        match = rng.choice(found)
        choices = [w for w in self.kinds[self.kind_of[match.group(1)]] if w != match.group(1)]
        return text[: match.start()] + rng.choice(choices) + text[match.end() :]


def _absence(scene: Scene, rng: random.Random, perturb: Perturber, params: WorldParams) -> tuple[str, str]:
    """'No, there is no fork' for something absent (a world class or any COCO object), and the same
    words about something present as its negative: CLIP models ignore negation unless taught it."""
    absent = [name for name in perturb.kinds["object"] if name not in scene.classes]
    present = params.cls(rng.choice(scene.objects).cls).words[0]
    question, answer = rng.choice(EXISTENCE)
    name = rng.choice(absent)
    word = params.cls(name).words[0] if name in params.class_names else name
    return (
        f"{question.format(word)} {answer.format(word)}",
        f"{question.format(present)} {answer.format(present)}",
    )


def _batch(
    scenes: list[Scene], rng: random.Random, perturb: Perturber, params: WorldParams
) -> tuple[list, list[str], list[str]]:
    """Pictures, their texts and one perturbed text each, for a batch of scenes and their twins."""
    pictures, texts, negatives = [], [], []
    for scene in scenes:
        other = twin(scene, rng, params)
        seed = rng.randrange(1 << 30)
        mine, theirs = scene_texts(scene, seed, params), scene_texts(other, seed, params)
        for current, own, rival in ((scene, mine, theirs), (other, theirs, mine)):
            pictures.append(draw_scene(current, params))
            if rng.random() < 0.15:
                text, negative = _absence(current, rng, perturb, params)
            else:
                distinct = [t for t in own if t not in rival]
                text = rng.choice(distinct if distinct and rng.random() < 0.7 else own)
                negative = perturb(text, rng) or rng.choice(rival)
            texts.append(text)
            negatives.append(negative)
    return pictures, texts, negatives


def train_world_verifier(
    out_dir: str | Path,
    settings: WorldClipSettings = WorldClipSettings(),
    params: WorldParams = WORLD,
    log: Callable[[str], None] = print,
) -> dict:
    """Train the verifier and write it, in open-clip's local-folder layout, into ``out_dir``."""
    import open_clip
    import torch
    from open_clip.loss import ClipLoss
    from safetensors.torch import save_file

    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    started, cpu_started = time.time(), time.process_time()
    model = open_clip.CLIP(**WORLD_CLIP_CONFIG)
    preprocess = open_clip.image_transform(
        96, is_train=False, mean=PREPROCESS_CFG["mean"], std=PREPROCESS_CFG["std"]
    )
    tokenizer = open_clip.SimpleTokenizer(context_length=WORLD_CLIP_CONFIG["text_cfg"]["context_length"])
    scenes = sample_split("train", settings.scenes, settings.seed, ("prior", "violating"), params)
    rng = random.Random(f"bpo-verify-world/{settings.seed}")
    perturb = Perturber(params)
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay, fused=True
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / settings.warmup_steps)
            * 0.5
            * (1 + math.cos(math.pi * step / settings.steps))
        ),
    )
    model.train()
    losses = []
    for step in range(settings.steps):
        pictures, texts, negatives = _batch(
            rng.sample(scenes, settings.scenes_per_batch), rng, perturb, params
        )
        images = model.encode_image(torch.stack([preprocess(p) for p in pictures]), normalize=True)
        encoded = model.encode_text(tokenizer(texts + negatives), normalize=True)
        positive, negative = encoded[: len(texts)], encoded[len(texts) :]
        scale = model.logit_scale.exp()
        loss = loss_fn(images, positive, scale)
        columns = scale * images @ torch.cat([positive, negative]).T
        loss = loss + torch.nn.functional.cross_entropy(columns, torch.arange(len(texts)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        losses.append(loss.item())
        if step % 100 == 0 or step == settings.steps - 1:
            log(f"step {step}: loss {sum(losses[-100:]) / len(losses[-100:]):.3f}")
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    config = {"model_cfg": WORLD_CLIP_CONFIG, "preprocess_cfg": PREPROCESS_CFG}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    provenance = {
        "world": {"version": params.version, "seed": settings.seed, "split": "train"},
        "settings": asdict(settings),
        "open_clip": open_clip.__version__,
        "torch": torch.__version__,
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "wall_s": round(time.time() - started, 1),
        "cpu_s": round(time.process_time() - cpu_started, 1),
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
    return provenance
