"""Export: shard lines in; a dataset that `load_dataset` and stock TRL DPOTrainer read, and its card, out."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from bpo_data.card import choose_license, size_category
from bpo_data.export import ExportError, LengthCounter, export_dataset
from bpo_data.manifest import write_manifest
from bpo_data.recipe import DEFAULT_MAX_PIXELS, Recipe, SourceSpec
from bpo_data.schema import Pair, Reject

QUESTION = "What is in the image?"


def _draw(path: Path, seed: int) -> None:
    image = Image.new("RGB", (40 + seed, 30), (255, 255, 255))
    ImageDraw.Draw(image).rectangle([seed * 3, 4, seed * 3 + 12, 22], fill=(200, 30 * seed % 255, 40))
    image.save(path)


def _pair(
    key: str, image_path: str, image_root: Path, chosen: str = "A red box on the left.", **extra
) -> dict:
    unit_key, negative_type = key.split("#")
    source, record_id, turn = unit_key.split("/")
    fields = {
        "prompt": [{"role": "user", "content": QUESTION}],
        "rejected": "Two blue dogs sleep on a sofa.",
        "generator": "rules" if negative_type == "inject" else "hf:llava-hf/llava-1.5-7b-hf",
        "noise_step": 500 if negative_type == "weaken" else None,
        "noise_space": "pixel" if negative_type == "weaken" else None,
        "error_types": ["object"] if negative_type == "inject" else [],
    }
    fields.update(extra)
    pair = Pair(
        key=key,
        unit_key=unit_key,
        source=source,
        record_id=record_id,
        turn=int(turn),
        negative_type=negative_type,
        image_path=image_path,
        image_root=str(image_root),
        chosen=chosen,
        **fields,
    )
    return pair.to_dict()


def _write_out(
    out: Path,
    pairs: dict[str, list[dict]],
    rejects: list[dict] = (),
    model: str = "llava-hf/llava-1.5-7b-hf",
    max_pixels: int | None = None,
) -> Path:
    out.mkdir(parents=True)
    recipe = Recipe(
        name="test",
        seed=7,
        model=model,
        sources=[
            SourceSpec(name="sharegpt4v", format="sharegptv"),
            SourceSpec(name="llavar", format="llavar"),
        ],
        **({"images": {"max_pixels": max_pixels}} if max_pixels else {}),
    )
    write_manifest(out, recipe, "recipes/test.yaml", ["rules"])
    for name, records in pairs.items():
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (out / "rejects-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejects))
    return out


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> SimpleNamespace:
    """Two generation outputs: a key in both, a torn last line, a missing image and an escaping one."""
    base = tmp_path_factory.mktemp("outputs")
    root = base / "images"
    root.mkdir()
    for i in range(6):
        _draw(root / f"{i}.png", i)
    _draw(base / "outside.png", 9)  # exists, but outside the image root
    first = _write_out(
        base / "out1",
        {
            "pairs-00000-of-00002.jsonl": [
                _pair("sharegpt4v/0/0#weaken", "0.png", root),
                _pair("sharegpt4v/0/0#inject", "0.png", root),
                _pair("llavar/1/0#weaken", "1.png", root),
            ],
            "pairs-00001-of-00002.jsonl": [
                _pair(
                    "llavar/2/1#inject",
                    "2.png",
                    root,
                    prompt=[
                        {"role": "user", "content": "What does the sign say?"},
                        {"role": "assistant", "content": "OPEN 24 HOURS."},
                        {"role": "user", "content": "What colour is it?"},
                    ],
                ),
                _pair("sharegpt4v/3/0#weaken", "missing.png", root),
                _pair("llavar/4/0#inject", "../outside.png", root),
            ],
        },
        rejects=[
            Reject("sharegpt4v/9/0#inject", "sharegpt4v", "invalid_rewrite:too_short", "too short").to_dict(),
            Reject("llavar/1/0#weaken", "llavar", "engine_error", "retried later").to_dict(),
        ],
    )
    second = _write_out(
        base / "out2",
        {
            "pairs-00000-of-00001.jsonl": [
                _pair("sharegpt4v/0/0#inject", "0.png", root, chosen="A duplicate that must lose."),
                _pair("sharegpt4v/5/0#inject", "5.png", root),
            ]
        },
    )
    with (second / "pairs-00000-of-00001.jsonl").open("ab") as handle:
        # a writer killed mid-line, in the middle of a two-byte character
        handle.write('{"key": "sharegpt4v/6/0#weaken", "chosen": "caf\u00e9'.encode()[:-1])
    return SimpleNamespace(
        dirs=[first, second],
        root=root,
        ids={
            "sharegpt4v/0/0#weaken",
            "sharegpt4v/0/0#inject",
            "llavar/1/0#weaken",
            "llavar/2/1#inject",
            "sharegpt4v/5/0#inject",
        },
    )


@pytest.fixture(scope="module")
def exported(outputs, tmp_path_factory) -> SimpleNamespace:
    to = tmp_path_factory.mktemp("export") / "bpo"
    stats = export_dataset(outputs.dirs, to, version="v0.1.0", rows_per_file=2)
    from datasets import load_dataset

    return SimpleNamespace(to=to, stats=stats, ds=load_dataset(str(to))["train"])


def test_dataset_loads_with_explicit_features_and_the_images_embedded(outputs, exported):
    from datasets import Image as ImageFeature
    from datasets import List

    ds = exported.ds
    assert set(ds["id"]) == outputs.ids and len(ds) == len(outputs.ids)
    assert isinstance(ds.features["images"], List) and isinstance(ds.features["images"].feature, ImageFeature)
    assert ds.features["noise_step"].dtype == "int32" and ds.features["turn"].dtype == "int32"
    for row in ds:
        (image,) = row["images"]
        source = Image.open(outputs.root / row["image_path"]).convert("RGB")
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(source)), row["id"]
        assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["role"] == "assistant"
        assert row["prompt"][-1]["role"] == "user" and row["question"] == row["prompt"][-1]["content"]


def test_first_key_wins_and_provenance_is_kept(exported):
    rows = {row["id"]: row for row in exported.ds}
    assert rows["sharegpt4v/0/0#inject"]["chosen"] == [
        {"role": "assistant", "content": "A red box on the left."}
    ]
    context = rows["llavar/2/1#inject"]
    assert [m["role"] for m in context["prompt"]] == ["user", "assistant", "user"]
    assert context["question"] == "What colour is it?" and context["turn"] == 1
    weaken = rows["llavar/1/0#weaken"]
    assert (weaken["noise_step"], weaken["noise_space"], weaken["error_types"]) == (500, "pixel", [])
    inject = rows["sharegpt4v/5/0#inject"]
    assert (inject["noise_step"], inject["error_types"], inject["generator"]) == (None, ["object"], "rules")


def test_what_was_left_out_is_counted(exported):
    stats = exported.stats
    assert stats.pairs == len(exported.ds)
    assert stats.duplicates_dropped == 1
    assert stats.torn_lines == 1
    assert stats.image_errors == {"missing_image": 1, "unsafe_image_path": 1}
    # the engine_error reject was retried into a pair, so only the final reject counts
    assert stats.generation_rejects == {"invalid_rewrite:too_short": 1}
    assert json.loads((exported.to / "export_stats.json").read_text())["pairs"] == stats.pairs


def test_rows_are_split_into_numbered_parquet_files(exported):
    names = sorted(p.name for p in (exported.to / "data").iterdir())
    total = math.ceil(len(exported.ds) / 2)
    assert names == [f"train-{i:05d}-of-{total:05d}.parquet" for i in range(total)]
    rows = [pq.read_metadata(exported.to / "data" / name).num_rows for name in names]
    assert max(rows) <= 2 and sum(rows) == len(exported.ds)
    assert exported.stats.files == [f"data/{name}" for name in names]


def test_card_metadata_and_composition_match_the_data(exported):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(exported.to / "README.md")
    assert card.data.configs == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    assert card.data.size_categories == ["n<1K"]
    assert card.data.license == "cc-by-nc-4.0"  # ShareGPT4V and LLaVAR are non-commercial
    assert set(card.data.task_categories) == {"visual-question-answering", "image-text-to-text"}
    counts = Counter(zip(exported.ds["source"], exported.ds["negative_type"]))
    for source in ("llavar", "sharegpt4v"):
        weaken, inject = counts[(source, "weaken")], counts[(source, "inject")]
        assert f"| {source} | {weaken} | {inject} | **{weaken + inject}** |" in card.text
    assert f"| **total** | **{sum(c for (_, t), c in counts.items() if t == 'weaken')}** |" in card.text
    assert "seed: 7" in card.text and "Version **0.1.0**" in card.text  # export --version v0.1.0, normalised
    assert "/images" not in card.text  # machine paths stay out of the published recipe
    assert "recipe file: `test.yaml`" in card.text  # its name, not the path it was read from
    assert "not for training" not in card.text


def test_export_warns_with_the_key_of_a_skipped_image(outputs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bpo_data.export"):
        export_dataset(outputs.dirs, tmp_path / "to", version="v0.1.0")
    assert "sharegpt4v/3/0#weaken" in caplog.text and "missing_image" in caplog.text


def test_smoke_model_pairs_carry_the_warning(outputs, tmp_path):
    out = _write_out(
        tmp_path / "out",
        {"pairs-00000-of-00001.jsonl": [_pair("llavar/1/0#weaken", "1.png", outputs.root)]},
        model="smoke",
    )
    stats = export_dataset([out], tmp_path / "to", version="v0.0.1")
    assert stats.smoke
    assert "rejected answers are noise; not for training" in (tmp_path / "to" / "README.md").read_text()


def test_the_image_limit_is_the_one_of_the_recipe_that_made_the_pairs(outputs, tmp_path):
    pairs = {"pairs-00000-of-00001.jsonl": [_pair("llavar/1/0#weaken", "1.png", outputs.root)]}
    width, height = Image.open(outputs.root / "1.png").size
    small = _write_out(tmp_path / "small", pairs, max_pixels=width * height - 1)
    with pytest.raises(ExportError, match="image_too_large"):
        export_dataset([small], tmp_path / "to-small", version="v0.0.1")
    large = _write_out(tmp_path / "large", pairs, max_pixels=100 * DEFAULT_MAX_PIXELS)
    assert export_dataset([large], tmp_path / "to-large", version="v0.0.1").pairs == 1


def test_reexport_replaces_a_previous_export_and_refuses_anything_else(outputs, tmp_path):
    to = tmp_path / "to"
    export_dataset(outputs.dirs, to, version="v0.1.0", rows_per_file=1)
    export_dataset(outputs.dirs, to, version="v0.2.0", rows_per_file=100)
    assert sorted(p.name for p in (to / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert json.loads((to / "export_stats.json").read_text())["version"] == "0.2.0"  # one spelling
    assert sorted(p.name for p in tmp_path.iterdir()) == ["to"]  # no staging or old copies left behind

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a bpo-data export"):
        export_dataset(outputs.dirs, foreign, version="v0.1.0")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_load_dataset_sees_a_reexport_into_the_same_folder(outputs, tmp_path, monkeypatch):
    """datasets keys its cache of a folder with YAML configs on the card's dataset_info, not on the files."""
    from datasets import load_dataset

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    to = tmp_path / "same-name"
    export_dataset(outputs.dirs, to, version="v0.1.0")
    assert len(load_dataset(str(to))["train"]) == len(outputs.ids)
    export_dataset(outputs.dirs[1:], to, version="v0.1.1")
    reloaded = load_dataset(str(to))["train"]
    assert sorted(reloaded["id"]) == ["sharegpt4v/0/0#inject", "sharegpt4v/5/0#inject"]


def test_an_output_dir_without_manifest_is_refused_by_name(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportError, match="out has no manifest.json"):
        export_dataset([tmp_path / "out"], tmp_path / "to", version="v0.1.0")
    assert not (tmp_path / "to").exists()


def test_length_quantiles_are_nearest_rank():
    lengths = LengthCounter()
    for words in range(1, 21):
        lengths.add(words)
    assert lengths.summary() == {"mean": 10.5, "median": 10.0, "p95": 19.0}


@pytest.mark.parametrize(
    ("formats", "expected"),
    [
        (["sharegptv", "llava-instruct"], "cc-by-nc-4.0"),
        (["llava-instruct"], "cc-by-4.0"),
        (["llavar", "sample"], "other"),
        ([], "other"),
    ],
)
def test_the_licence_is_the_most_restrictive_of_the_sources(formats, expected):
    license_id, note = choose_license(formats)
    assert license_id == expected
    assert ("OpenAI" in note) == ("llava-instruct" in formats)


def test_size_categories_follow_the_hub_buckets():
    labels = [size_category(n) for n in (0, 999, 1_000, 9_999, 10_000, 167_710, 1_000_000)]
    assert labels == ["n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M"]


@pytest.mark.slow  # a subprocess, a server or training: seconds
def test_trl_dpo_trains_on_the_export_without_mapping(exported, smoke_model_dir, tmp_path):
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaProcessor
    from trl import DPOConfig, DPOTrainer

    model = LlavaForConditionalGeneration.from_pretrained(smoke_model_dir)
    processor = LlavaProcessor.from_pretrained(smoke_model_dir)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=None,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=exported.ds, processing_class=processor)
    trainer.train()

    assert trainer.state.global_step == 2
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    # the image reached the model: the patch embedding and the projector were trained too
    assert "model.vision_tower.embeddings.patch_embedding.weight" in changed
    assert any("multi_modal_projector" in name for name in changed)
    assert any("language_model" in name for name in changed)


def test_a_pair_line_of_the_wrong_shape_is_refused_naming_its_line(outputs, tmp_path):
    bad = dict(_pair("llavar/7/0#inject", "1.png", outputs.root), prompt="a string, not messages")
    out = _write_out(
        tmp_path / "out",
        {"pairs-00000-of-00001.jsonl": [_pair("llavar/8/0#inject", "1.png", outputs.root), bad]},
    )
    with pytest.raises(ExportError, match=r"pairs-00000-of-00001.jsonl:2 has \['prompt'\] of the wrong type"):
        export_dataset([out], tmp_path / "ds", version="0.1.0")
    assert not list(tmp_path.glob(".ds.*")), "the staging folder is removed when the export fails"


def test_a_staging_folder_of_a_killed_export_is_removed_by_the_next(outputs, tmp_path):
    import os
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / f".ds.tmp-{host}-{dead.pid}-x1y2"
    live = tmp_path / f".ds.tmp-{host}-{os.getpid()}-a1b2"  # an export running now: left alone
    elsewhere = tmp_path / f".ds.old-other-host-{dead.pid}-c3d4"  # another host's: cannot be checked
    for folder in (stale, live, elsewhere):
        (folder / "data").mkdir(parents=True)
    export_dataset(outputs.dirs, tmp_path / "ds", version="0.1.0")
    assert not stale.exists() and live.exists() and elsewhere.exists()


def test_export_trusts_what_the_generation_run_trusted(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "coco").mkdir(parents=True)
    root.mkdir()
    _draw(outside / "coco" / "1.png", 1)
    (root / "coco").symlink_to(outside / "coco")
    out = _write_out(
        tmp_path / "out", {"pairs-00000-of-00001.jsonl": [_pair("llavar/1/0#inject", "coco/1.png", root)]}
    )
    manifest = json.loads((out / "manifest.json").read_text())
    with pytest.raises(ExportError, match=r"image errors \{'unsafe_image_path': 1\}"):
        export_dataset([out], tmp_path / "refused", version="0.1.0")
    manifest["run"]["trust_image_dirs"] = [str(outside / "coco")]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert export_dataset([out], tmp_path / "trusted", version="0.1.0").pairs == 1
    assert export_dataset([out], tmp_path / "flag", version="0.1.0", trusted=[str(outside)]).pairs == 1
