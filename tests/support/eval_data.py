"""Tiny benchmark folders in the official formats, with images drawn here; shared by the eval tests.

MM-Vet: ``mm-vet.json`` keyed v1_0… (imagename, question, answer, capability) and ``images/``.
LLaVA-Bench in-the-wild: ``questions.jsonl``, ``context.jsonl``, ``answers_gpt4.jsonl``, ``images/``.
Object HalBench: RLHF-V's question file (image_id, question, base64 ``image``) and the COCO 2014
annotation files (``instances_val2014.json``, ``captions_val2014.json``) under ``annotations/``.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image, ImageDraw

from trainer_min.eval.objhal import QUESTIONS_FILE

COLOURS = ("red", "blue", "green", "orange", "purple", "black")


def draw(index: int, fmt: str = "JPEG") -> bytes:
    """A small picture (a coloured disc on a square) that differs by ``index``."""
    image = Image.new("RGB", (48, 40), "white")
    pen = ImageDraw.Draw(image)
    pen.rectangle([4, 4, 20, 20], fill=COLOURS[index % len(COLOURS)])
    pen.ellipse([24, 10, 44, 34], fill=COLOURS[(index + 2) % len(COLOURS)])
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


# id, question, ground truth, capabilities
MMVET_ITEMS = [
    ("v1_0", "Q0: what animal is shown?", "cat", ["rec"]),
    ("v1_1", "Q1: what does the sign say?", "stop<OR>halt", ["rec", "ocr"]),
    ("v1_2", "Q2: what is x in the equation?", "-1<AND>-5", ["ocr", "math"]),
    ("v1_3", "Q3: who painted this and why is it famous?", "Van Gogh", ["know", "gen", "rec"]),
    ("v1_4", "Q4: what brand is on the bottle?", "Acme", ["rec", "ocr"]),
]


def build_mmvet(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    records = {}
    for index, (key, question, answer, capabilities) in enumerate(MMVET_ITEMS):
        (root / "images" / f"{key}.png").write_bytes(draw(index, "PNG"))
        records[key] = {
            "imagename": f"{key}.png",
            "capability": capabilities,
            "question": question,
            "answer": answer,
        }
    (root / "mm-vet.json").write_text(json.dumps(records), encoding="utf-8")
    return root


# question_id, image, category, question, GPT-4 reference
LLAVA_QUESTIONS = [
    (0, "001.jpg", "conv", "Q0: what colour is the square?", "The square is red."),
    (1, "001.jpg", "detail", "Q1: describe the image in detail.", "A red square and a green disc on white."),
    (2, "002.jpg", "complex", "Q2: what might the shapes mean?", "They could be signs of a game."),
    (3, "002.jpg", "conv", "Q3: how many shapes are there?", "There are two shapes."),
]
LLAVA_CAPTIONS = {
    "001.jpg": ["A red square beside a disc.", "Two simple shapes on white."],
    "002.jpg": "A blue square and an orange disc.",
}


def build_llava_bench(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    for index, image in enumerate(LLAVA_CAPTIONS):
        (root / "images" / image).write_bytes(draw(index))
    write_jsonl(
        root / "questions.jsonl",
        [{"question_id": q, "image": i, "category": c, "text": t} for q, i, c, t, _ in LLAVA_QUESTIONS],
    )
    write_jsonl(
        root / "context.jsonl",
        [{"id": i.removesuffix(".jpg"), "image": i, "caption": c} for i, c in LLAVA_CAPTIONS.items()],
    )
    write_jsonl(
        root / "answers_gpt4.jsonl",
        [
            {
                "question_id": q,
                "prompt": t,
                "text": r,
                "answer_id": f"ref{q}",
                "model_id": "gpt-4-0314",
                "metadata": {},
            }
            for q, _, _, t, r in LLAVA_QUESTIONS
        ],
    )
    return root


COCO_CATEGORIES = {1: "person", 3: "car", 8: "truck", 17: "cat", 18: "dog", 63: "couch", 75: "remote"}
# image_id: (instance categories, COCO captions)
COCO_IMAGES = {
    101: ([18], ["A man walks his dog in the park."]),
    102: ([17, 75], ["A cat sleeps on a couch.", "A kitten on the sofa."]),
    103: ([], ["An empty room with white walls."]),
    104: ([3, 3], ["A car parked on the street."]),
}
OBJHAL_QUESTION = "Provide a thorough description of the given image."


def build_objhal(
    root: Path,
    with_base64: bool = True,
    images: dict[int, tuple[list[int], list[str]]] | None = None,
    categories: dict[int, str] | None = None,
) -> Path:
    """Question file (base64 images, or files under images/ when ``with_base64`` is False) + annotations.

    ``images``: image_id → (instance category ids, COCO captions); ``categories``: id → COCO name."""
    images = COCO_IMAGES if images is None else images
    categories = COCO_CATEGORIES if categories is None else categories
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    records = []
    for index, image_id in enumerate(images):
        picture = draw(index)
        record = {"image_id": image_id, "question": OBJHAL_QUESTION}
        if with_base64:
            record["image"] = base64.b64encode(picture).decode("ascii")
        else:
            (root / "images" / f"COCO_val2014_{image_id:012d}.jpg").write_bytes(picture)
        records.append(record)
    write_jsonl(root / QUESTIONS_FILE, records)
    instances = {
        "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in images],
        "categories": [{"id": k, "name": v, "supercategory": "x"} for k, v in categories.items()],
        "annotations": [
            {"id": n, "image_id": i, "category_id": c, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}
            for n, (i, c) in enumerate((i, c) for i, (cats, _) in images.items() for c in cats)
        ],
    }
    captions = {
        "images": instances["images"],
        "annotations": [
            {"id": n, "image_id": i, "caption": c}
            for n, (i, c) in enumerate((i, c) for i, (_, caps) in images.items() for c in caps)
        ],
    }
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(instances), encoding="utf-8")
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(captions), encoding="utf-8")
    return root


def fake_model(folder: Path) -> Path:
    """A folder that passes the model-source check (it has a config.json) but holds no weights: a run that
    tried to load it would fail, so a test using it shows that no model was loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return folder


def store_answers(
    out: Path,
    benchmark: str,
    answers: dict[str, str],
    model: str,
    adapter: str | None = None,
    max_new_tokens: int = 8,
    batch_size: int = 8,
) -> Path:
    """``OUT/<benchmark>/model_answers.json`` as a run with these flags would have written it, so `eval`
    reuses the answers instead of loading the model (the store's own identity and settings functions)."""
    from trainer_min.eval.answer import AnswerSource, GenerationSettings

    source = AnswerSource(
        model, adapter, GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    )
    path = out / benchmark / "model_answers.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**source.identity(), "generation": source.record(), "answers": answers}
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path
