"""Write a miniature world to disk: pictures, scene graphs, the three sources in their real formats.

Layout of ``make_world(out_dir, …)`` (each split folder is laid out like ``bpo_data/world/sample``)::

    world.json                      the parameters, the seed, the splits and the training prior as measured
    train/ eval_clean/ eval_violating/
        scenes.jsonl                one scene graph per picture (the ground truth)
        sharegptv.json              ShareGPT4V: JSON array, detailed captions, paths "coco/train2017/<id>.png"
        llavar.jsonl                LLaVAR: JSON Lines, questions about the sign, bare file names
        llava_instruct.json         LLaVA-Instruct: JSON array, conversations; ids name the image and repeat
        images/sharegptv/coco/train2017/  images/llavar/  images/llava_instruct/   the image roots
        qa.jsonl                    (held-out splits) one question per type with the word its answer needs
    objhal/                         Object HalBench's file layout, ground truth from the scene graphs:
        obj_halbench_300_with_image.jsonl, annotations/instances_val2014.json, captions_val2014.json

``train`` follows the prior (``WorldParams``); ``eval_clean`` is held out from the same
distribution; ``eval_violating`` breaks it (a pair's first object without its partner, atypical
colours); ``objhal`` is half of each, asked with Object HalBench's 8 instructions in turn. No
held-out scene repeats a training scene's graph. Every scene has a description (ShareGPT4V) and a
conversation (LLaVA-Instruct, sometimes a second record with the same id); scenes with a sign also
have LLaVAR questions.
"""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from bpo_data.world import language
from bpo_data.world.params import HELD_OUT_SCENES, WORLD, WorldParams
from bpo_data.world.scenes import Kind, Scene, draw_scene, sample_scene

SPLITS = ("train", "eval_clean", "eval_violating", "objhal")
_SPLIT_CODES = {"train": 0, "eval_clean": 1, "eval_violating": 2, "objhal": 3, "sample": 4}
SHAREGPTV_SUBFOLDER = "coco/train2017"
# The source files of a split folder: (recipe format, data file, image root inside the folder).
SOURCE_FILES: dict[str, tuple[str, str]] = {
    "sharegptv": ("sharegptv.json", "images/sharegptv"),
    "llavar": ("llavar.jsonl", "images/llavar"),
    "llava-instruct": ("llava_instruct.json", "images/llava_instruct"),
}
OBJHAL_QUESTIONS = "obj_halbench_300_with_image.jsonl"
# COCO's category ids, so the Object HalBench files read like the real annotations.
COCO_IDS = {
    "person": 1, "bicycle": 2, "car": 3, "bus": 6, "boat": 9, "traffic light": 10, "stop sign": 13,
    "bird": 16, "cat": 17, "dog": 18, "sports ball": 37, "cup": 47, "chair": 62, "potted plant": 64,
    "dining table": 67, "clock": 85,
}  # fmt: skip


def scene_id(split: str, index: int) -> str:
    """A 12-digit, COCO-like id, unique across splits."""
    return f"{_SPLIT_CODES[split]}{index:011d}"


def image_name(scene: Scene) -> str:
    return f"{scene.id}.png"


def scene_image(split_dir: Path, scene: Scene) -> Path:
    """The picture of a scene in a split folder (every scene has a LLaVA-Instruct copy)."""
    return Path(split_dir) / SOURCE_FILES["llava-instruct"][1] / image_name(scene)


def read_scenes(split_dir: str | Path) -> list[Scene]:
    path = Path(split_dir) / "scenes.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: make the world first with `bpo-data world make --out DIR`"
        )
    return [Scene.from_dict(json.loads(line)) for line in path.read_text("utf-8").splitlines() if line]


def source_specs(split_dir: str | Path, prefix: str = "world") -> list[dict]:
    """Recipe source entries (name, format, data, image_root) for the three sources of a split folder."""
    root = Path(split_dir)
    return [
        {"name": f"{prefix}-{fmt}", "format": fmt, "data": str(root / data), "image_root": str(root / images)}
        for fmt, (data, images) in SOURCE_FILES.items()
    ]


def _rng(seed: int, scene: Scene, purpose: str) -> random.Random:
    return random.Random(f"bpo-world-text/{seed}/{scene.id}/{purpose}")


def _human(question: str, rng: random.Random) -> str:
    """The first human turn with the image marker before or after the question, as the real files vary."""
    return f"<image>\n{question}" if rng.random() < 0.5 else f"{question}\n<image>"


def _conversations(turns: Sequence[tuple[str, str]], rng: random.Random) -> list[dict]:
    messages = []
    for i, (question, answer) in enumerate(turns):
        messages.append({"from": "human", "value": _human(question, rng) if i == 0 else question})
        messages.append({"from": "gpt", "value": answer})
    return messages


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class SplitFiles:
    """What one split folder holds, counted (for world.json and the command's summary)."""

    scenes: int = 0
    sharegptv: int = 0
    llavar: int = 0
    llava_instruct: int = 0
    qa: int = 0


def write_split(
    split_dir: Path, scenes: Sequence[Scene], seed: int, params: WorldParams = WORLD, with_qa: bool = False
) -> SplitFiles:
    """Draw the scenes and write the scene graphs and the three sources (and ``qa.jsonl``) into a folder."""
    roots = {fmt: split_dir / images for fmt, (_, images) in SOURCE_FILES.items()}
    (roots["sharegptv"] / SHAREGPTV_SUBFOLDER).mkdir(parents=True, exist_ok=True)
    for root in roots.values():
        root.mkdir(parents=True, exist_ok=True)
    sharegptv, llavar, instruct, qa = [], [], [], []
    for scene in scenes:
        png = _png(draw_scene(scene, params))
        name = image_name(scene)
        (roots["sharegptv"] / SHAREGPTV_SUBFOLDER / name).write_bytes(png)
        (roots["llava-instruct"] / name).write_bytes(png)
        rng = _rng(seed, scene, "sharegptv")
        caption = language.describe(scene, rng, params)
        sharegptv.append(
            {
                "id": scene.id,
                "image": f"{SHAREGPTV_SUBFOLDER}/{name}",
                "conversations": _conversations([(rng.choice(language.DESCRIBE_PROMPTS), caption)], rng),
            }
        )
        rng = _rng(seed, scene, "llava-instruct")
        instruct.append(
            {
                "id": scene.id,
                "image": name,
                "conversations": _conversations(language.conversation(scene, rng, params), rng),
            }
        )
        if rng.random() < params.conversation_detail_rate:
            turn = (rng.choice(language.BRIEF_PROMPTS), language.brief(scene, rng, params))
            instruct.append({"id": scene.id, "image": name, "conversations": _conversations([turn], rng)})
        if scene.sign is not None:
            (roots["llavar"] / name).write_bytes(png)
            rng = _rng(seed, scene, "llavar")
            llavar.append(
                {
                    "id": f"llavar_{scene.id}",
                    "image": name,
                    "conversations": _conversations(language.text_qa(scene, rng, params), rng),
                }
            )
        if with_qa:
            for item in language.eval_questions(scene, _rng(seed, scene, "qa"), params):
                qa.append({"id": scene.id, **asdict(item)})
    _write_json(split_dir / SOURCE_FILES["sharegptv"][0], sharegptv)
    _write_jsonl(split_dir / SOURCE_FILES["llavar"][0], llavar)
    _write_json(split_dir / SOURCE_FILES["llava-instruct"][0], instruct)
    _write_jsonl(split_dir / "scenes.jsonl", (s.to_dict() for s in scenes))
    if with_qa:
        _write_jsonl(split_dir / "qa.jsonl", qa)
    return SplitFiles(len(scenes), len(sharegptv), len(llavar), len(instruct), len(qa))


def write_objhal(out_dir: Path, scenes: Sequence[Scene], params: WorldParams = WORLD) -> int:
    """Object HalBench's files (RLHF-V's question file, COCO-style annotations) for world scenes."""
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    questions, annotations, captions = [], [], []
    for i, scene in enumerate(scenes):
        image_id = int(scene.id)
        png = _png(draw_scene(scene, params))
        prompt = language.OBJHAL_PROMPTS[i % len(language.OBJHAL_PROMPTS)]
        questions.append(
            {"image_id": image_id, "question": prompt, "image": base64.b64encode(png).decode("ascii")}
        )
        for obj in scene.objects:
            for _ in range(obj.count):
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id, "category_id": COCO_IDS[obj.cls]}
                )
        captions.append(
            {
                "id": i + 1,
                "image_id": image_id,
                "caption": language.brief(scene, random.Random(scene.id), params),
            }
        )
    images = [
        {"id": int(s.id), "file_name": image_name(s), "width": params.image_size, "height": params.image_size}
        for s in scenes
    ]
    categories = [{"id": COCO_IDS[name], "name": name} for name in params.class_names]
    _write_jsonl(out_dir / OBJHAL_QUESTIONS, questions)
    _write_json(
        out_dir / "annotations" / "instances_val2014.json",
        {"images": images, "categories": categories, "annotations": annotations},
    )
    _write_json(
        out_dir / "annotations" / "captions_val2014.json", {"images": images, "annotations": captions}
    )
    _write_jsonl(out_dir / "scenes.jsonl", (s.to_dict() for s in scenes))
    return len(questions)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def sample_split(
    split: str,
    count: int,
    seed: int,
    kinds: Sequence[Kind],
    params: WorldParams = WORLD,
    avoid: set[str] | None = None,
) -> list[Scene]:
    """``count`` scenes of ``split``; scene i has kind ``kinds[i % len(kinds)]``; none repeats ``avoid``."""
    scenes: list[Scene] = []
    index = 0
    while len(scenes) < count:
        kind = kinds[len(scenes) % len(kinds)]
        scene = sample_scene(seed, split, index, scene_id(split, index), kind, params)
        index += 1
        if avoid is None or scene.signature() not in avoid:
            scenes.append(scene)
    return scenes


def prior_stats(scenes: Sequence[Scene], params: WorldParams = WORLD) -> dict:
    """The prior as it came out in these scenes: P(partner | first) and P(typical colour | class)."""
    partner = {}
    for first, mate in params.pairs.items():
        with_first = [s for s in scenes if first in s.classes]
        together = sum(mate in s.classes for s in with_first)
        partner[f"{first}->{mate}"] = {
            "scenes": len(with_first),
            "rate": together / len(with_first) if with_first else None,
        }
    typical = {}
    for spec in params.classes:
        if spec.typical:
            colours = [s.object(spec.name).colour for s in scenes if spec.name in s.classes]
            typical[f"{spec.name}:{spec.typical}"] = {
                "objects": len(colours),
                "rate": sum(c == spec.typical for c in colours) / len(colours) if colours else None,
            }
    return {"partner_rate": partner, "typical_colour_rate": typical}


def make_world(
    out_dir: str | Path,
    scenes: int,
    seed: int = 0,
    eval_scenes: int = HELD_OUT_SCENES,
    objhal_scenes: int = 300,
    params: WorldParams = WORLD,
) -> dict:
    """Write a world (layout in the module docstring) and return what ``world.json`` records."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = sample_split("train", scenes, seed, ("prior",), params)
    seen = {s.signature() for s in train}
    held_out = {
        "eval_clean": sample_split("eval_clean", eval_scenes, seed, ("prior",), params, seen),
        "eval_violating": sample_split("eval_violating", eval_scenes, seed, ("violating",), params, seen),
    }
    record = {
        "world_version": params.version,
        "seed": seed,
        "params": params.to_json(),
        "objhal_prompts": {
            "source": "RLHF-V (Yu et al., CVPR 2024, arXiv:2312.00849), appendix: "
            "the list of instructions for Object HalBench",
            "prompts": list(language.OBJHAL_PROMPTS),
        },
        "splits": {},
        "train_prior": prior_stats(train, params),
    }
    record["splits"]["train"] = asdict(write_split(out / "train", train, seed, params))
    for name, split_scenes in held_out.items():
        record["splits"][name] = asdict(write_split(out / name, split_scenes, seed, params, with_qa=True))
    objhal = sample_split("objhal", objhal_scenes, seed, ("violating", "prior"), params, seen)
    record["splits"]["objhal"] = {"scenes": write_objhal(out / "objhal", objhal, params)}
    _write_json(out / "world.json", record)
    return record


def make_sample(out_dir: str | Path, seed: int = 0, params: WorldParams = WORLD) -> SplitFiles:
    """The embedded sample (bpo_data/world/sample): 6 prior-violating and 8 held-out scenes, 4 with signs."""
    violating = sample_split("sample", 6, seed, ("violating",), params)
    clean, index = [], 1000
    while len(clean) < 8:
        scene = sample_scene(seed, "sample", index, scene_id("sample", index), "prior", params)
        index += 1
        if (scene.sign is not None) == (len(clean) < 4):
            clean.append(scene)
    return write_split(Path(out_dir), [*violating, *clean], seed, params, with_qa=True)
