"""Source readers on real files: prompts, turns, both layouts, bounded memory, bad input, the sample."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from bpo_data.images import load_image
from bpo_data.recipe import SourceSpec
from bpo_data.schema import Reject, Turn, Unit
from bpo_data.sources import SOURCE_FORMATS, read_units
from bpo_data.sources.sample import SAMPLE_DIR, SAMPLE_FILES
from bpo_data.world.make import make_sample
from bpo_data.world.params import WORLD


def _record(rid, *exchanges, image="img.jpg", **extra) -> dict:
    conversations = []
    for question, answer in exchanges:
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    record = {} if rid is None else {"id": rid}
    return {**record, "image": image, "conversations": conversations, **extra}


def _write(path: Path, records: list, layout: str) -> Path:
    if layout == "array":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _read(tmp_path: Path, data: Path, seed: int = 0, **spec) -> list[Unit | Reject]:
    spec = {"name": "src", "format": "llava", **spec}
    return list(read_units(SourceSpec(**spec), seed=seed, data=str(data), image_root=str(tmp_path)))


def _units(items) -> list[Unit]:
    return [item for item in items if isinstance(item, Unit)]


@pytest.mark.parametrize(
    "value",
    ["<image>\nWhat is this?", "What is this?\n<image>", "<image>What is this?", "What is this?<image>"],
)
def test_image_marker_never_reaches_the_question(tmp_path: Path, value: str):
    data = _write(tmp_path / "d.jsonl", [_record("a", (value, "A dog."))], "jsonl")
    (unit,) = _read(tmp_path, data)
    assert unit.question == "What is this?"
    assert unit.messages() == [{"role": "user", "content": "What is this?"}]


def test_multi_turn_record_gives_a_unit_per_exchange_with_earlier_turns_as_context(tmp_path: Path):
    record = _record("r1", ("<image>\nQ0?", "A0."), ("Q1?", "A1."), ("Q2?", "A2."), image="coco/x.jpg")
    data = _write(tmp_path / "d.json", [record], "array")
    units = _read(tmp_path, data, turns="all")
    assert [u.key for u in units] == ["src/r1/0", "src/r1/1", "src/r1/2"]
    assert units[2].context == (Turn("Q0?", "A0."), Turn("Q1?", "A1."))
    assert (units[2].question, units[2].answer, units[0].context) == ("Q2?", "A2.", ())
    assert all(u.image == "coco/x.jpg" and u.image_root == str(tmp_path) for u in units)
    assert [u.key for u in _read(tmp_path, data, turns="first")] == ["src/r1/0"]


def test_random_turn_is_one_per_record_fixed_by_the_seed(tmp_path: Path):
    records = [_record(f"r{i}", *[(f"Q{t}?", f"A{t}.") for t in range(3)]) for i in range(300)]
    data = _write(tmp_path / "d.jsonl", records, "jsonl")

    def picks(seed: int) -> list[int]:
        units = _read(tmp_path, data, seed=seed, turns="random")
        assert [u.record_id for u in units] == [f"r{i}" for i in range(300)]
        assert all(u.question == f"Q{u.turn}?" and len(u.context) == u.turn for u in units)
        return [u.turn for u in units]

    seed0 = picks(0)
    assert picks(0) == seed0
    assert set(seed0) == {0, 1, 2}
    assert sum(a != b for a, b in zip(seed0, picks(1), strict=True)) > 100


def test_array_and_jsonl_give_identical_units(tmp_path: Path):
    records = [
        _record("a", ("<image>\nQ?", "A."), ("Q2?", "A2.")),
        _record(7, ("Q?\n<image>", "A.")),
        _record(None, ("<image>Q?", "A.")),
    ]
    from_array = _read(tmp_path, _write(tmp_path / "d.json", records, "array"), turns="all")
    from_jsonl = _read(tmp_path, _write(tmp_path / "d.jsonl", records, "jsonl"), turns="all")
    assert from_array == from_jsonl
    assert [u.key for u in from_array] == ["src/a/0", "src/a/1", "src/7/0", "src/idx-2/0"]


def test_a_utf8_bom_and_leading_whitespace_are_tolerated(tmp_path: Path):
    record = _record("a", ("<image>\nQ?", "A."))
    for name, text in (("a.json", json.dumps([record])), ("b.jsonl", json.dumps(record) + "\n")):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf \n" + text.encode())
        assert [u.key for u in _read(tmp_path, tmp_path / name)] == ["src/a/0"]


@pytest.mark.slow  # a subprocess, a server or training: seconds
def test_json_array_is_streamed_with_bounded_memory(tmp_path: Path):
    data = tmp_path / "big.json"
    answer = "A long description of the picture. " * 70
    with open(data, "w", encoding="utf-8") as handle:
        handle.write("[")
        for i in range(20_000):
            record = _record(f"{i:012d}", ("<image>\nDescribe the image.", answer), image=f"{i:012d}.jpg")
            handle.write(("," if i else "") + json.dumps(record))
        handle.write("]")
    size = data.stat().st_size
    tracemalloc.start()
    try:
        units = read_units(
            SourceSpec(name="big", format="llava-instruct"), seed=0, data=str(data), image_root=str(tmp_path)
        )
        count = sum(isinstance(item, Unit) for item in units)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < size / 5, f"peak {peak:,} bytes for a {size:,}-byte file"


def test_bad_records_are_rejected_with_reasons_and_reading_goes_on(tmp_path: Path):
    good = _record("ok1", ("<image>\nQ?", "A."))
    lines = [
        json.dumps(good),
        '{"id": "broken", "image": ',
        json.dumps(_record("latin", ("<image>\nQ?", "café"))).replace("caf\\u00e9", "caf\udce9"),
        json.dumps({"id": "noconv", "image": "a.jpg"}),
        json.dumps({"id": "noimg", "conversations": good["conversations"]}),
        json.dumps(_record("ok1", ("<image>\nQ?", "Another answer."))),
        json.dumps(_record("abs", ("<image>\nQ?", "A."), image="/etc/passwd")),
        json.dumps(_record("up", ("<image>\nQ?", "A."), image="../../etc/passwd")),
        json.dumps(_record("blank", ("<image>\nQ?", "A."), ("Q2?", "  "), ("Q3?", "A3."))),
        json.dumps(_record("noq", ("<image>", "A."))),
        json.dumps(
            {
                "id": "open",
                "image": "a.jpg",
                "conversations": good["conversations"] + [{"from": "human", "value": "Q2?"}],
            }
        ),
        json.dumps({"id": "order", "image": "a.jpg", "conversations": [{"from": "gpt", "value": "A."}]}),
        "[1, 2]",
        json.dumps(_record("ok2", ("<image>\nQ?", "A."))),
    ]
    data = tmp_path / "bad.jsonl"
    data.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    items = _read(tmp_path, data, turns="all")
    got = [(item.key, item.reason if isinstance(item, Reject) else "unit") for item in items]
    assert got == [
        ("src/ok1/0", "unit"),
        ("src/@line2", "corrupt_json"),
        ("src/@line3", "non_utf8"),
        ("src/noconv", "no_conversations"),
        ("src/noimg", "no_image"),
        ("src/@line6", "duplicate_id"),
        ("src/abs", "unsafe_image_path"),
        ("src/up", "unsafe_image_path"),
        ("src/blank/0", "unit"),
        ("src/blank/1", "empty_answer"),
        ("src/blank/2", "unit"),
        ("src/noq/0", "empty_question"),
        ("src/open/0", "unit"),
        ("src/open/1", "no_gpt_turn"),
        ("src/order/0", "bad_turn_order"),
        ("src/@line13", "corrupt_json"),
        ("src/ok2/0", "unit"),
    ]
    for item in items:
        if isinstance(item, Reject):
            assert item.file == str(data) and str(data) in item.detail and "line" in item.detail
            assert item.source == "src"


def test_a_json_array_that_breaks_midway_yields_what_came_before_and_one_reject(tmp_path: Path):
    records = [_record(f"r{i}", ("<image>\nQ?", "A.")) for i in range(3)]
    text = json.dumps(records)
    (tmp_path / "cut.json").write_text(text[: text.index('"r2"') + 10], encoding="utf-8")
    items = _read(tmp_path, tmp_path / "cut.json")
    assert [u.key for u in _units(items)] == ["src/r0/0", "src/r1/0"]
    (reject,) = [item for item in items if isinstance(item, Reject)]
    assert reject.reason == "corrupt_json" and "cut.json" in reject.detail and "item 2" in reject.detail

    latin = json.dumps(records[:2] + [_record("r2", ("<image>\nQ?", "caf\udce9"))], ensure_ascii=False)
    (tmp_path / "latin.json").write_bytes(latin.encode("utf-8", "surrogateescape"))
    items = _read(tmp_path, tmp_path / "latin.json")
    assert [u.key for u in _units(items)] == ["src/r0/0", "src/r1/0"]
    assert [item.reason for item in items if isinstance(item, Reject)] == ["non_utf8"]


def test_a_non_object_array_item_is_rejected_and_the_rest_read(tmp_path: Path):
    records = [_record("a", ("<image>\nQ?", "A.")), "oops", _record("b", ("<image>\nQ?", "A."))]
    items = _read(tmp_path, _write(tmp_path / "d.json", records, "array"))
    assert [(i.key, getattr(i, "reason", "unit")) for i in items] == [
        ("src/a/0", "unit"),
        ("src/@item1", "corrupt_json"),
        ("src/b/0", "unit"),
    ]


def test_llava_instruct_numbers_repeated_image_ids_other_formats_reject_them(tmp_path: Path):
    records = [
        _record("9", ("<image>\nQ?", "A.")),
        _record("9", ("<image>\nDescribe.", "B.")),
        _record("9~1", ("Q?<image>", "C.")),
    ]
    data = _write(tmp_path / "d.json", records, "array")
    numbered = _read(tmp_path, data, format="llava-instruct")
    assert [(u.key, u.answer) for u in numbered] == [
        ("src/9/0", "A."),
        ("src/9~1/0", "B."),
        ("src/9~1~1/0", "C."),
    ]
    rejected = _read(tmp_path, data, format="sharegptv")
    assert [getattr(i, "reason", "unit") for i in rejected] == ["unit", "duplicate_id", "unit"]


def test_style_comes_from_the_format_unless_the_recipe_sets_it(tmp_path: Path):
    data = _write(tmp_path / "d.json", [_record("a", ("<image>\nDescribe.", "A."))], "array")
    assert _read(tmp_path, data, format="sharegptv")[0].style == "description"
    assert _read(tmp_path, data, format="sharegptv", style="qa")[0].style == "qa"
    assert _read(tmp_path, data, format="llava-instruct")[0].style == "qa"
    assert _read(tmp_path, data, format="llavar", style="description")[0].style == "description"


def test_path_errors_name_the_source_and_the_flag(tmp_path: Path):
    data = _write(tmp_path / "d.json", [_record("a", ("Q?", "A."))], "array")
    with pytest.raises(ValueError, match=r"'cap'.*--data"):
        read_units(SourceSpec(name="cap", format="sharegptv", image_root=str(tmp_path)), seed=0)
    with pytest.raises(ValueError, match=r"'cap'.*--image-root.*sub-folder"):
        read_units(SourceSpec(name="cap", format="sharegptv", data=str(data)), seed=0)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_units(
            SourceSpec(name="cap", format="llavar"),
            seed=0,
            data=str(tmp_path / "nope.json"),
            image_root=str(tmp_path),
        )
    with pytest.raises(ValueError, match="unknown format"):
        read_units(SourceSpec(name="cap", format="coco-captions", data=str(data)), seed=0)
    overridden = read_units(
        SourceSpec(name="cap", format="llavar", data="/elsewhere.json", image_root="/x"),
        seed=0,
        data=str(data),
        image_root=str(tmp_path),
    )
    assert [u.key for u in overridden] == ["cap/a/0"]


def test_every_format_is_dispatched():
    assert SOURCE_FORMATS == {"sharegptv", "llavar", "llava-instruct", "llava", "sample"}


@pytest.mark.parametrize("choice", sorted(SAMPLE_FILES))
def test_sample_files_parse_cleanly_and_every_image_loads(choice: str):
    spec = SourceSpec(name=f"demo-{choice}", format="sample", data=choice, turns="all")
    items = list(read_units(spec, seed=0))
    assert not [item for item in items if isinstance(item, Reject)]
    assert len({u.record_id for u in items}) >= 6
    for unit in items:
        assert unit.source == spec.name and unit.key.startswith(f"{spec.name}/")
        assert "<image>" not in unit.question and unit.answer
        image = load_image(unit.image_root, unit.image, max_pixels=1_000_000)
        assert image.mode == "RGB" and image.size == (WORLD.image_size, WORLD.image_size)
    if choice == "sharegptv":
        assert {u.style for u in items} == {"description"}
        assert all(u.answer.count(". ") >= 2 for u in items), "captions should be several sentences"
        assert all("/" in u.image for u in items), "ShareGPT4V keeps images in sub-folders"
    else:
        assert all("/" not in u.image for u in items)
    if choice == "llava-instruct":
        assert any(u.context for u in items), "multi-turn conversations carry earlier turns"


def test_sample_needs_a_named_file_and_ships_its_own_images():
    with pytest.raises(ValueError, match="llava-instruct.*llavar.*sharegptv"):
        read_units(SourceSpec(name="demo", format="sample"), seed=0)
    with pytest.raises(ValueError, match="own images"):
        read_units(SourceSpec(name="demo", format="sample", data="llavar"), seed=0, image_root="/data")


def test_shipped_sample_is_what_the_world_generator_writes(tmp_path):
    make_sample(tmp_path)
    shipped = sorted(p.relative_to(SAMPLE_DIR) for p in SAMPLE_DIR.rglob("*") if p.is_file())
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert shipped == made
    changed = [p for p in shipped if (SAMPLE_DIR / p).read_bytes() != (tmp_path / p).read_bytes()]
    assert not changed, f"rebuild the sample with bpo_data.world.make.make_sample: {changed} differ"
    assert sum((SAMPLE_DIR / p).stat().st_size for p in shipped) < 1_000_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("What<image>color is it?", "What color is it?"),
        ("A red dog.\n<image>\nIt sleeps.", "A red dog.\nIt sleeps."),
        ("A red <image> dog.", "A red dog."),
        ("<image>", ""),
    ],
)
def test_the_image_marker_leaves_answers_too_without_gluing_words(tmp_path: Path, value: str, expected: str):
    record = _record("a", (value, "Q is fine."), ("Then?", value))
    data = _write(tmp_path / "d.jsonl", [record], "jsonl")
    items = _read(tmp_path, data, turns="all")
    if not expected:
        assert [i.reason for i in items] == ["empty_question", "empty_answer"]
        return
    first, second = items
    assert (first.question, second.answer, second.context[0].question) == (expected, expected, expected)


def test_exact_copies_are_made_once_and_ids_shaped_like_positions_never_clash(tmp_path: Path):
    records = [
        _record(None, ("<image>\nQ?", "A.")),
        _record("9", ("<image>\nQ?", "A.")),
        _record("9", ("<image>\nQ?", "A.")),  # an exact copy: made once
        _record("9", ("<image>\nDescribe.", "B.")),  # the same image, another record: numbered
        _record("idx-0", ("<image>\nQ?", "C.")),  # its own id, shaped like the first record's fallback
        _record("=idx-0", ("<image>\nQ?", "D.")),
    ]
    data = _write(tmp_path / "d.json", records, "array")
    got = [(i.key, getattr(i, "reason", "unit")) for i in _read(tmp_path, data, format="llava-instruct")]
    assert got == [
        ("src/idx-0/0", "unit"),
        ("src/9/0", "unit"),
        ("src/@item2", "duplicate_record"),
        ("src/9~1/0", "unit"),
        ("src/=idx-0/0", "unit"),
        ("src/==idx-0/0", "unit"),
    ]


def test_prompts_and_answers_past_the_recipes_bounds_are_rejected(tmp_path: Path):
    from bpo_data.recipe import TextSpec

    record = _record("a", ("<image>\nQ0?", "A" * 30), ("Q1?", "A1."), ("Q2?", "B" * 80))
    data = _write(tmp_path / "d.jsonl", [record], "jsonl")
    spec = SourceSpec(name="src", format="llava", turns="all")
    limits = TextSpec(max_prompt_chars=40, max_answer_chars=50)
    items = list(read_units(spec, seed=0, data=str(data), image_root=str(tmp_path), limits=limits))
    assert [(i.key, getattr(i, "reason", "unit")) for i in items] == [
        ("src/a/0", "unit"),
        ("src/a/1", "unit"),  # 3 + 30 + 3 characters of prompt
        ("src/a/2", "prompt_too_long"),
    ]
    assert "text.max_prompt_chars (40)" in items[2].detail


def test_paths_are_stored_absolute_and_a_folder_for_data_is_named(tmp_path: Path, monkeypatch):
    data = _write(tmp_path / "d.jsonl", [_record("a", ("Q?", "A."))], "jsonl")
    (tmp_path / "imgs").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = SourceSpec(name="src", format="llava")
    (unit,) = read_units(spec, seed=0, data="d.jsonl", image_root="imgs")
    assert unit.image_root == str((tmp_path / "imgs").resolve())
    with pytest.raises(FileNotFoundError, match="--data imgs is a folder; give the annotation file"):
        read_units(spec, seed=0, data="imgs", image_root="imgs")
    assert data.exists()
