"""Object HalBench: CHAIR on detailed descriptions of 300 COCO val2014 images (RLHF-V / RLAIF-V).

Ground truth per image is its COCO instance annotations ∪ the COCO objects its five COCO captions
name, read from the user's ``instances_val2014.json`` and ``captions_val2014.json``. The objects a
response names come either from the judge (``extract="judge"``, RLHF-V's method: the judge lists,
as a JSON list, the objects the answer explicitly mentions, names without attributes; an answer of
3 words or fewer gets an empty list without a call) or from the CHAIR rules on the response text
(``extract="rules"``, no judge). Metrics, as RLHF-V's eval_gpt_obj_halbench.py computes them:

- ``chair_s``: responses with at least one hallucinated object / all responses;
- ``resp`` (the paper's "Resp."; CHAIRs_refine there): the same over responses naming ≥1 COCO object;
- ``obj`` (the paper's "Obj."; CHAIRi): hallucinated mentions / all mentions;
- ``recall``: correctly named classes (distinct per response) / ground-truth classes.

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

from bpo_data.coco_objects import CocoVocabulary, Mention, coco_vocabulary
from trainer_min.eval import common
from trainer_min.eval.answer import MAX_IMAGE_PIXELS, Question, image_file
from trainer_min.eval.errors import EvalError
from trainer_min.eval.judge import Judge, JudgeRequest, ask_until_parsed

QUESTIONS_FILE = "obj_halbench_300_with_image.jsonl"
INSTANCES_FILE = "instances_val2014.json"
CAPTIONS_FILE = "captions_val2014.json"
EXTRACT_TEMPERATURE = 0.2
EXTRACT_MAX_TOKENS = 512
EXTRACT_TRIES = 5
SHORT_ANSWER_WORDS = 3
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
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise EvalError(
                        f"{where}: the image has {image.width}x{image.height} pixels, too many to decode"
                    )
                return ImageOps.exif_transpose(image).convert("RGB")
        except (binascii.Error, OSError, ValueError) as err:
            raise EvalError(f"{where}: 'image' is not a base64-encoded image ({err})") from err

    return load


def _annotation(data_dir: Path, name: str) -> dict[str, Any]:
    for path in (data_dir / "annotations" / name, data_dir / name):
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:
                raise EvalError(
                    f"{path}: not valid JSON ({err}); download the COCO 2014 annotations again"
                ) from err
    raise EvalError(
        f"{name} not found in {data_dir / 'annotations'} or {data_dir}: unzip COCO's "
        "annotations_trainval2014.zip there (Object HalBench's ground truth comes from it)"
    )


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


def load_prompt(prompt_file: Path | None) -> str:
    """The extraction prompt (``{question}`` and ``{answer}`` are filled in): a file verbatim, or ours."""
    return common.load_prompt(prompt_file, "objhal_extraction_prompt.txt", "--objhal-prompt-file")


def parse_object_list(text: str) -> list[Any] | None:
    """A JSON list from the whole reply, a ```json block, or the reply's last line; else None."""
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


def extract_with_judge(
    items: Sequence[ObjHalItem],
    answers: dict[str, str],
    judge: Judge,
    template: str,
    vocabulary: CocoVocabulary,
) -> tuple[list[list[Mention] | None], list[list[Any] | None]]:
    """(COCO mentions per response or None where extraction failed, the judge's raw lists)."""
    extracted: dict[str, list[Any] | None] = {}
    pending = []
    for item in items:
        if len(answers[item.id].strip().split()) <= SHORT_ANSWER_WORDS:
            extracted[item.id] = []
        else:
            pending.append(item)

    def request(item: ObjHalItem, attempt: int) -> JudgeRequest:
        prompt = _extraction_prompt(template, item.question, answers[item.id])
        return JudgeRequest(
            messages=[{"role": "system", "content": prompt}],
            temperature=EXTRACT_TEMPERATURE,
            max_tokens=EXTRACT_MAX_TOKENS,
            tag={"attempt": attempt},
        )

    replies = ask_until_parsed(judge, pending, request, parse_object_list, EXTRACT_TRIES)
    extracted.update((item.id, reply.value) for item, reply in zip(pending, replies))
    raw = [extracted[item.id] for item in items]
    mentions = [None if names is None else vocabulary.mentions_in_names(names) for names in raw]
    return mentions, raw


def _extraction_prompt(template: str, question: str, answer: str) -> str:
    return template.replace("{question}", question).replace("{answer}", answer)


def chair(
    items: Sequence[ObjHalItem],
    answers: dict[str, str],
    mentions: Sequence[list[Mention] | None],
    truth: dict[int, set[str]],
    extracted: Sequence[list[Any] | None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, per-response details); responses whose extraction failed are left out.

    ``extracted``: the judge's lists, recorded in the details beside the COCO objects they gave."""
    responses = coco_responses = hallucinated_responses = 0
    mention_count = hallucinated_mentions = recalled = truth_count = words = 0
    details = []
    for index, (item, found) in enumerate(zip(items, mentions)):
        if found is None:
            continue
        answer = answers[item.id]
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
        words += len(answer.strip().split(" "))
        detail = {
            "image_id": item.image_id,
            "question": item.question,
            "caption": answer,
            "mscoco_gt_words": sorted(objects),
            "mscoco_generated_words": [[m.word, m.cls] for m in found],
            "mscoco_hallucinated_words": [[m.word, m.cls] for m in hallucinated],
        }
        if extracted is not None:
            detail["extracted"] = extracted[index]
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
    vocabulary = coco_vocabulary()
    truth = load_ground_truth(data_dir, vocabulary, {item.image_id for item in items})
    out_dir.mkdir(parents=True, exist_ok=True)
    common.write_jsonl(
        out_dir / "answers.jsonl",
        ({"image_id": i.image_id, "question": i.question, "answer": answers[i.id]} for i in items),
    )
    if extract == "judge":
        if judge is None:
            raise EvalError(
                "--extract judge needs --judge-model; use --extract rules to score without a judge"
            )
        mentions, extracted = extract_with_judge(items, answers, judge, prompt, vocabulary)
    elif extract == "rules":
        mentions, extracted = [vocabulary.mentions(answers[item.id]) for item in items], None
    else:
        raise EvalError(f"--extract must be judge or rules, got {extract!r}")
    metrics, details = chair(items, answers, mentions, truth, extracted)
    failed = [item.image_id for item, found in zip(items, mentions) if found is None]
    metrics.update(extract=extract, items=len(items), extraction_failures=len(failed))
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
