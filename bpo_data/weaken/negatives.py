"""Image-weakened negatives: the model answers while its view of the image is noised.

The rejected answer is *sampled from the weakened model* (DESIGN.md). The authors' released
script instead ran visual-contrastive decoding, which moves away from the noisy distribution —
the opposite direction — so nothing of that is done here.
"""

from __future__ import annotations

from concurrent.futures import Future

from PIL import Image

from bpo_data.engines.base import EngineResult, VisionEngine, VisionRequest, streams
from bpo_data.hashing import stable_u64
from bpo_data.recipe import WeakenSpec
from bpo_data.schema import Pair, Reject, Unit, pair_key
from bpo_data.text import normalise
from bpo_data.weaken.view import NoisyView

_SEED_MASK = 0x7FFF_FFFF


def noise_seed(unit_key: str, seed: int) -> int:
    """The noise draw of a unit: fixed by its key and the recipe seed, whatever engine or batch."""
    return stable_u64(unit_key, seed, "noise") & _SEED_MASK


class WeakenedNegatives:
    """Makes ``weaken`` pairs: each unit's image seen through a ``NoisyView``, the answer sampled.

    On an engine that serves many requests at once (vllm) it streams (``in_flight`` > 0: ``submit``
    / ``finish`` one unit at a time); on the hf engine it batches.
    """

    negative_type = "weaken"
    needs_image = True

    def __init__(self, engine: VisionEngine, spec: WeakenSpec, seed: int, generator: str, batch_size: int):
        self.engine = engine
        self.spec = spec
        self.seed = seed
        self.generator = generator
        self.batch_size = batch_size
        self.generated_tokens = 0  # what the engine generated, for throughput figures

    @property
    def in_flight(self) -> int:
        return streams(self.engine)

    def request(self, unit: Unit, image: Image.Image) -> VisionRequest:
        """The unit's request: noise and sampling seeds depend on the unit alone, never on its batch."""
        return VisionRequest(
            image=image,
            messages=unit.messages(),
            sampling=self.spec.sampling,
            view=NoisyView(self.spec.noise, noise_seed(unit.key, self.seed)),
            seed=stable_u64(unit.key, self.seed, "weaken-sampling") & _SEED_MASK,
        )

    def requests(self, units: list[Unit], images: list[Image.Image]) -> list[VisionRequest]:
        return [self.request(unit, image) for unit, image in zip(units, images)]

    def make(self, items: list[tuple[Unit, Image.Image | None]]) -> tuple[list[Pair], list[Reject]]:
        units = [unit for unit, _ in items]
        results = self.engine.generate(self.requests(units, [image for _, image in items]))
        outcomes = [self.finish(unit, result) for unit, result in zip(units, results)]
        return [o for o in outcomes if isinstance(o, Pair)], [o for o in outcomes if isinstance(o, Reject)]

    def submit(self, unit: Unit, image: Image.Image | None) -> Future[EngineResult]:
        return self.engine.submit(self.request(unit, image))  # type: ignore[attr-defined]

    def finish(self, unit: Unit, result: EngineResult) -> Pair | Reject:
        self.generated_tokens += result.completion_tokens
        key = pair_key(unit.key, "weaken")
        text = (result.text or "").strip()
        if result.error is not None:
            return Reject(key, unit.source, "engine_error", result.error, negative_type="weaken")
        if not text:
            detail = "the weakened model produced no text"
            return Reject(key, unit.source, "empty_generation", detail, negative_type="weaken")
        if normalise(text) == normalise(unit.answer):
            return Reject(
                key,
                unit.source,
                "weaken:identical",
                "the weakened answer equals the ground truth, so it carries no preference signal",
                negative_type="weaken",
            )
        return Pair.from_unit(
            unit,
            "weaken",
            text,
            self.generator,
            noise_step=self.spec.noise.step,
            noise_space=self.spec.noise.space,
        )
