"""The step that makes negatives: batches of work go to the maker of their negative type."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from PIL import Image

from bpo_data.pipeline.steps import Step, Work
from bpo_data.schema import Pair, Reject, Unit


class NegativeMaker(Protocol):
    """Makes one negative type for a batch of (unit, image or None): pairs, and rejects saying why not."""

    negative_type: str
    generator: str  # recorded in each pair: engine and model (``hf:llava-hf/…``) or ``rules``
    batch_size: int
    needs_image: bool

    def make(self, items: list[tuple[Unit, Image.Image | None]]) -> tuple[list[Pair], list[Reject]]: ...


class MakeNegatives(Step):
    """Batches items per negative type and hands each full batch to its maker.

    The makers (and the models behind them) are built on the first item that needs one, so a rerun
    of a finished shard never loads a model. A batch that raises (out of memory, say) is split in
    two and retried, so only the units that still fail become ``engine_error`` rejects.
    """

    name = "make negatives"

    def __init__(self, build_makers: Callable[[], Mapping[str, NegativeMaker]]):
        super().__init__()
        self._build = build_makers
        self.makers: Mapping[str, NegativeMaker] | None = None
        self.buffers: dict[str, list[Work]] = defaultdict(list)

    def process(self, work: Work) -> Iterable[Work]:
        if self.makers is None:
            self.makers = self._build()
        maker = self.makers[work.kind]
        buffer = self.buffers[work.kind]
        buffer.append(work)
        if len(buffer) >= maker.batch_size:
            self.buffers[work.kind] = []
            yield from self._make(maker, buffer)

    def flush(self) -> Iterable[Work]:
        for kind, buffer in list(self.buffers.items()):
            self.buffers[kind] = []
            if buffer:
                yield from self._make(self.makers[kind], buffer)

    def _make(self, maker: NegativeMaker, batch: list[Work]) -> list[Work]:
        pairs, rejects = self._attempt(maker, batch)
        by_key = {pair.key: pair for pair in pairs} | {reject.key: reject for reject in rejects}
        for work in batch:
            outcome = by_key.get(work.key)
            if isinstance(outcome, Pair):
                work.pair = outcome
                self.stats["pairs"] += 1
            else:
                work.reject = outcome or Reject(
                    work.key,
                    work.unit.source,
                    "engine_error",
                    "the maker returned nothing for this unit",
                    negative_type=work.kind,
                )
                self.stats[work.reject.reason] += 1
            work.image = None  # the decoded image is not needed any more
        return batch

    def _attempt(self, maker: NegativeMaker, batch: list[Work]) -> tuple[list[Pair], list[Reject]]:
        try:
            return maker.make([(work.unit, work.image) for work in batch])
        except Exception as err:  # noqa: BLE001 - one bad batch must not end a long run
            if len(batch) == 1:
                work = batch[0]
                detail = f"{type(err).__name__}: {err}"
                return [], [
                    Reject(work.key, work.unit.source, "engine_error", detail, negative_type=work.kind)
                ]
            half = len(batch) // 2
            left, right = self._attempt(maker, batch[:half]), self._attempt(maker, batch[half:])
            return left[0] + right[0], left[1] + right[1]
