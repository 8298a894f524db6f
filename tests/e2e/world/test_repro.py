"""A reduced reproduction end to end: pairs come from the world, training reads them, evaluation the graphs.

The smoke model stands in for the world model (its answers are noise; the wiring is what is checked).
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bpo_data.world import language
from bpo_data.world.evaluate import chair
from bpo_data.world.make import read_scenes, scene_image
from bpo_data.world.params import WORLD
from trainer_min.world_repro import VARIANTS, ReproSettings, reproduce

pytestmark = pytest.mark.slow

SETTINGS = ReproSettings(
    scenes=40,
    eval_scenes=4,
    objhal_scenes=4,
    units=12,
    inject_units=0,
    steps=2,
    batch_size=4,
    max_new_tokens=24,
    jobs=2,
)
CLIP = importlib.util.find_spec("open_clip") is not None
PICKED = tuple(v for v in VARIANTS if v.name in ("bpo", "sft", "bpo-50", "weaken-only", "bpo-filtered"))


def _rows(dataset: Path) -> list[dict]:
    return [
        row
        for path in sorted((dataset / "data").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]


@pytest.fixture(scope="module")
def repro(tmp_path_factory, smoke_model_dir) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("repro")
    return out, reproduce(out, smoke_model_dir, SETTINGS, variants=PICKED, log=lambda _: None)


def test_pairs_are_made_from_the_world_training_split(repro):
    out, results = repro
    train = out / "world" / "train"
    scenes = {s.id: s for s in read_scenes(train)}
    captions = {
        r["id"]: r["conversations"][1]["value"] for r in json.loads((train / "sharegptv.json").read_text())
    }
    rows = _rows(out / "datasets" / "weakened")
    assert len(rows) == results["datasets"]["weakened"]["rows"] > 0
    assert {r["negative_type"] for r in rows} == {"weaken", "inject"}
    assert {r["source"] for r in rows} <= {"world-sharegptv", "world-llavar", "world-llava-instruct"}
    for row in rows:
        scene = scenes[Path(row["image_path"]).stem]  # a training scene, never a held-out one
        assert row["images"][0]["bytes"] == scene_image(train, scene).read_bytes()
        if row["source"] == "world-sharegptv":
            assert row["chosen"][0]["content"] == captions[scene.id]
    weakened = [r for r in rows if r["negative_type"] == "weaken"]
    assert {r["noise_step"] for r in weakened} == {SETTINGS.noise_step}
    assert all(r["generator"].startswith("hf:") for r in weakened)


def test_training_consumed_the_pairs(repro):
    out, results = repro
    rows = results["datasets"]["weakened"]["rows"]
    by_type = results["datasets"]["weakened"]["by_type"]
    units = len({r["id"].rsplit("#", 1)[0] for r in _rows(out / "datasets" / "weakened")})
    expected = {"bpo": rows, "bpo-50": round(rows * 0.5), "weaken-only": by_type["weaken"], "sft": units}
    for name, want in expected.items():
        run = Path(results["runs"][name]["dir"])
        record = json.loads((run / "training_config.json").read_text())
        assert (run / "adapter_model.safetensors").is_file()
        assert record["data"]["rows"] == want == results["runs"][name]["rows"]
        epochs = record["training_arguments"]["num_train_epochs"]
        assert record["global_step"] == math.ceil(epochs * math.ceil(want / SETTINGS.batch_size))
        logged = (run / "logprobs.csv").read_text().strip().splitlines()
        assert len(logged) == 1 + record["global_step"]  # a header, then one row per step
    assert results["runs"]["bpo"]["command"].startswith("bpo-train dpo --dataset ")
    assert "--negative_types weaken" in results["runs"]["weaken-only"]["command"]


def test_evaluation_reads_the_scene_graphs(repro):
    out, results = repro
    split = out / "world" / "eval_violating"
    scenes = read_scenes(split)[: SETTINGS.eval_scenes]
    answers = [
        json.loads(line) for line in (out / "eval" / "base" / "answers" / "eval_violating.jsonl").open()
    ]
    texts = [a["answer"] for a in answers if a.get("question") == language.EVAL_DESCRIBE_PROMPT]
    measured = results["metrics"]["base"]["world"]["eval_violating"]["chair"]
    assert chair(scenes, texts) == measured
    # naming an object the scene graph does not hold is one more hallucinated mention
    absent = next(c for c in WORLD.class_names if c not in scenes[0].classes and c != "sports ball")
    edited = [texts[0] + f" There is a {absent} here.", *texts[1:]]
    assert chair(scenes, edited)["hallucinated_mentions"] == measured["hallucinated_mentions"] + 1

    details = json.loads((out / "eval" / "base" / "objhal" / "objhal" / "hallucinations.json").read_text())
    truth = {int(s.id): s.classes for s in read_scenes(out / "world" / "objhal")}
    assert details["sentences"]
    for sentence in details["sentences"]:
        assert set(sentence["mscoco_gt_words"]) == truth[sentence["image_id"]]


def test_report_has_every_table_and_figure(repro):
    out, results = repro
    report = (out / "report.md").read_text()
    for heading in ("Table 2", "Table 3", "Table 4", "Figure 7", "Figure 8", "Timings", "Versions"):
        assert f"## {heading}" in report
    for name in ("base", *(v.name for v in PICKED)):
        assert f"| {name} |" in report
    assert (out / "figure7.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "figure8.png").read_bytes().startswith(b"\x89PNG")
    assert len(results["target"]) == 5 and all("measured" in t for t in results["target"])
    assert "| bpo-filtered |" in report


def test_filtered_run_trains_on_exactly_the_pairs_the_default_filter_keeps(repro):
    out, results = repro
    every = _rows(out / "datasets" / "weakened")
    assert all(r["claims_added"] is not None for r in every)
    assert all((r["clip_model"] or "").startswith("world-clip@") == CLIP for r in every)

    def kept(row: dict) -> bool:  # DEFAULT_FILTERS: the rejected answer states something new
        return len(row["claims_added"]) >= 1

    filtered = _rows(out / "datasets" / "filtered")
    assert sorted(r["id"] for r in filtered) == sorted(r["id"] for r in every if kept(r))
    made = results["datasets"]["filtered"]
    assert made["rows"] == len(filtered) and sum(made["rejects"].values()) == len(every) - len(filtered)
    run = Path(results["runs"]["bpo-filtered"]["dir"])
    assert json.loads((run / "training_config.json").read_text())["data"]["rows"] == len(filtered)


def test_more_injected_units_add_injected_pairs_on_further_units_only(repro, tmp_path, smoke_model_dir):
    out, _ = repro
    settings = replace(SETTINGS, inject_units=None, jobs=1)  # the default: as many more as ``units``
    said: list[str] = []
    made = reproduce(tmp_path, smoke_model_dir, settings, world=out / "world", variants=(), log=said.append)
    rows = _rows(tmp_path / "datasets" / "weakened")
    before = _rows(out / "datasets" / "weakened")
    unit = {r["id"]: r["id"].rsplit("#", 1)[0] for r in rows}
    assert len(unit) == len(rows) == made["datasets"]["weakened"]["rows"]  # no pair twice
    weakened = {unit[r["id"]] for r in rows if r["negative_type"] == "weaken"}
    injected = {unit[r["id"]] for r in rows if r["negative_type"] == "inject"}
    # the weakened pairs are the reproduction's own; the injected ones reach further units of the sample
    assert {r["id"] for r in rows if r["negative_type"] == "weaken"} == {
        r["id"] for r in before if r["negative_type"] == "weaken"
    }
    assert {r["id"] for r in before if r["negative_type"] == "inject"} < {
        r["id"] for r in rows if r["negative_type"] == "inject"
    }
    assert len(injected - weakened) > 0 and len(weakened | injected) <= 2 * SETTINGS.units
    filtered = _rows(tmp_path / "datasets" / "filtered")
    assert {r["id"] for r in filtered} == {r["id"] for r in rows if len(r["claims_added"]) >= 1}
    assert any("pairs (more-injected): noise step" in line and "24 training units" in line for line in said)
    assert made["settings"]["inject_units"] == 12
    report = (tmp_path / "report.md").read_text()
    assert "12 training units and 12 more with an injected negative only" in report


def test_a_world_with_fewer_held_out_scenes_is_measured_on_all_it_holds(repro, tmp_path, smoke_model_dir):
    import shutil

    from bpo_data.world.make import make_world

    out, _ = repro
    world, held = tmp_path / "world", SETTINGS.eval_scenes
    shutil.copytree(out / "world", world)
    asked = replace(SETTINGS, eval_scenes=held + 3, jobs=1)

    def rerun() -> tuple[dict, list[str]]:
        said: list[str] = []
        made = reproduce(tmp_path / "r", smoke_model_dir, asked, world=world, variants=(), log=said.append)
        measured = made["metrics"]["base"]["world"]["eval_violating"]["chair"]["per_description"]
        assert len(measured) == made["settings"]["eval_scenes"]
        return made, said

    made, said = rerun()
    assert any(
        f"holds {held} held-out scenes per split, fewer than the {held + 3} asked" in line for line in said
    )
    assert made["settings"]["eval_scenes"] == held
    assert f"greedy, on {held} held-out scenes per split" in (tmp_path / "r" / "report.md").read_text()

    # the world made again with the scenes asked: what was measured on fewer is measured again, not reused
    seed = json.loads((world / "world.json").read_text())["seed"]
    shutil.rmtree(world)
    make_world(world, SETTINGS.scenes, seed, eval_scenes=held + 3, objhal_scenes=SETTINGS.objhal_scenes)
    made, said = rerun()
    assert made["settings"]["eval_scenes"] == held + 3
    assert any("eval base: measured before on other scenes" in line for line in said)


def test_the_command_measures_on_the_held_out_scenes_asked(repro, tmp_path, smoke_model_dir):
    from typer.testing import CliRunner

    from trainer_min.cli import app

    out, _ = repro
    flags = ["--units", "4", "--inject-units", "0", "--steps", "1", "--eval-scenes", "2", "--jobs", "1"]
    argv = [
        "world-repro",
        "--out",
        str(tmp_path),
        "--world",
        str(out / "world"),
        "--model",
        str(smoke_model_dir),
    ]
    invoked = CliRunner().invoke(app, [*argv, *flags, "--no-verify"])
    assert invoked.exit_code == 0, invoked.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["eval_scenes"] == 2
    for name, metrics in results["metrics"].items():
        assert len(metrics["world"]["eval_violating"]["chair"]["per_description"]) == 2, name
    assert "bpo-filtered" not in results["metrics"] and "target: BPO lowers CHAIRi" in invoked.stdout


def test_runs_side_by_side_measure_what_one_at_a_time_measures(repro, tmp_path, smoke_model_dir):
    out, results = repro
    alone = reproduce(
        tmp_path,
        smoke_model_dir,
        replace(SETTINGS, jobs=1),
        world=out / "world",
        variants=tuple(v for v in PICKED if v.name in ("bpo", "sft")),
        log=lambda _: None,
    )
    assert set(alone["metrics"]) == {"base", "bpo", "sft"}
    for name in alone["metrics"]:
        measured = {k: v for k, v in alone["metrics"][name].items() if k != "measured_on"}
        assert measured == {k: v for k, v in results["metrics"][name].items() if k != "measured_on"}
    assert set(results["timings_s"]) >= {f"train:{v.name}" for v in PICKED} | {"eval:base"}
    assert results["total_cpu_s"] > sum(results["cpu_s"][f"train:{v.name}"] for v in PICKED)


def test_world_eval_measures_a_run_again_and_on_later_scenes(repro, tmp_path, smoke_model_dir):
    from typer.testing import CliRunner

    from trainer_min.cli import app

    out, results = repro
    world, adapter = out / "world", out / "runs" / "bpo"

    def world_eval(target: Path, *flags: str) -> dict:
        argv = ["world-eval", "--world", str(world), "--model", str(smoke_model_dir)]
        invoked = CliRunner().invoke(app, [*argv, "--adapter", str(adapter), "--out", str(target), *flags])
        assert invoked.exit_code == 0, invoked.output
        return json.loads((target / "metrics.json").read_text())

    again = world_eval(tmp_path / "again", "--limit", str(SETTINGS.eval_scenes))
    reported = results["metrics"]["bpo"]["world"]
    for split in ("eval_clean", "eval_violating"):
        assert again[split] == reported[split]  # the run's own adapter, the same scenes: the same answers

    later = world_eval(tmp_path / "later", "--skip", "2", "--limit", "2")
    split = "eval_violating"
    scenes = read_scenes(world / split)[2:4]
    answers = [json.loads(line) for line in (tmp_path / "later" / "answers" / f"{split}.jsonl").open()]
    described = [a for a in answers if a.get("question") == language.EVAL_DESCRIBE_PROMPT]
    assert [a["id"] for a in described] == [s.id for s in scenes]
    assert later[split]["chair"] == chair(scenes, [a["answer"] for a in described])


def test_a_rerun_reuses_what_matches_and_trains_again_what_does_not(repro, tmp_path, smoke_model_dir):
    import shutil

    out, _ = repro
    copy = tmp_path / "copy"  # a moved folder: its runs still match their flags
    shutil.copytree(out, copy)
    bpo = tuple(v for v in PICKED if v.name == "bpo")

    def rerun(settings: ReproSettings) -> tuple[dict, list[str]]:
        said: list[str] = []
        world = copy / "world"
        results = reproduce(copy, smoke_model_dir, settings, world=world, variants=bpo, log=said.append)
        return results, said

    results, said = rerun(replace(SETTINGS, jobs=1))
    assert any("train bpo: already trained" in line for line in said)
    assert any("eval bpo: already measured" in line for line in said)
    steps = results["runs"]["bpo"]["steps"]

    # killed mid-training: the record written at the start, no adapter yet; the rerun trains it in place
    run = copy / "runs" / "bpo"
    record = json.loads((run / "training_config.json").read_text())
    started = {k: v for k, v in record.items() if k not in ("finished_at", "global_step", "train_loss")}
    (run / "training_config.json").write_text(json.dumps(started))
    for adapter_file in run.glob("adapter_*"):
        adapter_file.unlink()
    results, said = rerun(replace(SETTINGS, jobs=1))
    assert any("train bpo: " in line and "did not finish; training it again" in line for line in said)
    assert results["runs"]["bpo"]["steps"] == steps and (run / "adapter_config.json").is_file()
    assert not list((copy / "runs").glob("bpo.before-*"))

    results, said = rerun(replace(SETTINGS, jobs=1, steps=SETTINGS.steps + 2))
    assert any("train bpo: " in line and "trained with other flags" in line for line in said)
    assert any("eval bpo: measured before" in line for line in said)
    assert results["runs"]["bpo"]["steps"] > steps
    (kept,) = (copy / "runs").glob("bpo.before-*")  # the run trained with the old flags is not lost
    assert json.loads((kept / "training_config.json").read_text())["global_step"] == steps
    assert any("eval base: already measured" in line for line in said)  # nothing of the base model changed
