"""trainer_min data selection: provenance filters, the stable --max-samples subset, SFT rows, locations."""

from __future__ import annotations

import shutil

import pytest
from support.trainer import CHOSEN, QUESTION, build_export

from trainer_min.data import DataError, as_sft, check_dataset_location, load_pairs, select_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return load_pairs(str(build_export(tmp_path_factory.mktemp("data"), units=12, sources=("a", "b", "c"))))


def test_max_samples_is_the_same_subset_whatever_the_row_order(pairs, tmp_path):
    reordered = load_pairs(str(build_export(tmp_path, units=12, sources=("a", "b", "c"), reverse=True)))
    assert sorted(reordered["id"]) == sorted(pairs["id"])
    for n in (1, 5, 10):
        assert set(select_pairs(pairs, max_samples=n)["id"]) == set(
            select_pairs(reordered, max_samples=n)["id"]
        )


def test_max_samples_subsets_are_nested_and_spread_over_the_data(pairs):
    sizes = (3, 6, 12, 18)
    subsets = [set(select_pairs(pairs, max_samples=n)["id"]) for n in sizes]
    assert [len(s) for s in subsets] == [3, 6, 12, 18]
    assert subsets[0] < subsets[1] < subsets[2] < subsets[3]
    assert subsets[1] != set(list(pairs["id"])[:6])  # a hash order, not the head of the file
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


def test_a_missing_local_folder_is_told_apart_from_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    check_dataset_location("out")  # exists
    check_dataset_location("someone/bpo-pairs")  # a Hub id: looked up later
    check_dataset_location("bpo-pairs")
    for local in ("out/demo-dataset", "./demo", str(tmp_path / "nope"), "a/b/c", "~/nope-not-here", " "):
        with pytest.raises(DataError, match="--dataset"):
            check_dataset_location(local)
