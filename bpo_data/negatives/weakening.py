"""Image-weakened negatives: the model answers while its view of the image is noised.

The rejected answer is *sampled from the weakened model* (DESIGN.md). The authors' released
script instead ran visual-contrastive decoding, which moves away from the noisy distribution —
the opposite direction — so nothing of that is done here.
"""

from __future__ import annotations

import re

from PIL import Image

from bpo_data.engines.base import VisionEngine, VisionRequest
from bpo_data.hashing import stable_u64
from bpo_data.recipe import WeakenSpec
from bpo_data.schema import Pair, Reject, Unit, pair_key

_NON_WORD = re.compile(r"[\W_]+")


def _normalise(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


class WeakenedNegatives:
    negative_type = "weaken"

    def __init__(self, engine: VisionEngine, spec: WeakenSpec, seed: int, generator: str, meta: dict):
        self.engine = engine
        self.spec = spec
        self.seed = seed
        self.generator = generator
        self.meta = meta
        self.batch_size = spec.batch_size

    def make(self, items: list[tuple[Unit, Image.Image]]) -> tuple[list[Pair], list[Reject]]:
        requests = [
            VisionRequest(
                image=image,
                messages=unit.messages(),
                sampling=self.spec.sampling,
                noise=self.spec.noise,
                noise_seed=stable_u64(unit.key, self.seed, "noise") & 0x7FFF_FFFF,
            )
            for unit, image in items
        ]
        pairs: list[Pair] = []
        rejects: list[Reject] = []
        for (unit, _), result in zip(items, self.engine.generate(requests)):
            key = pair_key(unit.key, "weaken")
            text = (result.text or "").strip()
            if result.error is not None:
                rejects.append(Reject(key, unit.source, "engine_error", result.error, negative_type="weaken"))
            elif not text:
                rejects.append(
                    Reject(
                        key,
                        unit.source,
                        "empty_generation",
                        "the weakened model produced no text",
                        negative_type="weaken",
                    )
                )
            elif _normalise(text) == _normalise(unit.answer):
                rejects.append(
                    Reject(
                        key,
                        unit.source,
                        "weaken:identical",
                        "the weakened answer equals the ground truth, so it carries no preference signal",
                        negative_type="weaken",
                    )
                )
            else:
                pairs.append(
                    Pair.from_unit(
                        unit,
                        "weaken",
                        text,
                        self.generator,
                        noise_step=self.spec.noise.step,
                        noise_space=self.spec.noise.space,
                        meta=self.meta,
                    )
                )
        return pairs, rejects
