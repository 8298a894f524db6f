"""trainer_min data selection and settings: provenance filters, the stable --max-samples subset, SFT rows.

``build_export`` (used by the other test_trainer_* files) writes real shard lines, a manifest and drawn
images, and runs `bpo-data export` on them, so every trainer test reads the published schema.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from bpo_data.export import export_dataset
from bpo_data.recipe import Recipe, SourceSpec
from bpo_data.schema import Pair
from trainer_min.config import TrainConfig, defaults, read_yaml_settings
from trainer_min.data import DataError, as_sft, load_pairs, select_pairs

QUESTION = "What is in the image?"
# Chosen and rejected answers that share no content words, from the smoke tokenizer's corpus.
CHOSEN = ("A red circle is left of a blue square.", "The sign reads OPEN 24 HOURS.")
REJECTED = ("Two green triangles above a yellow car near a tree.", "A black horse stands behind a fence.")
COLOURS = ((220, 30, 30), (30, 30, 220), (30, 180, 30), (230, 200, 0), (120, 0, 160), (0, 160, 160))


def build_export(
    base: Path,
    units: int = 4,
    sources: tuple[str, ...] = ("sharegpt4v", "llavar"),
    negative_types: tuple[str, ...] = ("weaken", "inject"),
    reverse: bool = False,
) -> Path:
    """Export ``units`` units x ``negative_types`` pairs (unit i from ``sources[i % len]``); return it."""
    root = base / "images"
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(units):
        image = Image.new("RGB", (32, 32), (255, 255, 255))
        ImageDraw.Draw(image).rectangle([2 + i, 4, 18 + i, 26], fill=COLOURS[i % len(COLOURS)])
        image.save(root / f"{i}.png")
        source = sources[i % len(sources)]
        for negative_type in negative_types:
            lines.append(
                Pair(
                    key=f"{source}/{i}/0#{negative_type}",
                    unit_key=f"{source}/{i}/0",
                    source=source,
                    record_id=str(i),
                    turn=0,
                    negative_type=negative_type,
                    image_path=f"{i}.png",
                    image_root=str(root),
                    prompt=[{"role": "user", "content": QUESTION}],
                    chosen=CHOSEN[i % 2],
                    rejected=REJECTED[i % 2],
                    generator="rules" if negative_type == "inject" else "hf:smoke",
                    noise_step=500 if negative_type == "weaken" else None,
                    noise_space="pixel" if negative_type == "weaken" else None,
                    error_types=["object"] if negative_type == "inject" else [],
                ).to_dict()
            )
    if reverse:
        lines.reverse()
    out = base / "out"
    out.mkdir()
    recipe = Recipe(
        name="trainer-test", seed=3, sources=[SourceSpec(name=s, format="sharegptv") for s in sources]
    )
    manifest = {
        "recipe": recipe.model_dump(mode="json"),
        "recipe_path": "recipes/trainer-test.yaml",
        "bpo_data_version": "0.1.0",
        "software": {},
        "model": "llava-hf/llava-1.5-7b-hf",
        "generators": ["rules"],
        "created_at": "2025-01-01T00:00:00+00:00",
    }
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / "pairs-00000-of-00001.jsonl").write_text(
        "".join(json.dumps(p) + "\n" for p in lines), encoding="utf-8"
    )
    export_dataset([out], base / "export", version="v0.0.1-test")
    return base / "export"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return load_pairs(str(build_export(tmp_path_factory.mktemp("data"), units=12, sources=("a", "b", "c"))))


def test_max_samples_is_the_same_subset_whatever_the_row_order(pairs, tmp_path):
    reordered = load_pairs(str(build_export(tmp_path, units=12, sources=("a", "b", "c"), reverse=True)))
    assert list(reordered["id"]) != list(pairs["id"])
    for n in (1, 5, 10):
        assert set(select_pairs(pairs, max_samples=n)["id"]) == set(
            select_pairs(reordered, max_samples=n)["id"]
        )


def test_max_samples_subsets_are_nested_and_spread_over_the_data(pairs):
    sizes = (3, 6, 12, 18)
    subsets = [set(select_pairs(pairs, max_samples=n)["id"]) for n in sizes]
    assert [len(s) for s in subsets] == [3, 6, 12, 18]
    assert subsets[0] < subsets[1] < subsets[2] < subsets[3]
    first_rows = set(list(pairs["id"])[:6])
    assert subsets[1] != first_rows  # a hash order, not the head of the file
    assert len(select_pairs(pairs, max_samples=1000)) == len(pairs) == 24


def test_sources_and_negative_types_filter_on_provenance(pairs):
    only_a = select_pairs(pairs, sources=["a"])
    assert set(only_a["source"]) == {"a"} and len(only_a) == 8
    injected = select_pairs(pairs, sources=["a", "c"], negative_types=["inject"])
    assert set(injected["negative_type"]) == {"inject"} and set(injected["source"]) == {"a", "c"}
    assert len(injected) == 8
    both = select_pairs(pairs, negative_types=["weaken"], max_samples=3)
    assert len(both) == 3 and set(both["negative_type"]) == {"weaken"}


def test_an_unknown_filter_value_names_what_the_dataset_has(pairs):
    with pytest.raises(DataError, match=r"--negative-types \['injected'\].*'inject': 12, 'weaken': 12"):
        select_pairs(pairs, negative_types=["injected"])


def test_sft_rows_are_one_prompt_completion_per_unit(pairs):
    rows = as_sft(select_pairs(pairs, sources=["b"]))
    assert len(rows) == 4  # 4 units of source b, each with a weaken and an inject pair
    assert "rejected" not in rows.column_names and "completion" in rows.column_names
    for row in rows:
        assert row["completion"] == [
            {"role": "assistant", "content": CHOSEN[int(row["id"].split("/")[1]) % 2]}
        ]
        assert row["prompt"] == [{"role": "user", "content": QUESTION}] and len(row["images"]) == 1


def test_a_reexport_into_the_same_directory_is_read_afresh(tmp_path):
    target = build_export(tmp_path / "first", units=3)
    assert len(load_pairs(str(target))) == 6
    shutil.rmtree(target)
    shutil.copytree(build_export(tmp_path / "second", units=2), target)
    assert len(load_pairs(str(target))) == 4  # not the cached copy of the first export


def test_a_dataset_without_the_trl_columns_is_refused(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"prompt": ["q"], "chosen": ["a"]}).to_parquet(str(tmp_path / "train.parquet"))
    with pytest.raises(DataError, match=r"lacks the columns \['images', 'rejected'\]"):
        load_pairs(str(tmp_path))


def test_yaml_settings_use_the_flag_names_and_reject_unknown_keys(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("lora-r: 32\nlearning_rate: 1.0e-5\nsources: [a, b]\n")
    assert read_yaml_settings(good, "dpo") == {"lora_r": 32, "learning_rate": 1e-5, "sources": ["a", "b"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("beta: 0.2\n")
    with pytest.raises(ValueError, match="unknown setting 'beta' for `bpo-train sft`"):
        read_yaml_settings(bad, "sft")


def test_the_shipped_configs_are_the_documented_defaults():
    configs = Path(__file__).resolve().parent.parent / "trainer_min" / "configs"
    for objective in ("dpo", "sft"):
        settings = read_yaml_settings(configs / f"bpo_{objective}.yaml", objective)
        expected = defaults(objective)
        # the file states the GPU choices that the defaults leave to the machine
        assert settings.pop("bf16") is True and settings.pop("gradient_checkpointing") is True
        assert settings.pop("dataloader_num_workers") == 4
        assert {k: expected[k] for k in settings} == settings
    assert TrainConfig.for_objective("sft", dataset="d", output_dir="o").num_train_epochs == 1.0


def test_every_setting_is_in_the_readme_with_its_default():
    readme = (Path(__file__).resolve().parent.parent / "trainer_min" / "README.md").read_text(
        encoding="utf-8"
    )
    for name, value in defaults("dpo").items():
        flag = "--" + name.replace("_", "-")
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{flag}`")), None)
        assert row is not None, f"{flag} is missing from the settings table of trainer_min/README.md"
        cells = re.findall(r"`([^`]*)`", row)
        assert value is None or any(_same(cell, value) for cell in cells), f"{flag}: {value!r} not in {row!r}"


def _same(cell: str, value: object) -> bool:
    if isinstance(value, bool):
        return cell.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(cell) == float(value)
        except ValueError:
            return False
    return cell == str(value)
