"""The shipped world model has the language prior the demo and the reproduction rely on.

Measured as ``bpo_data.world.evaluate`` measures it, on fresh scenes the model never saw (a seed of
their own, none of its training scenes): the absent partner of a prior pair is named far more often
next to its first object than in a neutral scene. (How the prior grows with noise is Figure 5's
question, measured by ``bpo-data world probe`` on the held-out split, not asserted here.)
"""

from __future__ import annotations

import pytest

from bpo_data.engines.base import VisionRequest
from bpo_data.recipe import SamplingParams
from bpo_data.world.evaluate import DESCRIPTION_TOKENS, load_engine, prior_rates
from bpo_data.world.language import EVAL_DESCRIBE_PROMPT
from bpo_data.world.make import sample_split
from bpo_data.world.model import trained_world, world_model_dir
from bpo_data.world.scenes import draw_scene

pytestmark = pytest.mark.slow

SEED, SCENES = 11, 60


def _describe(engine, scenes) -> list[str]:
    sampling = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=DESCRIPTION_TOKENS)
    requests = [
        VisionRequest(
            image=draw_scene(scene),
            messages=[{"role": "user", "content": EVAL_DESCRIBE_PROMPT}],
            sampling=sampling,
        )
        for scene in scenes
    ]
    results = engine.generate(requests)
    assert all(r.error is None for r in results), [r.error for r in results]
    return [r.text or "" for r in results]


def test_absent_partners_are_named_next_to_their_first_object_not_elsewhere():
    engine = load_engine(world_model_dir())
    trained = trained_world(world_model_dir())  # the scenes it trained on are left out
    seen = {s.signature() for s in sample_split("train", trained["scenes"], trained["seed"], ("prior",))}
    violating = sample_split("eval_violating", SCENES, SEED, ("violating",), avoid=seen)
    clean = sample_split("eval_clean", SCENES, SEED, ("prior",), avoid=seen)
    rates = prior_rates(violating, _describe(engine, violating), clean, _describe(engine, clean))
    engine.close()
    assert rates["partner_named_violating"] >= 10.0, rates
    assert rates["partner_named_violating"] >= 3 * rates["partner_named_neutral"], rates
