"""Injection with an LLM: prompt files, rendering, cleaning replies, validation, applied error types."""

from __future__ import annotations

import textwrap

import pytest

from bpo_data.engines.base import EngineResult
from bpo_data.inject.cleaning import clean_rewrite
from bpo_data.inject.error_types import applied_error_types
from bpo_data.inject.llm import LLMRewriter
from bpo_data.inject.prompt_files import PromptFileError, load_prompt_file, render_messages
from bpo_data.inject.validation import validate_rewrite
from bpo_data.prompting import llava_prompt
from bpo_data.recipe import InjectSpec, SamplingParams, ValidationSpec
from bpo_data.resources import prompt_names
from bpo_data.schema import ERROR_TYPES, Reject, Unit, pair_key

QA_UNIT = Unit(
    key="llavar/rec-7/0",
    source="llavar",
    record_id="rec-7",
    turn=0,
    image="img/7.jpg",
    image_root="/data",
    question="<image>\nWhat does the sign above the door say?",
    answer="The sign above the door says OPEN 24 HOURS in red letters.",
    style="qa",
)
CAPTION_UNIT = Unit(
    key="sharegpt4v/rec-3/0",
    source="sharegpt4v",
    record_id="rec-3",
    turn=0,
    image="img/3.jpg",
    image_root="/data",
    question="Describe the image in detail.\n<image>",
    answer="A brown dog sleeps on a green couch next to a wooden table with two cups on it.",
    style="description",
)


def write_prompt(tmp_path, name: str, body: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


GOOD_PROMPT = """\
    name: terse
    description: A short prompt for tests.
    system: Make the answer wrong.
    template: "Q: {question}\\nA: {answer}\\nWrong:"
    examples:
      - question: How many cats?
        answer: Two
        rewrite: Three
    error_types: [count]
    sampling:
      temperature: 0.3
"""


# --- prompt files -------------------------------------------------------------------------


@pytest.mark.parametrize("name", prompt_names())
def test_shipped_prompt_examples_are_valid_rewrites_of_the_types_the_prompt_asks_for(name):
    prompt = load_prompt_file(name)
    assert set(prompt.error_types) <= set(ERROR_TYPES)
    for example in prompt.examples:
        assert validate_rewrite(example.answer, example.rewrite, ValidationSpec()).ok, example
        applied = applied_error_types(example.answer, example.rewrite)
        assert applied and set(applied) <= set(prompt.error_types) | {"other"}, (example.rewrite, applied)


def test_qa_render_puts_system_first_examples_as_pairs_and_the_item_last():
    prompt = load_prompt_file("qa")
    messages = render_messages(prompt, QA_UNIT)
    assert messages[0] == {"role": "system", "content": prompt.system.strip()}
    pairs = messages[1:-1]
    assert len(pairs) == 2 * len(prompt.examples)
    for index, example in enumerate(prompt.examples):
        user, assistant = pairs[2 * index], pairs[2 * index + 1]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert example.question in user["content"] and example.answer in user["content"]
        assert assistant["content"] == example.rewrite
    last = messages[-1]
    assert last["role"] == "user"
    assert "What does the sign above the door say?" in last["content"]
    assert QA_UNIT.answer in last["content"]
    assert "<image>" not in last["content"] and "{" not in last["content"]


def test_description_render_uses_only_the_answer():
    messages = render_messages(load_prompt_file("description"), CAPTION_UNIT)
    assert CAPTION_UNIT.answer in messages[-1]["content"]
    assert "Describe the image" not in messages[-1]["content"]
    # The text-only LLaVA prompt keeps the order: system, examples, then the item to rewrite.
    rendered = llava_prompt(messages, with_image=False)
    assert rendered.index(messages[1]["content"]) < rendered.index(CAPTION_UNIT.answer)
    assert rendered.endswith("ASSISTANT:") and "<image>" not in rendered


def test_prompt_file_by_path_is_usable_in_the_injector(tmp_path):
    path = write_prompt(tmp_path, "terse", GOOD_PROMPT)
    injector = LLMRewriter(None, InjectSpec(prompts={"qa": str(path)}), seed=0)
    [request] = injector.requests([QA_UNIT])
    assert request.sampling.temperature == 0.3 and request.sampling.top_p == 0.95
    assert [m["role"] for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.messages[1]["content"] == "Q: How many cats?\nA: Two\nWrong:"
    assert request.messages[-1]["content"].startswith(
        "Q: What does the sign above the door say?\nA: The sign"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (GOOD_PROMPT.replace("{answer}", "{answer} {style}"), "template"),
        (GOOD_PROMPT.replace("{answer}", "{answer!r}"), "template"),
        (GOOD_PROMPT.replace("A: {answer}", "A:"), "template"),
        (GOOD_PROMPT.replace("    system: Make the answer wrong.\n", ""), "system"),
        (GOOD_PROMPT.replace("    error_types: [count]\n", ""), "error_types"),
        (GOOD_PROMPT.replace("A short prompt for tests.", '"two\\nlines"'), "description"),
        (GOOD_PROMPT.replace("      - question: How many cats?\n", "      -\n"), "examples.0.question"),
        (GOOD_PROMPT.replace("temperature: 0.3", "temperature: -1"), "sampling.temperature"),
        (GOOD_PROMPT + "    extra_field: 1\n", "extra_field"),
        (GOOD_PROMPT.replace("[count]", "[counting]"), "error_types"),
    ],
)
def test_bad_prompt_file_names_the_file_and_the_field(tmp_path, body, field):
    path = write_prompt(tmp_path, "bad", body)
    with pytest.raises(PromptFileError) as err:
        load_prompt_file(str(path))
    assert str(path) in str(err.value)
    assert field in str(err.value)


def test_unknown_prompt_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(PromptFileError, match=r"'description', 'qa'"):
        load_prompt_file("no-such-prompt")
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompt_file(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="not valid YAML"):
        load_prompt_file(str(broken))


# --- cleaning -----------------------------------------------------------------------------

REWRITE = "A black cat sits on a red sofa."


@pytest.mark.parametrize(
    "raw",
    [
        f"Sure, here is the modified description:\n\n{REWRITE}",
        f"Sure! Here's the rewritten answer: {REWRITE}",
        f"Certainly. Here is a revised version of the caption with a few errors:\n{REWRITE}",
        f"Here you go:\n{REWRITE}",
        f"The modified description is as follows:\n\n{REWRITE}",
        f"Modified description: {REWRITE}",
        f"Rewritten answer:\n{REWRITE}",
        f"Answer: {REWRITE}",
        f"**Modified description:** {REWRITE}",
        f"**Rewritten Answer**: {REWRITE}",
        f"### Modified Description\n{REWRITE}",
        f"Wrong answer: {REWRITE}",
        f'"{REWRITE}"',
        f"“{REWRITE}”",
        f"'{REWRITE}'",
        f"`{REWRITE}`",
        f"```\n{REWRITE}\n```",
        f"  {REWRITE}  \n",
        f"Sure!\n{REWRITE}",
        f"Sure, I can do that.\n\n{REWRITE}",
        f"I have modified the description as follows:\n{REWRITE}",
        f"{REWRITE}\n\n(Note: I changed the dog to a cat and the sofa's colour.)",
        f"{REWRITE} (Note: I changed the colour of the sofa.)",
        f"{REWRITE}\n\nChanges made:\n- dog -> cat\n- blue -> red",
        f"{REWRITE}\n**Changes made:**\n1. dog -> cat",
        f"{REWRITE}\n\nNote: the cat was a dog in the original.",
        f"{REWRITE}\n\nI changed the dog to a cat and made the sofa red.",
        f"{REWRITE}\n\nIn this version, the dog became a cat.",
        f'Sure, here is the modified description:\n\n"{REWRITE}"\n\nChanges made: dog -> cat',
    ],
)
def test_clean_rewrite_strips_the_model_talking_about_its_task(raw):
    assert clean_rewrite(raw) == REWRITE


@pytest.mark.parametrize(
    "answer",
    [
        "Sure, the sign says OPEN.",
        "Sure.",
        "Here is a list of items on the table: a cup, a fork and a plate.",
        "This is a sign that says: OPEN",
        '"OPEN" is on the left door and "CLOSED" on the right one.',
        "'Tis the season, says the banner.",
        "The dog's bowl is blue.\nThe cat's bowl is red.",
        "Answer choice B is correct because the cat is black.",
        "I think the man is holding an umbrella.",
    ],
)
def test_clean_rewrite_keeps_real_content(answer):
    assert clean_rewrite(answer) == answer


def test_a_leading_phrase_the_ground_truth_shares_is_kept():
    # "Sure." or "Answer:" at the start of the ground truth is the answer's style, not chatter.
    assert clean_rewrite("Sure.\nThe sign says CLOSED.", original="Sure.\nThe sign says OPEN.") == (
        "Sure.\nThe sign says CLOSED."
    )
    assert clean_rewrite("Sure.\nThe sign says CLOSED.") == "The sign says CLOSED."
    assert clean_rewrite("Answer: B", original="Answer: A") == "Answer: B"
    assert clean_rewrite("Answer: B") == "B"


def test_a_note_section_the_ground_truth_has_is_kept():
    original = "Mix the flour and eggs.\nNote: the oven must be preheated to 180 degrees."
    rewrite = "Mix the flour and milk.\nNote: the oven must be preheated to 220 degrees."
    assert clean_rewrite(rewrite, original=original) == rewrite
    assert clean_rewrite(rewrite) == "Mix the flour and milk."


# --- validation ---------------------------------------------------------------------------

ORIGINAL = "The bus is red with a white stripe along its side."


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [
        ("", "invalid_rewrite:empty"),
        ("   \n", "invalid_rewrite:empty"),
        ("the bus is RED, with a white stripe along its side", "invalid_rewrite:identical"),
        ("I'm sorry, but I can't help with making answers wrong.", "invalid_rewrite:refusal"),
        ("I cannot modify this description because it may mislead.", "invalid_rewrite:refusal"),
        ("As an AI language model, I must decline this request.", "invalid_rewrite:refusal"),
        ("Sorry, I won't do that.", "invalid_rewrite:refusal"),
        ("The bus is blue.", "invalid_rewrite:too_short"),
        (ORIGINAL + " " + ORIGINAL.replace("red", "blue") + " It is parked.", "invalid_rewrite:too_long"),
    ],
)
def test_each_rejection_reason(rewrite, reason):
    verdict = validate_rewrite(ORIGINAL, rewrite, ValidationSpec())
    assert not verdict.ok
    assert verdict.reason == reason
    assert verdict.detail


def test_a_good_rewrite_passes_and_the_length_bounds_are_configurable():
    rewrite = "The bus is yellow with a wide blue stripe along its side and roof."  # 1.32x
    assert validate_rewrite(ORIGINAL, rewrite, ValidationSpec()).ok
    strict = validate_rewrite(ORIGINAL, rewrite, ValidationSpec(min_length_ratio=0.9, max_length_ratio=1.2))
    assert strict.reason == "invalid_rewrite:too_long"
    assert f"{len(rewrite)} vs {len(ORIGINAL)} characters" in strict.detail and "1.2" in strict.detail
    short = "The bus is yellow with a stripe."  # 0.64x
    assert validate_rewrite(ORIGINAL, short, ValidationSpec()).ok
    verdict = validate_rewrite(ORIGINAL, short, ValidationSpec(min_length_ratio=0.7))
    assert verdict.reason == "invalid_rewrite:too_short"
    assert "ratio 0.64" in verdict.detail and "0.7" in verdict.detail


def test_refusal_words_are_allowed_when_the_ground_truth_starts_that_way():
    original = "I cannot see any dog in the image; there is only a cat."
    assert validate_rewrite(
        original, "I cannot see any cat in the image; there is only a dog.", ValidationSpec()
    ).ok


# --- the Injector -------------------------------------------------------------------------


def make_injector(sampling: SamplingParams | None = None, seed: int = 0) -> LLMRewriter:
    return LLMRewriter(None, InjectSpec(sampling=sampling), seed)


def test_requests_pick_the_prompt_by_style_and_the_sampling():
    injector = make_injector()
    qa_request, caption_request = injector.requests([QA_UNIT, CAPTION_UNIT])
    assert qa_request.messages == render_messages(load_prompt_file("qa"), QA_UNIT)
    assert caption_request.messages == render_messages(load_prompt_file("description"), CAPTION_UNIT)
    assert qa_request.sampling == load_prompt_file("qa").sampling

    override = SamplingParams(temperature=0.1, top_p=0.5, max_new_tokens=64)
    seeded = make_injector(sampling=override, seed=3)
    first, second = seeded.requests([QA_UNIT, CAPTION_UNIT])
    assert first.sampling == override
    assert first.seed == seeded.requests([QA_UNIT])[0].seed and first.seed != second.seed


def test_a_style_without_a_prompt_is_an_error_that_names_the_recipe_field():
    injector = LLMRewriter(None, InjectSpec(prompts={"qa": "qa"}), seed=0)
    with pytest.raises(PromptFileError, match="inject.prompts"):
        injector.requests([CAPTION_UNIT])


def test_finish_turns_engine_errors_into_rejects():
    outcome = make_injector().finish(QA_UNIT, EngineResult(error="HTTP 500 after 5 retries"))
    assert isinstance(outcome, Reject)
    assert outcome.reason == "engine_error"
    assert outcome.key == pair_key(QA_UNIT.key, "inject") and outcome.negative_type == "inject"
    assert "HTTP 500" in outcome.detail and outcome.source == "llavar"


def test_finish_rejects_invalid_rewrites_with_the_verdict_reason():
    injector = make_injector()
    too_short = injector.finish(QA_UNIT, EngineResult(text="Rewritten answer: It says OPEN."))
    assert isinstance(too_short, Reject) and too_short.reason == "invalid_rewrite:too_short"
    assert too_short.key == pair_key(QA_UNIT.key, "inject")
    unchanged = injector.finish(QA_UNIT, EngineResult(text=f'"{QA_UNIT.answer}"'))
    assert isinstance(unchanged, Reject) and unchanged.reason == "invalid_rewrite:identical"
    nothing = injector.finish(QA_UNIT, EngineResult(text=None))
    assert isinstance(nothing, Reject) and nothing.reason == "invalid_rewrite:empty"


def test_finish_returns_the_cleaned_rewrite_and_the_error_types_it_applied():
    raw = (
        "Sure, here is the modified answer:\n\n"
        "The sign above the door says OPEN 12 HOURS in green letters.\n\n"
        "(Note: I changed the hours and the colour.)"
    )
    outcome = make_injector().finish(QA_UNIT, EngineResult(text=raw))
    # asked for five types; the rewrite changed a colour and a number written on the sign
    assert outcome == (
        "The sign above the door says OPEN 12 HOURS in green letters.",
        ["attribute", "text_number"],
    )
