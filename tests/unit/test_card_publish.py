"""A publish-ready export: repo id in the card, licence link, sources, full citation, no local paths,
one version spelling for export and push, a held-out split by image, and the composition figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from huggingface_hub.hf_api import CommitInfo, GitRefs
from support.llava_source import write_llava_source, write_recipe
from typer.testing import CliRunner

from bpo_data.cli import app
from bpo_data.export import ExportError, export_dataset, normalise_version
from bpo_data.push import PushError, push_dataset

AUTHORS = "Pi, Renjie and Han, Tianyang and Xiong, Wei and Zhang, Jipeng and Liu, Runtao and"


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A real generation folder: 12 images, two turns each, every pair injected by rules (no model)."""
    root = tmp_path_factory.mktemp("gen")
    data, images = write_llava_source(root / "src", 12)
    recipe = write_recipe(root / "recipe.yaml", data, images, negatives={"inject": 1.0})
    _invoke("generate", "--recipe", str(recipe), "--out", str(root / "out"), "--no-progress")
    return root / "out"


@pytest.fixture(scope="module")
def exported(generated, tmp_path_factory):
    to = tmp_path_factory.mktemp("export") / "bpo"
    result = _invoke(
        "export", str(generated), "--to", str(to), "--repo-id", "me/bpo-pairs", "--test-size", "0.3",
        "--version", "v1.2.0",
    )  # fmt: skip
    return to, result


def test_the_card_is_ready_to_publish(exported, generated):
    to, _ = exported
    card = DatasetCard.load(to / "README.md")
    assert 'load_dataset("me/bpo-pairs", split="train")' in card.text
    assert "<namespace>" not in card.text
    assert card.data.license == "cc-by-nc-4.0" or card.data.license_link  # the link goes with any licence
    assert card.data.license_link.startswith("https://creativecommons.org/") or card.data.license == "other"
    assert card.data.source_datasets  # the test source is a plain LLaVA file: "original"
    assert AUTHORS in card.text and "Pan, Rui and Zhang, Tong" in card.text
    assert "@inproceedings" in card.text and "ECCV 2024" in card.text
    assert "not one of the other methods abbreviated BPO" in card.text
    assert "Version **1.2.0**" in card.text
    assert str(generated.parent) not in card.text  # no local folder of this machine
    assert "recipe file: `recipe.yaml`" in card.text


def test_the_held_out_split_keeps_each_image_on_one_side(exported):
    from datasets import load_dataset

    to, result = exported
    tests = sorted((to / "data").glob("test-*.parquet"))
    trains = sorted((to / "data").glob("train-*.parquet"))
    assert tests and trains
    card = DatasetCard.load(to / "README.md")
    assert card.data.configs[0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "test", "path": "data/test-*"},
    ]
    dataset = load_dataset(str(to))
    train_images, test_images = set(dataset["train"]["image_path"]), set(dataset["test"]["image_path"])
    assert train_images and test_images and not train_images & test_images
    stats = json.loads((to / "export_stats.json").read_text())
    assert stats["test_pairs"] == dataset["test"].num_rows
    assert stats["pairs"] == dataset["train"].num_rows + dataset["test"].num_rows
    assert f"test split {dataset['test'].num_rows}" in result.stderr


def test_the_composition_figure_is_written_and_shown(exported):
    pytest.importorskip("matplotlib")
    to, _ = exported
    assert (to / "composition.png").stat().st_size > 0
    assert "![composition](composition.png)" in (to / "README.md").read_text()
    stats = json.loads((to / "export_stats.json").read_text())
    assert stats["composition_figure"] and stats["error_types"]  # rules record the errors they inject


def test_without_matplotlib_the_card_says_the_figure_is_missing(generated, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as if not installed
    stats = export_dataset([generated], tmp_path / "to", version="0.1.0")
    assert not stats.composition_figure and not (tmp_path / "to" / "composition.png").exists()
    assert "matplotlib was not installed" in (tmp_path / "to" / "README.md").read_text()


def test_pipes_get_the_load_line_and_people_get_the_rest(exported):
    to, result = exported
    assert result.stdout.strip() == f'from datasets import load_dataset; ds = load_dataset("{to}")["train"]'
    assert "exported" in result.stderr
    assert "1 parquet files" not in result.stderr and "parquet file" in result.stderr


@pytest.mark.parametrize("version", ["1.2", "v1", "1.2.0 ", "V1.2.0", "latest"])
def test_a_version_that_is_not_x_y_z_is_refused(version):
    with pytest.raises(ExportError, match="MAJOR.MINOR.PATCH"):
        normalise_version(version)


def test_semantic_versions_keep_their_prerelease_and_lose_the_v():
    assert [normalise_version(v) for v in ("v1.2.0", "1.2.0", "v0.0.1-test", "2.0.0-rc.1+b7")] == [
        "1.2.0",
        "1.2.0",
        "0.0.1-test",
        "2.0.0-rc.1+b7",
    ]


def test_one_version_spelling_for_export_and_push(exported, tmp_path):
    import shutil

    to, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(to, copy)
    hub = _Hub()
    push_dataset(copy, "me/elsewhere", api=hub)  # no tag: the export's version, spelled vX.Y.Z
    assert hub.tagged == ["v1.2.0"]
    card = (copy / "README.md").read_text()
    assert 'load_dataset("me/elsewhere", split="train")' in card and "me/bpo-pairs" not in card
    assert hub.uploaded_card == card  # the Hub gets the card that names it
    assert push_dataset(copy, "me/elsewhere", tag="1.2.0", api=_Hub())  # either spelling
    with pytest.raises(PushError, match="export again with --version 2.0.0"):
        push_dataset(copy, "me/elsewhere", tag="v2.0.0", api=_Hub())


class _Hub:
    """The Hub's side of a push, recorded (the real Hub is out of reach in tests)."""

    def __init__(self):
        self.tagged: list[str] = []
        self.uploaded_card = ""

    def create_repo(self, repo_id, **kwargs):
        pass

    def list_repo_refs(self, repo_id, **kwargs):
        return GitRefs(branches=[], converts=[], tags=[])

    def upload_folder(self, **kwargs):
        self.uploaded_card = (Path(kwargs["folder_path"]) / "README.md").read_text()
        oid = "3f" * 20
        return CommitInfo(
            commit_url=f"https://huggingface.co/datasets/me/elsewhere/commit/{oid}",
            commit_message="",
            commit_description="",
            oid=oid,
        )

    def create_tag(self, repo_id, tag, **kwargs):
        self.tagged.append(tag)


def test_parquet_files_are_named_by_split(exported):
    to, _ = exported
    for path in (to / "data").iterdir():
        assert path.name.split("-")[0] in ("train", "test")
        assert pq.read_metadata(path).num_rows > 0


def test_a_model_folder_and_recipe_path_show_by_name_only(tmp_path):
    from bpo_data.card import render_card
    from bpo_data.export_stats import ExportStats
    from bpo_data.manifest import read_manifest, write_manifest
    from bpo_data.recipe import Recipe, SourceSpec

    model = tmp_path / "models" / "my-llava"
    recipe = Recipe(
        name="t", model=str(model), sources=[SourceSpec(name="s", format="llavar", data=str(tmp_path))]
    )
    write_manifest(tmp_path, recipe, str(tmp_path / "recipes" / "mine.yaml"), [f"hf:{model}"])
    stats = ExportStats(version="1.0.0", pairs=1, counts={"s": {"weaken": 1}}, generators={f"hf:{model}": 1})
    text = str(render_card(stats, [read_manifest(tmp_path)]))
    assert str(tmp_path) not in text
    assert "model: `my-llava`" in text and "`hf:my-llava`" in text and "recipe file: `mine.yaml`" in text
