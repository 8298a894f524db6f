"""Every generated bad record, in both layouts, is a reject with its reason, and no good record is lost.

The records come from ``support.adversarial`` (the same cases the slow CLI suite and RELIABILITY.md
use); here they go through the reader and the image check alone, which is where the reasons are given.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.adversarial import bad_records, expected_good_ids, make_images, outcome_of, write_source

from bpo_data.images import ImageError, check_image
from bpo_data.recipe import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_PIXELS, SourceSpec
from bpo_data.schema import Reject, Unit
from bpo_data.sources import read_units


@pytest.mark.parametrize("layout", ["jsonl", "array"])
def test_each_bad_record_gets_its_reason_and_every_good_record_is_read(tmp_path: Path, layout: str):
    root = make_images(tmp_path)
    data = tmp_path / ("d.jsonl" if layout == "jsonl" else "d.json")
    placed = write_source(data, layout, bad_records())
    spec = SourceSpec(name="src", format="llava", turns="all")
    items = list(read_units(spec, seed=0, data=str(data), image_root=str(root)))

    by_reason: dict[str, set[str]] = {}
    for item in items:
        if isinstance(item, Reject):
            by_reason.setdefault(item.reason, set()).add(item.key)
            continue
        try:
            check_image(
                item.image_root, item.image, DEFAULT_MAX_PIXELS, max_aspect_ratio=DEFAULT_MAX_ASPECT_RATIO
            )
        except ImageError as err:
            by_reason.setdefault(err.reason, set()).add(item.key)
        else:
            by_reason.setdefault("unit", set()).add(item.key)

    got = {spot.case.name: outcome_of(spot, by_reason, "src") for spot in placed}
    assert got == {spot.case.name: spot.case.reason for spot in placed}
    assert {f"src/{rid}/0" for rid in expected_good_ids()} <= by_reason["unit"]
    keys = [item.key for item in items if isinstance(item, Unit)]
    assert len(keys) == len(set(keys))
    marker = next(item for item in items if isinstance(item, Unit) and item.record_id == "marker")
    assert (marker.question, marker.answer) == ("What colour is it?", "A red dog.")
    chat = [item for item in items if isinstance(item, Unit) and item.record_id == "long-chat"]
    assert 0 < len(chat) < 600
    assert max(sum(len(m["content"]) for m in u.messages()) for u in chat) <= 12_000  # text.max_prompt_chars
