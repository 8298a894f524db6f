"""Evidence filters drop exactly the pairs that miss a threshold, each with its reason, and no others."""

from __future__ import annotations

import pytest
from support.world import world_recipe

from bpo_data.pipeline import Work, run_steps
from bpo_data.pipeline.steps import Step
from bpo_data.recipe import FilterSpec
from bpo_data.schema import Pair, Unit
from bpo_data.verify.evidence import Evidence
from bpo_data.verify.filters import EvidenceFilter, needs_evidence, refusal
from bpo_data.verify.step import with_evidence


def _evidence(chosen=0.3, rejected=0.2, added=(), removed=(), claims=("colour:red",)) -> Evidence:
    return Evidence(list(added), list(removed), chosen, rejected, "m", 0.9, list(claims))


def _work(index: int, kind: str, evidence: Evidence | None) -> Work:
    unit = Unit(f"s/{index}/0", "s", str(index), 0, "x.png", "root", "Q?", "A dog.")
    pair = Pair.from_unit(unit, kind, "A cat.", "test")
    if evidence is not None:
        pair = with_evidence(pair, evidence.to_dict())
    return Work(unit=unit, kind=kind, pair=pair)


class _Collect(Step):
    def __init__(self, items):
        super().__init__()
        self.items, self.out = items, []

    def run(self, _):
        yield from self.items


def _run(items, *filters):
    out = []

    class Sink(Step):
        def run(self, stream):
            for work in stream:
                out.append(work)
                yield work

    run_steps([_Collect(items), *filters, Sink()])
    return out


def test_each_threshold_drops_exactly_the_pairs_below_it():
    margins = [-0.05, 0.0, 0.0099, 0.01, 0.2]
    items = [_work(i, "inject", _evidence(0.3, 0.3 - m)) for i, m in enumerate(margins)]
    step = EvidenceFilter(FilterSpec(min_clip_margin=0.01))
    out = _run(items, step)
    kept = [w.pair.evidence["clip_chosen"] - w.pair.evidence["clip_rejected"] for w in out if w.pair]
    assert [round(m, 4) for m in kept] == [0.01, 0.2]
    assert [w.reject.reason for w in out if w.reject] == ["filter:min_clip_margin"] * 3
    assert step.stats == {"dropped: min_clip_margin": 3, "kept": 2}


def test_a_filter_for_one_negative_type_leaves_the_other_alone():
    items = [_work(0, "weaken", _evidence(added=[])), _work(1, "inject", _evidence(added=[]))]
    out = _run(items, EvidenceFilter(FilterSpec(min_objects_added=1, negative_type="weaken")))
    assert out[0].reject.reason == "filter:min_objects_added" and "fewer than 1" in out[0].reject.detail
    assert out[1].pair is not None


def test_an_unmeasured_pair_is_dropped_saying_why():
    reason, detail = refusal(Evidence([], [], None, None, None, 1.0, []), FilterSpec(min_clip_chosen=0.1))
    assert reason == "min_clip_chosen" and "image could not be read" in detail
    assert refusal(None, FilterSpec(min_objects_added=1))[0] == "min_objects_added"
    # evidence measured before claims_added existed: the claims filter cannot vouch for it
    older = Evidence.from_dict({"objects_added": [], "objects_removed": [], "text_overlap": 0.5})
    assert (
        older.claims_added is None and refusal(older, FilterSpec(min_claims_added=1))[0] == "min_claims_added"
    )
    assert refusal(_evidence(), FilterSpec(max_text_overlap=0.5)) is None  # no evidence threshold


@pytest.mark.parametrize(
    ("thresholds", "evidence", "reason"),
    [
        ({"min_clip_chosen": 0.25}, _evidence(chosen=0.2, rejected=0.1), "min_clip_chosen"),
        ({"max_clip_rejected": 0.25}, _evidence(chosen=0.4, rejected=0.3), "max_clip_rejected"),
        ({"min_objects_added": 2}, _evidence(added=["cat"]), "min_objects_added"),
        ({"min_objects_added": 1, "min_clip_margin": 0.0}, _evidence(added=["cat"]), None),
        ({"min_claims_added": 1}, _evidence(claims=()), "min_claims_added"),
        ({"min_claims_added": 1}, _evidence(claims=["size:large"], chosen=None, rejected=None), None),
    ],
)
def test_refusal_names_the_threshold_missed(thresholds, evidence, reason):
    refused = refusal(evidence, FilterSpec(**thresholds))
    assert (refused[0] if refused else None) == reason


def test_filter_specs_with_only_word_thresholds_need_no_evidence():
    assert not needs_evidence(FilterSpec(max_text_overlap=0.9))
    assert needs_evidence(FilterSpec(min_clip_margin=0.0))


def test_a_recipe_whose_filters_read_evidence_must_say_how_it_is_measured():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"filters\.0 bounds min_clip_margin.*add `verify:"):
        world_recipe([{"min_clip_margin": 0.0}])
    with pytest.raises(ValidationError, match="verify.clip_model is null"):
        world_recipe([{"min_clip_margin": 0.0}], {"clip_model": None})
    assert world_recipe([{"min_objects_added": 1}], {"clip_model": None}).verify.clip_model is None
    assert world_recipe([{"min_claims_added": 1}], {"clip_model": None}).verify.clip_model is None
