"""Object HalBench: CHAIR on detailed descriptions of 300 COCO val2014 images, counted as RLHF-V counts.

The official scorer is class ``CHAIR`` of RLHF-V's / RLAIF-V's ``eval/eval_gpt_obj_halbench.py``;
how it reads objects out of text lives in :mod:`bpo_data.coco_objects`. Ground truth per image is
its COCO instance annotations ∪ the COCO objects its COCO captions name, read by the official
free-text reader, from the user's ``instances_val2014.json`` and ``captions_val2014.json``. A
response is the model's answer with "Assistant:" removed and stripped, as the official loader
does. Its objects come either from the judge (``extract="judge"``, the official method: the judge
lists the objects the answer mentions, as a JSON list, with RLHF-V's extraction prompt; an answer of
3 words or fewer gets an empty list without a call; each name is post-processed into objects as the
official code does, see ``CocoVocabulary.names_to_objects``) or from the free-text reader
(``extract="rules"``, no judge). Metrics, as the official ``compute_chair``:

- ``chair_s``: responses with at least one hallucinated object / all responses;
- ``resp`` (the paper's "Resp."; ``CHAIRs_refine`` there): the same over responses naming ≥1 COCO object;
- ``obj`` (the paper's "Obj."; ``CHAIRi``): hallucinated mentions / all mentions;
- ``recall``: correctly named classes (distinct per response) / ground-truth classes (per response).

All are percentages. A response whose extraction still fails after a few tries is left out of
every metric and counted in ``extraction_failures`` (the official script would stop there).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

import trainer_min.eval.common as common
from bpo_data.coco_objects import CocoVocabulary, Mention, coco_vocabulary
from bpo_data.recipe import DEFAULT_MAX_PIXELS
from trainer_min.eval.answer import Question, image_file
from trainer_min.eval.errors import EvalError
from trainer_min.eval.judge import Judge, JudgeRequest, ask_until_parsed

QUESTIONS_FILE = "obj_halbench_300_with_image.jsonl"
INSTANCES_FILE = "instances_val2014.json"
CAPTIONS_FILE = "captions_val2014.json"
EXTRACT_TEMPERATURE = 0.2
EXTRACT_MAX_TOKENS = 512
EXTRACT_TRIES = 5
SHORT_ANSWER_WORDS = 3
PROMPT_FILE = "objhal_extraction_prompt.txt"
OFFICIAL = "official"
# RLHF-V's prompt puts "<image> " before the question. A multimodal judge such as a LLaVA served by
# `transformers serve` reads that marker as an image slot and fails the request (HTTP 500); without
# it the text is otherwise RLHF-V's.
NO_IMAGE_TAG = "no-image-tag"
IMAGE_TAG = "<image> "
PROMPT_VARIANTS = (OFFICIAL, NO_IMAGE_TAG)
RULES_READER = (
    "official caption_to_words: nltk word_tokenize (3.8.1 rules) + WordNet 3.0 noun lemmas, two-word merges"
)
NAMES_READER = (
    "official get_pred_objs_match, with TextBlob's Pattern tagger and spaCy's English noun rules on "
    "WordNet 3.0 in place of spaCy en_core_web_trf"
)
_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class ObjHalItem:
    id: str
    image_id: int
    question: str
    image_b64: str | None


def load_items(data_dir: Path) -> list[ObjHalItem]:
    """Records of the question file: ``image_id``, ``question`` and the image as base64 in ``image``
    (RLHF-V's file), or, without ``image``, ``images/COCO_val2014_<12-digit id>.jpg``."""
    path = data_dir / QUESTIONS_FILE
    if not path.is_file():
        raise EvalError(
            f"{path} not found: --data must hold RLHF-V's {QUESTIONS_FILE} and the COCO 2014 annotations "
            f"({INSTANCES_FILE}, {CAPTIONS_FILE}, in annotations/ or beside it)"
        )
    items = []
    for number, record in common.read_jsonl(path):
        try:
            items.append(
                ObjHalItem(str(number), int(record["image_id"]), record["question"], record.get("image"))
            )
        except (ValueError, KeyError, TypeError) as err:
            raise EvalError(
                f"{path} line {number}: needs image_id and question ({type(err).__name__}: {err})"
            ) from None
    return items


def questions(items: Sequence[ObjHalItem], data_dir: Path) -> list[Question]:
    out = []
    for item in items:
        where = f"{QUESTIONS_FILE} line {item.id}"
        if item.image_b64 is None:
            loader = image_file(data_dir / "images", f"COCO_val2014_{item.image_id:012d}.jpg", where)
        else:
            loader = _base64_image(item.image_b64, where)
        out.append(Question(item.id, item.question, loader))
    return out


def _base64_image(data: str, where: str):
    def load() -> Image.Image:
        try:
            with Image.open(io.BytesIO(base64.b64decode(data))) as image:
                if image.width * image.height > DEFAULT_MAX_PIXELS:
                    raise EvalError(
                        f"{where}: the image has {image.width}x{image.height} pixels, too many to decode"
                    )
                return ImageOps.exif_transpose(image).convert("RGB")
        except (binascii.Error, OSError, ValueError) as err:
            raise EvalError(f"{where}: 'image' is not a base64-encoded image ({err})") from err

    return load


def _annotation_path(data_dir: Path, name: str) -> Path:
    for path in (data_dir / "annotations" / name, data_dir / name):
        if path.is_file():
            return path
    raise EvalError(
        f"{name} not found in {data_dir / 'annotations'} or {data_dir}: unzip COCO's "
        "annotations_trainval2014.zip there (Object HalBench's ground truth comes from it)"
    )


def annotation_paths(data_dir: Path) -> tuple[Path, Path]:
    """The COCO instances and captions files (checked before any answer is generated)."""
    return _annotation_path(data_dir, INSTANCES_FILE), _annotation_path(data_dir, CAPTIONS_FILE)


def _annotation(data_dir: Path, name: str) -> dict[str, Any]:
    path = _annotation_path(data_dir, name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise EvalError(f"{path}: not valid JSON ({err}); download the COCO 2014 annotations again") from err


def load_ground_truth(data_dir: Path, vocabulary: CocoVocabulary, image_ids: set[int]) -> dict[int, set[str]]:
    instances = _annotation(data_dir, INSTANCES_FILE)
    captions = _annotation(data_dir, CAPTIONS_FILE)
    known = {image["id"] for image in instances.get("images", [])}
    absent = sorted(image_ids - known)
    if absent:
        raise EvalError(
            f"images {absent[:5]} of {QUESTIONS_FILE} are not in {INSTANCES_FILE}; Object HalBench uses COCO "
            "val2014 images, so check that the annotation files are the 2014 validation ones"
        )
    return ground_truth(vocabulary, instances, captions, image_ids)


def load_prompt(prompt_file: Path | None, variant: str = OFFICIAL) -> str:
    """The extraction prompt (``{question}`` and ``{answer}`` are filled in): a file verbatim, else
    RLHF-V's text (``official``), or RLHF-V's text without its ``<image>`` marker (``no-image-tag``)."""
    if prompt_file is not None:
        return common.load_prompt(prompt_file, PROMPT_FILE, "--objhal-prompt-file")
    if variant not in PROMPT_VARIANTS:
        raise EvalError(f"--objhal-prompt must be one of {', '.join(PROMPT_VARIANTS)}, got {variant!r}")
    text = common.resource_text(PROMPT_FILE)
    return text.replace(IMAGE_TAG, "") if variant == NO_IMAGE_TAG else text


def parse_object_list(text: str) -> list[Any] | None:
    """A JSON list from the whole reply (RLHF-V's parser), a ```json block (RLAIF-V's), or the reply's
    last line (both); else None, and the judge is asked again. The official parsers would also take
    a JSON value that is not a list, which then fails later: here it is asked again too."""
    candidates = [text.strip()]
    block = _JSON_BLOCK.search(text)
    if block:
        candidates.append(block.group(1))
    candidates.append(text.strip().split("\n")[-1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, list):
            return value
    return None


def caption(answer: str) -> str:
    """The response as the official loader reads an answer file: "Assistant:" removed, stripped."""
    return answer.replace("Assistant:", "").strip()


@dataclass(frozen=True)
class Extraction:
    """What the judge listed for one response, and the objects the official post-processing makes of it."""

    names: list[Any]
    objects: list[str]


def extract_with_judge(
    items: Sequence[ObjHalItem],
    captions: dict[str, str],
    judge: Judge,
    template: str,
    vocabulary: CocoVocabulary,
) -> list[Extraction | None]:
    """Per response, the judge's names and their objects, or None where extraction failed."""
    names: dict[str, list[Any] | None] = {}
    pending = []
    for item in items:
        if len(captions[item.id].strip().split()) <= SHORT_ANSWER_WORDS:
            names[item.id] = []
        else:
            pending.append(item)

    def request(item: ObjHalItem, attempt: int) -> JudgeRequest:
        prompt = template.replace("{question}", item.question).replace("{answer}", captions[item.id])
        return JudgeRequest(
            messages=[{"role": "system", "content": prompt}],
            temperature=EXTRACT_TEMPERATURE,
            max_tokens=EXTRACT_MAX_TOKENS,
            tag={"attempt": attempt},
        )

    replies = ask_until_parsed(judge, pending, request, parse_object_list, EXTRACT_TRIES)
    names.update((item.id, reply.value) for item, reply in zip(pending, replies))
    listed = [names[item.id] for item in items]
    return [
        None if found is None else Extraction(found, vocabulary.names_to_objects(found)) for found in listed
    ]


def chair(
    items: Sequence[ObjHalItem],
    captions: dict[str, str],
    mentions: Sequence[list[Mention] | None],
    truth: dict[int, set[str]],
    extractions: Sequence[Extraction | None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, per-response details) of the official ``compute_chair``; responses whose extraction
    failed (``mentions`` None) are left out. ``extractions`` go into the details when given."""
    responses = coco_responses = hallucinated_responses = 0
    mention_count = hallucinated_mentions = recalled = truth_count = words = 0
    details = []
    for index, (item, found) in enumerate(zip(items, mentions)):
        if found is None:
            continue
        text = captions[item.id]
        objects = truth[item.image_id]
        hallucinated = [m for m in found if m.cls not in objects]
        correct = {m.cls for m in found if m.cls in objects}
        responses += 1
        coco_responses += bool(found)
        hallucinated_responses += bool(hallucinated)
        mention_count += len(found)
        hallucinated_mentions += len(hallucinated)
        recalled += len(correct)
        truth_count += len(objects)
        words += len(text.strip().split(" "))
        detail = {
            "image_id": item.image_id,
            "question": item.question,
            "caption": text,
            "mscoco_gt_words": sorted(objects),
            "mscoco_generated_words": [[m.word, m.cls] for m in found],
            "mscoco_hallucinated_words": [[m.word, m.cls] for m in hallucinated],
        }
        extraction = extractions[index] if extractions is not None else None
        if extraction is not None:
            detail.update(extracted=extraction.names, objects=extraction.objects)
        details.append(detail)
    metrics = {
        "responses": responses,
        "coco_responses": coco_responses,
        "hallucinated_responses": hallucinated_responses,
        "mentions": mention_count,
        "hallucinated_mentions": hallucinated_mentions,
        "ground_truth_objects": truth_count,
        "chair_s": _percent(hallucinated_responses, responses),
        "resp": _percent(hallucinated_responses, coco_responses),
        "obj": _percent(hallucinated_mentions, mention_count),
        "recall": _percent(recalled, truth_count),
        "avg_length": words / responses if responses else None,
    }
    return metrics, details


def _percent(part: int, whole: int) -> float | None:
    return part / whole * 100 if whole else None


def score(
    items: Sequence[ObjHalItem],
    answers: dict[str, str],
    data_dir: Path,
    out_dir: Path,
    extract: str,
    judge: Judge | None,
    prompt: str,
) -> dict[str, Any]:
    """Extract objects, compute CHAIR against the COCO ground truth, write answers and details."""
    if extract not in ("judge", "rules"):
        raise EvalError(f"--extract must be judge or rules, got {extract!r}")
    if extract == "judge" and judge is None:
        raise EvalError("--extract judge needs --judge-model; use --extract rules to score without a judge")
    vocabulary = coco_vocabulary()
    truth = load_ground_truth(data_dir, vocabulary, {item.image_id for item in items})
    out_dir.mkdir(parents=True, exist_ok=True)
    common.write_jsonl(
        out_dir / "answers.jsonl",
        ({"image_id": i.image_id, "question": i.question, "answer": answers[i.id]} for i in items),
    )
    captions = {item.id: caption(answers[item.id]) for item in items}
    extractions = None
    if extract == "judge":
        extractions = extract_with_judge(items, captions, judge, prompt, vocabulary)
        mentions = [None if e is None else vocabulary.object_mentions(e.objects) for e in extractions]
    else:
        mentions = [vocabulary.mentions(captions[item.id]) for item in items]
    metrics, details = chair(items, captions, mentions, truth, extractions)
    failed = [item.image_id for item, found in zip(items, mentions) if found is None]
    metrics.update(
        extract=extract,
        reader=NAMES_READER if extract == "judge" else RULES_READER,
        truth_reader=RULES_READER,
        items=len(items),
        extraction_failures=len(failed),
    )
    report = {"overall_metrics": metrics, "sentences": details, "extraction_failed_image_ids": failed}
    common.write_json(out_dir / "hallucinations.json", report)
    return metrics


def ground_truth(
    vocabulary: CocoVocabulary, instances: dict[str, Any], captions: dict[str, Any], image_ids: Iterable[int]
) -> dict[int, set[str]]:
    """Classes present in each image: its instance annotations ∪ the COCO objects its five captions name."""
    truth: dict[int, set[str]] = {image_id: set() for image_id in image_ids}
    names = {category["id"]: category["name"] for category in instances["categories"]}
    for annotation in instances["annotations"]:
        if annotation["image_id"] in truth:
            truth[annotation["image_id"]].add(vocabulary.to_class[names[annotation["category_id"]]])
    for annotation in captions["annotations"]:
        if annotation["image_id"] in truth:
            truth[annotation["image_id"]].update(m.cls for m in vocabulary.mentions(annotation["caption"]))
    return truth
