"""open-clip scoring: the 77-token scheme, what may be loaded, and the world verifier seeing what is there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bpo_data.verify.clip import SHORT_ANSWER_WORDS, ScoreRequest, VerifierUnavailable, resolve, segments

SAMPLE = Path(__file__).resolve().parents[3] / "bpo_data" / "world" / "sample"


def test_long_answers_are_scored_sentence_by_sentence_short_ones_with_their_question():
    long = "A dog runs on the left. A red ball lies at the bottom! Is it sunny? Yes.\nThe end of the answer."
    assert segments(long, "Describe it.") == [
        "A dog runs on the left.",
        "A red ball lies at the bottom!",
        "Is it sunny?",
        "Yes.",
        "The end of the answer.",
    ]
    assert segments("Black.", "What colour is the dog?") == ["What colour is the dog? Black."]
    assert len(" ".join(["word"] * SHORT_ANSWER_WORDS).split()) == SHORT_ANSWER_WORDS
    assert segments(" ".join(["word"] * SHORT_ANSWER_WORDS), "Q?")[0].startswith("Q?")


def test_recorded_ids_name_models_never_machine_paths(tmp_path):
    assert resolve("ViT-B-32", "laion2b_s34b_b79k")[2] == "open_clip:ViT-B-32/laion2b_s34b_b79k"
    assert resolve("hf-hub:org/repo", None)[:2] == ("hf-hub:org/repo", None)
    folder = tmp_path / "my-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{}")
    name, tag, model_id = resolve(str(folder), "ignored")
    assert name == f"local-dir:{folder}" and tag is None
    assert model_id.startswith("local:my-clip@") and str(tmp_path) not in model_id


def test_a_checkpoint_that_cannot_be_fetched_says_what_to_pass_instead(monkeypatch, tmp_path):
    pytest.importorskip("open_clip")
    from bpo_data.verify.clip import load_scorer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(VerifierUnavailable, match="--clip-model world"):
        load_scorer("ViT-B-32", "laion2b_s34b_b79k")


WORDS = {"sports ball": "ball", "dining table": "table"}
WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
WHERE["centre"] = "in the centre"


def _violating_scenes():
    """Sample scenes whose first object's usual partner is absent (a dog without its ball), with pictures."""
    scenes = [json.loads(line) for line in (SAMPLE / "scenes.jsonl").read_text("utf-8").splitlines()]
    for scene in scenes:
        if any(v.startswith("partner_absent:") for v in scene["violations"]):
            with Image.open(SAMPLE / "images" / "llava_instruct" / f"{scene['id']}.png") as image:
                yield scene, image.convert("RGB")


def test_the_world_verifier_scores_an_answer_naming_an_absent_object_lower(world_scorer):
    requests = []
    for scene, image in _violating_scenes():
        first, partner = scene["violations"][0].split(":", 1)[1].split("->")
        obj = next(o for o in scene["objects"] if o["cls"] == first)
        said = f"There is a {obj['colour']} {{}} {WHERE[obj['position']]}."
        chosen, rejected = said.format(WORDS.get(first, first)), said.format(WORDS.get(partner, partner))
        requests.append(ScoreRequest(image, scene["id"], "Describe the image.", chosen, rejected))
    assert len(requests) >= 5
    for scores in world_scorer.score(requests):
        assert scores[0] > scores[1]


def test_scores_do_not_depend_on_the_batch_or_the_cache(world_scorer):
    scene, image = next(_violating_scenes())
    request = ScoreRequest(
        image, "x", "Q?", "A dog. Nothing else is visible in the scene.", "A ball. And a cup."
    )
    alone = world_scorer.score([request])[0]
    world_scorer._text_cache.clear()
    batched = world_scorer.score([request] * 5, batch_size=2)
    assert all(pytest.approx(alone, abs=1e-5) == pair for pair in batched)


def test_pairs_whose_answers_both_only_deny_get_no_clip_scores(world_scorer):
    from bpo_data.verify.clip import only_denies

    assert only_denies("No, there is no cup in the image.") and only_denies("No. I cannot see it.")
    assert not only_denies("Yes, there is a cup. Nothing else is visible.")
    scene, image = next(_violating_scenes())
    deny = ScoreRequest(image, "x", "Is there a cup?", "No, there is no cup.", "No, I cannot see a bed.")
    affirm = ScoreRequest(
        image, "x", "Is there a cup?", "No, there is no cup.", "Yes, a red cup is on the left."
    )
    denied, affirmed = world_scorer.score([deny, affirm])
    assert denied is None and affirmed is not None
