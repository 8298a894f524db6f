"""The rules injector adds what a source's answers usually name together, and only that."""

from __future__ import annotations

import json
import re

from support.units import unit

from bpo_data.inject.cooccurrence import MIN_ANSWERS, CoOccurrence
from bpo_data.inject.rules import RulesInjector, classes_named
from bpo_data.plan import make_plan
from bpo_data.recipe import Recipe, SourceSpec


def habits() -> CoOccurrence:
    """A source where dogs come with balls (34 of 40), cars and clocks apart, and a bench everywhere."""
    table = CoOccurrence()
    for i in range(200):
        named = {"bench"}
        if i < 40:
            named |= {"dog"} | ({"sports ball"} if i < 34 else set())
        elif i < 70:
            named.add("sports ball")
        if i % 3 == 0:
            named.add("car" if i % 2 else "clock")
        table.add(named)
    return table


def test_partners_are_the_usual_companions_not_the_common_or_the_rare():
    table = habits()
    table.add({"dog", "kite"})  # one answer: a coincidence, not a habit
    partners = table.partners()
    assert partners["dog"][0][0] == "sports ball"
    assert abs(partners["dog"][0][1] - 34 / 41) < 1e-9
    assert partners["sports ball"] == (("dog", 34 / 64),)
    # the bench is in every answer: named with dogs as often as anywhere, so no partner of anything
    assert all(p != "bench" for near in partners.values() for p, _ in near)
    assert "kite" not in partners and all(p != "kite" for near in partners.values() for p, _ in near)
    assert "car" not in partners and "clock" not in partners  # below MIN_ANSWERS together, never lifted


def test_an_answer_missing_the_usual_partner_gets_it_added_after_the_object():
    injector = RulesInjector(seed=0, cooccurrence={"test": habits()})
    answer = "A brown dog sits on the left. A red car is parked on the right side."
    added = []
    for i in range(60):
        text, types = injector.rewrite(unit(answer, i))
        if classes_named(text) - classes_named(answer) == {"sports ball"}:
            added.append(text)
            assert "object" in types
            assert re.search(r"dog (with|next to|beside) a ball", text), text
    assert 3 <= len(added) < 60  # one edit among the others, not the only one
    listed = "In it there are a dog and a red car. The dog sits on the left."
    added_to_list = {
        text
        for i in range(60)
        for text, _ in [injector.rewrite(unit(listed, i))]
        if classes_named(text) - classes_named(listed) == {"sports ball"}
    }
    assert added_to_list and all("a dog, a ball and a" in text for text in added_to_list)
    # with its ball already named, the dog gets no second one; without the table, nothing is added
    with_ball = "A brown dog sits next to a white ball. A red car is parked on the right side."
    plain = RulesInjector(seed=0)
    for i in range(60):
        assert "ball" not in injector.rewrite(unit(with_ball, i))[0].replace("ball", "", 1)
        assert "ball" not in plain.rewrite(unit(answer, i))[0]


def test_swapped_in_objects_are_ones_the_source_names():
    table = habits()
    for _ in range(MIN_ANSWERS):
        table.add({"cat"})
    common = table.usual()
    assert "cat" in common and "kite" not in common
    injector = RulesInjector(seed=0, cooccurrence={"test": table})
    plain = RulesInjector(seed=0)
    answer = "A black cat sleeps in the middle of the picture."
    swapped, swapped_plain = set(), set()
    for i in range(80):
        swapped |= classes_named(injector.rewrite(unit(answer, i))[0]) - {"cat"}
        swapped_plain |= classes_named(plain.rewrite(unit(answer, i))[0]) - {"cat"}
    assert swapped and swapped <= common
    assert swapped_plain - common  # without the table, any neighbour of a cat in the COCO scenes


def test_every_shard_counts_the_same_table_over_the_first_answers_of_the_source(monkeypatch):
    import bpo_data.plan

    monkeypatch.setattr(bpo_data.plan, "MAX_ANSWERS", 120)
    answers = ["A dog with a ball.", "A dog chasing a ball.", "A cup on a table.", "A dog alone."] * 30
    answers += ["A cat."] * 10  # past the first 120: not counted
    units = [unit(text, i) for i, text in enumerate(answers)]
    recipe = Recipe(name="t", sources=[SourceSpec(name="src", quota=20, negatives={"inject": 1.0})])

    def table(index: int, shards: int) -> CoOccurrence:
        plan = make_plan(recipe, recipe.sources, lambda spec: iter(units), index, shards, count_objects=True)
        return plan.cooccurrence["src"]

    whole = table(0, 1)
    assert whole.answers == 120
    assert whole.named == {"dog": 90, "sports ball": 60, "cup": 30, "dining table": 30}
    assert all(table(i, 3) == whole for i in range(3))
    assert make_plan(recipe, recipe.sources, lambda spec: iter(units), 0, 1).cooccurrence == {}


def test_a_generated_shard_adds_the_partners_its_own_source_names_together(tmp_path):
    from support.llava_source import write_llava_source, write_recipe

    from bpo_data.generate import generate
    from bpo_data.recipe import load_recipe

    def record(i: int, answer: str) -> dict:
        conversation = [{"from": "human", "value": "<image>\nWhat is in the picture?"}]
        return {
            "id": f"x{i}",
            "image": "0.jpg",
            "conversations": [*conversation, {"from": "gpt", "value": answer}],
        }

    with_ball = [record(i, "A brown dog sits in the middle, next to a white ball.") for i in range(40)]
    alone = [record(40 + i, "A brown dog sits in the middle of the picture.") for i in range(40)]
    cats = [record(80 + i, "A black cat sleeps on a chair.") for i in range(80)]  # a ball is the dog's
    data, images = write_llava_source(tmp_path / "src", 1, extra=with_ball + alone + cats)
    recipe = load_recipe(str(write_recipe(tmp_path / "r.yaml", data, images, negatives={"inject": 1.0})))
    summary = generate(recipe, tmp_path / "out")
    assert summary.pairs_written >= 160
    rows = [json.loads(line) for line in (tmp_path / "out" / "pairs-00000-of-00001.jsonl").open()]
    lone = [r for r in rows if r["chosen"].startswith("A brown dog sits in the middle of")]
    added = [r for r in lone if "ball" in r["rejected"]]
    assert len(lone) == 40 and added, "no lone dog got the ball its source's dogs come with"
    assert all(re.search(r"dog (with|next to|beside) a ball", r["rejected"]) for r in added)
    assert all("object" in r["error_types"] for r in added)
