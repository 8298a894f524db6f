"""The shard pipeline through the Python API: resume across run settings, filters, image decoding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from PIL import Image
from support.llava_source import write_llava_source, write_recipe

from bpo_data.generate import generate
from bpo_data.jsonl import iter_jsonl
from bpo_data.manifest import ManifestMismatch
from bpo_data.pipeline import Filter, Step
from bpo_data.recipe import load_recipe, with_settings
from bpo_data.schema import Pair


@pytest.fixture(autouse=True)
def _local_smoke_model(smoke_model_dir, monkeypatch):
    monkeypatch.setenv("BPO_DATA_CACHE", str(smoke_model_dir.parent))
    link = smoke_model_dir.parent / "smoke-llava-v1"
    if not link.exists():
        link.symlink_to(smoke_model_dir)


def _records(out: Path, kind: str) -> dict[str, dict]:
    return {r["key"]: r for p in sorted(out.glob(f"{kind}-*.jsonl")) for r in iter_jsonl(p)}


class Interrupt(Step):
    """Stops the run like a kill after ``after`` items have been written (it sits after the writer)."""

    name = "interrupt"

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def run(self, items):
        for seen, work in enumerate(items, start=1):
            yield work
            if seen >= self.after:
                raise KeyboardInterrupt


@pytest.fixture
def source(tmp_path) -> Path:
    data, images = write_llava_source(tmp_path / "src", 8)
    return write_recipe(tmp_path / "r.yaml", data, images, batch_size=4, max_new_tokens=6)


def test_a_resume_may_change_how_it_runs_and_makes_exactly_the_pairs_of_an_uninterrupted_run(
    tmp_path, source
):
    recipe = load_recipe(str(source))
    clean = tmp_path / "clean"
    generate(recipe, clean)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        generate(recipe, out, steps=[Interrupt(after=5)])
    partial = _records(out, "pairs")
    assert 0 < len(partial) < len(_records(clean, "pairs"))

    resumed = with_settings(recipe, weaken_batch_size=3, inject_batch_size=2, concurrency=4, device="cpu")
    summary = generate(resumed, out)
    assert summary.already_done >= len(partial)
    pairs = _records(out, "pairs")
    assert sum(1 for p in out.glob("pairs-*.jsonl") for _ in iter_jsonl(p)) == len(pairs), "a pair twice"
    # Same keys, and the same texts: sampled answers depend on (unit, seed), not on the batch.
    assert pairs == _records(clean, "pairs")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["weaken"]["batch_size"] == 3


def test_a_resume_that_would_make_other_pairs_is_refused_naming_the_fields(tmp_path, source):
    out = tmp_path / "out"
    generate(load_recipe(str(source)), out)
    raw = yaml.safe_load(source.read_text())
    raw["weaken"]["noise"] = {"step": 900}
    raw["sources"][0]["quota"] = 3
    source.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestMismatch, match=r"sources\.0\.quota, weaken\.noise\.step differ"):
        generate(load_recipe(str(source)), out)


def test_injection_only_units_never_decode_their_image(tmp_path):
    data, images = write_llava_source(tmp_path / "src", 4)
    # A JPEG whose header is whole but whose pixels are cut off: only a decode can tell.
    Image.effect_noise((256, 256), 64).convert("RGB").save(images / "0.jpg")
    whole = (images / "0.jpg").read_bytes()
    (images / "0.jpg").write_bytes(whole[: len(whole) // 2])
    recipe = load_recipe(str(write_recipe(tmp_path / "r.yaml", data, images, negatives="both")))
    out = tmp_path / "out"
    summary = generate(recipe, out)
    rejects = _records(out, "rejects")
    assert rejects["src/r0/0#weaken"]["reason"] == "unreadable_image"
    assert "src/r0/0#inject" in _records(out, "pairs")
    images_step, sample = summary.steps["load images"], summary.steps["sample"]
    assert images_step["decoded"] + images_step["unreadable_image"] == sample["weaken"]
    assert images_step["header checked"] == sample["inject"]


class NoDogs(Filter):
    name = "no dogs"

    def refuse(self, pair: Pair):
        return ("no_dogs", "the rejected answer mentions a dog") if "dog" in pair.rejected.lower() else None


def test_filters_from_the_recipe_and_the_api_turn_pairs_into_final_rejects(tmp_path):
    data, images = write_llava_source(tmp_path / "src", 12)
    overlap = {"negative_type": "inject", "max_text_overlap": 0.9}  # one word of ~12 changed: 0.92
    path = write_recipe(tmp_path / "r.yaml", data, images, negatives={"inject": 1.0}, filters=[overlap])
    out = tmp_path / "out"
    summary = generate(load_recipe(str(path)), out, steps=[NoDogs()])
    rejects = _records(out, "rejects")
    reasons = {r["reason"] for r in rejects.values()}
    assert reasons <= {"filter:max_text_overlap", "filter:no_dogs"} and len(reasons) == 2
    assert not any("dog" in p["rejected"].lower() for p in _records(out, "pairs").values())
    assert summary.rejects["filter:no_dogs"] == sum(r["reason"] == "filter:no_dogs" for r in rejects.values())
    assert summary.pairs_written + sum(summary.rejects.values()) == summary.pairs_planned

    again = generate(load_recipe(str(path)), out, steps=[NoDogs()])
    assert again.pairs_written == 0 and again.already_done == again.pairs_planned  # dropped stays dropped


def _inject_only(tmp_path: Path, records: int = 4, **settings):
    data, images = write_llava_source(tmp_path / "src", records)
    recipe = load_recipe(str(write_recipe(tmp_path / "r.yaml", data, images, negatives={"inject": 1.0})))
    return with_settings(recipe, **settings) if settings else recipe, data, images


def test_a_shard_whose_engine_made_nothing_says_so_and_launch_retries_it(tmp_path):
    from support.servers import free_port

    from bpo_data.launch import make_job, run_worker

    url = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens
    recipe, _, _ = _inject_only(
        tmp_path, injector="llm", inject_engine="openai", inject_model="served", base_url=url
    )
    recipe.run.inject.max_retries = 0  # a refused connection is retried otherwise, with backoff
    summary = generate(recipe, tmp_path / "out")
    assert summary.engine_failed and summary.pairs_written == 0
    assert summary.rejects["engine_error"] == summary.pairs_planned == 8
    assert "engine_error" in summary.reject_examples
    job = make_job(recipe, tmp_path / "launched", 1)
    job.save()
    assert run_worker(job, "0/1") == 1

    working, _, _ = _inject_only(tmp_path / "rules")
    assert not generate(working, tmp_path / "rules-out").engine_failed


def test_an_empty_source_is_reported_and_quota_0_takes_nothing(tmp_path):
    recipe, data, images = _inject_only(tmp_path)
    raw = recipe.model_dump()
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    raw["sources"].append({**raw["sources"][0], "name": "empty", "data": str(empty)})
    raw["sources"].append({**raw["sources"][0], "name": "none", "quota": 0})
    summary = generate(type(recipe).model_validate(raw), tmp_path / "out")
    assert summary.empty_sources == ["empty"]
    assert summary.pairs_written == 8 and not summary.engine_failed


def test_another_data_file_into_the_same_folder_is_refused(tmp_path):
    recipe, data, images = _inject_only(tmp_path)
    out = tmp_path / "out"
    generate(recipe, out)
    other = tmp_path / "other.jsonl"
    lines = data.read_text().splitlines()
    other.write_text("\n".join(reversed(lines)) + "\n")
    from bpo_data.generate import SourcePaths

    with pytest.raises(ManifestMismatch, match=r"source 'src' made from .*data.jsonl.*other.jsonl.*differs"):
        generate(recipe, out, paths={"src": SourcePaths(data=str(other))})
    moved = tmp_path / "moved.jsonl"  # the same file elsewhere (another machine's mount) is fine
    moved.write_bytes(data.read_bytes())
    assert generate(recipe, out, paths={"src": SourcePaths(data=str(moved))}).pairs_written == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"]["src"]["image_root"] == str(images.resolve())


def test_a_finished_shard_is_finished_again_without_reading_a_source_until_something_changes(
    tmp_path, monkeypatch
):
    import bpo_data.generate as generate_module

    recipe, data, _ = _inject_only(tmp_path, records=6)
    out = tmp_path / "out"
    first = generate(recipe, out)
    assert first.pairs_written == first.pairs_planned == 12
    plans_made = []
    make_plan = generate_module.make_plan
    monkeypatch.setattr(
        generate_module, "make_plan", lambda *a, **k: plans_made.append(a) or make_plan(*a, **k)
    )

    again = generate(recipe, out)
    assert not plans_made and again.pairs_written == 0
    assert (again.already_done, again.pairs_planned, again.units_read) == (12, 12, first.units_read)

    pairs = out / "pairs-00000-of-00001.jsonl"  # a pair lost from the folder: it is made again
    lines = pairs.read_text(encoding="utf-8").splitlines(keepends=True)
    pairs.write_text("".join(lines[1:]), encoding="utf-8")
    remade = generate(recipe, out)
    assert len(plans_made) == 1 and remade.pairs_written == 1
    assert json.loads(lines[0])["key"] in _records(out, "pairs") and len(_records(out, "pairs")) == 12

    generate(recipe, out)  # finished again: trusted again
    assert len(plans_made) == 1
    modified = data.stat().st_mtime_ns + 10**9  # the data file rewritten with the same bytes: read again
    os.utime(data, ns=(modified, modified))
    assert generate(recipe, out).pairs_written == 0 and len(plans_made) == 2
    (out / "plan-00000-of-00001.json").write_text("{not json", encoding="utf-8")  # a damaged record
    assert generate(recipe, out).pairs_written == 0 and len(plans_made) == 3
    generate(recipe, out)
    assert len(plans_made) == 3
    assert generate(recipe, out, shard=(1, 2)).already_done > 0 and len(plans_made) == 4


def test_a_model_that_cannot_load_is_one_error_naming_it_before_anything_is_written(tmp_path):
    from bpo_data.models import ModelNotFound

    data, images = write_llava_source(tmp_path / "src", 2)
    recipe = with_settings(
        load_recipe(str(write_recipe(tmp_path / "r.yaml", data, images))), model=str(tmp_path / "nope")
    )
    with pytest.raises(ModelNotFound, match=r"--model .*nope: no such folder"):
        generate(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()
