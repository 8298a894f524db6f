"""The step that makes negatives: work goes to the maker of its negative type, batched or streamed.

A maker works in one of two ways, and says which with ``in_flight``:

- **batches** (``in_flight == 0``): ``make`` answers a list of units at once. Right for a model in
  this process (the hf engine pads a batch into one ``generate``) and for the rules injector. The
  batch runs here, in the pipeline's thread (running it on a background thread while the next batch
  is read and decoded was tried: with the smoke model on 2 CPU cores it was slower, the GIL).
- **streams** (``in_flight > 0``): ``submit`` starts one unit and returns a future, ``finish`` turns
  its engine result into a pair or a reject. Right for engines that serve many requests at once
  (an OpenAI-compatible server, vLLM's scheduler): the step keeps ``in_flight`` units submitted all
  the time and hands each one on the moment it is done, so the engine never waits for the slowest
  request of a batch, nor for the writer.

Either way every unit comes out finished: a pair, or a reject saying why not.
"""

from __future__ import annotations

import queue
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Protocol

from PIL import Image

from bpo_data.engines.base import EngineResult
from bpo_data.pipeline.steps import Step, Work
from bpo_data.schema import Pair, Reject, Unit

# How often a wait for a streamed result wakes up, so that Ctrl-C is noticed at once on any platform.
_POLL_S = 0.2


class NegativeMaker(Protocol):
    """Makes one negative type: pairs, and rejects saying why not."""

    negative_type: str
    generator: str  # recorded in each pair: engine and model (``hf:llava-hf/…``) or ``rules``
    needs_image: bool
    batch_size: int  # units per ``make`` call (batching makers)
    in_flight: int  # 0: ``make`` batches; > 0: ``submit`` streams and this many units stay submitted
    generated_tokens: int  # new tokens its engine generated (0 for the rules injector), in the run summary

    def make(self, items: list[tuple[Unit, Image.Image | None]]) -> tuple[list[Pair], list[Reject]]: ...

    def submit(self, unit: Unit, image: Image.Image | None) -> Future[EngineResult]: ...

    def finish(self, unit: Unit, result: EngineResult) -> Pair | Reject: ...


class MakeNegatives(Step):
    """Hands each item to the maker of its negative type: in batches, or streamed (module docstring).

    The makers (and the models behind them) are built on the first item that needs one, so a rerun
    of a finished shard never loads a model. A batch that raises (out of memory, say) is split in
    two and retried, so only the units that still fail become ``engine_error`` rejects; a streamed
    unit whose request fails is an ``engine_error`` reject on its own.

    Streamed results are handed on in the order they finish. If the run is interrupted (Ctrl-C, an
    error upstream), every result already back is handed on to the writer before the interruption
    goes on, and the requests still out are cancelled.
    """

    name = "make negatives"

    def __init__(self, build_makers: Callable[[], Mapping[str, NegativeMaker]]):
        super().__init__()
        self._build = build_makers
        self.makers: Mapping[str, NegativeMaker] | None = None
        self.buffers: dict[str, list[Work]] = defaultdict(list)
        self._out: dict[Future, Work] = {}  # streamed work whose result has not been handed on
        self._out_by_kind: dict[str, int] = defaultdict(int)
        self._done: queue.SimpleQueue[Future] = queue.SimpleQueue()

    def run(self, items: Iterable[Work]) -> Iterator[Work]:
        try:
            for work in items:
                if work.finished:
                    yield work
                else:
                    yield from self.process(work)
                yield from self._collect(block=False)
            yield from self.flush()
        except (Exception, KeyboardInterrupt, SystemExit):
            yield from self._salvage()
            raise
        finally:
            for future in self._out:  # a later step stopped the run: drop what is still out
                future.cancel()
            self._out.clear()

    def process(self, work: Work) -> Iterable[Work]:
        if self.makers is None:
            self.makers = self._build()
        maker = self.makers[work.kind]
        if getattr(maker, "in_flight", 0) > 0:
            yield from self._stream(maker, work)
            return
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
        while self._out:
            yield from self._collect(block=True)
        for maker in (self.makers or {}).values():
            if getattr(maker, "generated_tokens", 0):
                self.stats[f"{maker.negative_type} generated tokens"] += maker.generated_tokens

    # --- streaming -------------------------------------------------------------------------

    def _stream(self, maker: NegativeMaker, work: Work) -> Iterator[Work]:
        """Submit ``work``; while its maker has ``in_flight`` units out, hand on what finishes.

        A request that fails comes back as a failed result; ``submit`` itself raises only when the
        engine as a whole is gone (a dead vLLM engine), which stops the run: a rerun resumes it.
        """
        future = maker.submit(work.unit, work.image)
        work.image = None  # the engine holds what it needs of the image
        self._out[future] = work
        self._out_by_kind[work.kind] += 1
        future.add_done_callback(self._done.put)
        while self._out_by_kind[work.kind] >= maker.in_flight:
            yield from self._collect(block=True)

    def _collect(self, block: bool) -> Iterator[Work]:
        """Hand on the streamed work that has finished; with ``block``, wait for at least one."""
        while self._out:
            try:
                future = self._done.get(timeout=_POLL_S) if block else self._done.get_nowait()
            except queue.Empty:
                if block:
                    continue
                return
            work = self._out.pop(future)
            self._out_by_kind[work.kind] -= 1
            self._finish(work, self._outcome(work, future))
            yield work
            block = False  # one is enough; take the others only if they are already done

    def _outcome(self, work: Work, future: Future) -> Pair | Reject:
        maker = self.makers[work.kind]
        try:
            return maker.finish(work.unit, future.result())
        except Exception as err:  # noqa: BLE001 - one unit's failure must not end a long run
            return _engine_error(work, err)

    def _salvage(self) -> Iterator[Work]:
        """On an interruption: hand on every streamed result already back (``run`` cancels the rest)."""
        for future, work in list(self._out.items()):
            if future.done() and not future.cancelled():
                del self._out[future]
                self._finish(work, self._outcome(work, future))
                yield work

    # --- batches ---------------------------------------------------------------------------

    def _make(self, maker: NegativeMaker, batch: list[Work]) -> list[Work]:
        pairs, rejects = self._attempt(maker, batch)
        by_key = {pair.key: pair for pair in pairs} | {reject.key: reject for reject in rejects}
        for work in batch:
            outcome = by_key.get(work.key) or _engine_error(work, "the maker returned nothing for this unit")
            self._finish(work, outcome)
        return batch

    def _attempt(self, maker: NegativeMaker, batch: list[Work]) -> tuple[list[Pair], list[Reject]]:
        try:
            return maker.make([(work.unit, work.image) for work in batch])
        except Exception as err:  # noqa: BLE001 - one bad batch must not end a long run
            if len(batch) == 1:
                return [], [_engine_error(batch[0], err)]
            half = len(batch) // 2
            left, right = self._attempt(maker, batch[:half]), self._attempt(maker, batch[half:])
            return left[0] + right[0], left[1] + right[1]

    def _finish(self, work: Work, outcome: Pair | Reject) -> None:
        if isinstance(outcome, Pair):
            work.pair = outcome
            self.stats["pairs"] += 1
        else:
            work.reject = outcome
            self.stats[outcome.reason] += 1
        work.image = None  # the decoded image is not needed any more


def _engine_error(work: Work, detail: str | BaseException) -> Reject:
    if isinstance(detail, BaseException):
        detail = f"{type(detail).__name__}: {detail}"
    return Reject(work.key, work.unit.source, "engine_error", detail, negative_type=work.kind)
