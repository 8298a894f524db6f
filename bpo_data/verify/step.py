"""``Verify``: the shard pipeline's step that measures each finished pair's evidence, in batches.

It sits after the negatives are made and before the filters (which read what it measured)::

    … → make negatives → Verify → filters (evidence thresholds, word/overlap thresholds) → write

Pairs are gathered into batches (CLIP runs batched; a batch's pairs of one unit share one image
and their chosen answer's sentences) and passed on in the order they came; rejects pass at once.
A pair whose image cannot be read again gets evidence without CLIP scores, so a CLIP threshold
drops it with that reason rather than letting it through unmeasured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from functools import cached_property

from bpo_data.images import ImageError, load_image
from bpo_data.pipeline import Step, Work
from bpo_data.schema import Pair
from bpo_data.verify.clip import ClipScorer
from bpo_data.verify.evidence import PairText, measure


@dataclass
class VerifiedPair(Pair):
    """A pair with its evidence: ``to_dict`` writes it as the record's ``evidence`` mapping."""

    evidence: dict | None = None


def with_evidence(pair: Pair, evidence: dict) -> VerifiedPair:
    return VerifiedPair(**{f.name: getattr(pair, f.name) for f in fields(Pair)}, evidence=evidence)


class Verify(Step):
    """Adds ``evidence`` to every pair (see ``bpo_data.verify.evidence``); ``scorer`` None skips CLIP.

    ``scorer`` may also be a function that loads one: it is called at the first pair, so a resume
    with nothing left to do never loads CLIP.
    """

    name = "verify"

    def __init__(
        self,
        scorer: ClipScorer | Callable[[], ClipScorer] | None,
        batch_size: int = 64,
        max_pixels: int = 64_000_000,
    ):
        super().__init__()
        self._scorer = scorer
        self.batch_size = batch_size
        self.max_pixels = max_pixels

    @cached_property
    def scorer(self) -> ClipScorer | None:
        return (
            self._scorer if self._scorer is None or isinstance(self._scorer, ClipScorer) else self._scorer()
        )

    def run(self, items: Iterable[Work]) -> Iterator[Work]:
        batch: list[Work] = []
        for work in items:
            if work.pair is None:
                yield work
                continue
            batch.append(work)
            if len(batch) >= self.batch_size:
                yield from self._verify(batch)
                batch = []
        yield from self._verify(batch)

    def _verify(self, batch: list[Work]) -> Iterator[Work]:
        if not batch:
            return
        texts = [PairText.from_record(work.pair.to_dict()) for work in batch]
        loaded: dict[str, object] = {}  # pairs of one picture (turns, negative types) decode it once
        images = []
        for work, text in zip(batch, texts):
            if self.scorer is not None and text.image_key not in loaded:
                loaded[text.image_key] = self._image(work)
            images.append(loaded.get(text.image_key))
        for work, evidence in zip(batch, measure(texts, images, self.scorer)):
            work.pair = with_evidence(work.pair, evidence.to_dict())
            self.stats["verified"] += 1
            yield work

    def _image(self, work: Work):
        if work.image is not None:
            return work.image
        try:
            return load_image(work.unit.image_root, work.unit.image, self.max_pixels)
        except ImageError as err:
            self.stats[f"no clip score: {err.reason}"] += 1
            return None
