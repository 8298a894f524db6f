"""The steps of a shard's pipeline, each small, each counting what it did.

A step takes the stream of ``Work`` items and yields it on (datatrove's ``PipelineStep.run``):
it may drop items, turn one into several, fill them in, or finish them with a reject. Finished
items (a pair or a reject) pass through every later step untouched, so nothing is lost between a
step that rejects and the writer at the end.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bpo_data.hashing import shard_of
from bpo_data.images import ImageError, check_image, load_image
from bpo_data.recipe import SourceSpec
from bpo_data.schema import NegativeType, Pair, Reject, Unit, pair_key
from bpo_data.store import ShardStore, UnwritableRecord


@dataclass
class Work:
    """One pair to make (a unit and a negative type), or a source record that cannot be one."""

    unit: Unit | None
    kind: NegativeType | None = None
    image: Image.Image | None = None
    pair: Pair | None = None
    reject: Reject | None = None

    @property
    def key(self) -> str:
        if self.unit is None:
            return self.reject.key  # type: ignore[union-attr]
        return pair_key(self.unit.key, self.kind) if self.kind else self.unit.key

    @property
    def finished(self) -> bool:
        return self.pair is not None or self.reject is not None

    def fail(self, reason: str, detail: str, file: str = "") -> None:
        """Finish this item with a reject (dropping a pair it may hold)."""
        assert self.unit is not None
        self.pair = None
        self.reject = Reject(self.key, self.unit.source, reason, detail, file=file, negative_type=self.kind)


class Step:
    """A pipeline step: ``process`` each live item (yield it, several, or none), ``flush`` at the end."""

    name = "step"

    def __init__(self) -> None:
        self.stats: Counter = Counter()

    def run(self, items: Iterable[Work]) -> Iterator[Work]:
        for work in items:
            if work.finished:
                yield work
            else:
                yield from self.process(work)
        yield from self.flush()

    def process(self, work: Work) -> Iterable[Work]:
        yield work

    def flush(self) -> Iterable[Work]:
        return ()


class ReadUnits(Step):
    """The units of each source, and a reject for each record that cannot become one."""

    name = "read"

    def __init__(self, specs: list[SourceSpec], read: Callable[[SourceSpec], Iterable[Unit | Reject]]):
        super().__init__()
        self.specs = specs
        self.read = read

    def run(self, items: Iterable[Work]) -> Iterator[Work]:
        for spec in self.specs:
            for item in self.read(spec):
                if isinstance(item, Reject):
                    self.stats["bad records"] += 1
                    yield Work(unit=None, reject=item)
                else:
                    self.stats["units"] += 1
                    yield Work(unit=item)


class Sample(Step):
    """Keeps the units the recipe samples (bottom-k over the whole source, decided before the run),
    one item per negative type each gets."""

    name = "sample"

    def __init__(self, chosen: Mapping[str, list[NegativeType]]):
        super().__init__()
        self.chosen = chosen

    def process(self, work: Work) -> Iterable[Work]:
        kinds = self.chosen.get(work.unit.key)  # type: ignore[union-attr]
        if kinds is None:
            self.stats["not sampled"] += 1
            return
        self.stats["units"] += 1
        for kind in kinds:
            self.stats[kind] += 1
            yield Work(unit=work.unit, kind=kind)


class Shard(Step):
    """Keeps what this shard owns: a stable hash of the key, so any shard count splits the same units."""

    name = "shard"

    def __init__(self, index: int, num_shards: int):
        super().__init__()
        self.index = index
        self.num_shards = num_shards

    def run(self, items: Iterable[Work]) -> Iterator[Work]:
        for work in items:
            owner = work.unit.key if work.unit is not None else work.key
            if shard_of(owner, self.num_shards) == self.index:
                self.stats["kept"] += 1
                yield work
            else:
                self.stats["other shards"] += 1


class SkipDone(Step):
    """Drops what any shard file of the folder already holds (pairs, and rejects that are final)."""

    name = "skip done"

    def __init__(self, done: set[str]):
        super().__init__()
        self.done = done

    def run(self, items: Iterable[Work]) -> Iterator[Work]:
        for work in items:
            if work.key in self.done:
                self.stats["already done"] += 1
            else:
                yield work


class LoadImages(Step):
    """Decodes the image for negatives that look at it; for the others only its header is checked.

    ``needs_pixels(kind)`` says which negative types look at the image; it is asked once per type,
    on the first item of that type, so a run with nothing left to make imports no maker at all.
    """

    name = "load images"

    def __init__(
        self,
        max_pixels: int,
        needs_pixels: Callable[[str], bool],
        *,
        max_aspect_ratio: float | None = None,
        trusted: Sequence[str] = (),
    ):
        super().__init__()
        self.max_pixels = max_pixels
        self.max_aspect_ratio = max_aspect_ratio
        self.trusted = tuple(trusted)
        self._needs_pixels = needs_pixels
        self._decode: dict[str, bool] = {}

    def process(self, work: Work) -> Iterable[Work]:
        unit = work.unit
        if work.kind not in self._decode:
            self._decode[work.kind] = self._needs_pixels(work.kind)
        limits = {"max_aspect_ratio": self.max_aspect_ratio, "trusted": self.trusted}
        try:
            if self._decode[work.kind]:
                work.image = load_image(unit.image_root, unit.image, self.max_pixels, **limits)
                self.stats["decoded"] += 1
            else:
                check_image(unit.image_root, unit.image, self.max_pixels, **limits)
                self.stats["header checked"] += 1
        except ImageError as err:
            self.stats[err.reason] += 1
            work.fail(err.reason, err.detail, file=str(Path(unit.image_root) / unit.image))
        yield work


class StrictModeError(RuntimeError):
    """Raised by ``--strict`` at the first record that cannot become a pair."""


class Write(Step):
    """Appends each finished item to the shard's files as it arrives, and forces them to disk in groups.

    Every record reaches the OS at once, so a killed process loses nothing it finished; an fsync
    every ``every`` records or ``seconds`` (and at the end, or on an interruption) bounds what a
    machine that loses power or is preempted can lose.
    """

    name = "write"

    def __init__(
        self,
        store: ShardStore,
        done: set[str],
        *,
        strict: bool = False,
        every: int = 64,
        seconds: float = 2.0,
        progress: Callable[[int], None] | None = None,
    ):
        super().__init__()
        self.store = store
        self.done = done
        self.strict = strict
        self.every = every
        self.seconds = seconds
        self.progress = progress
        self._unsynced = 0
        self._since = time.monotonic()
        self.examples: dict[str, str] = {}  # the first detail seen of each reject reason

    def run(self, items: Iterable[Work]) -> Iterator[Work]:
        try:
            for work in items:
                if not work.finished:
                    raise RuntimeError(f"{work.key} reached the writer unfinished; a step lost track of it")
                if self.strict and work.reject is not None:
                    raise StrictModeError(f"{work.reject.reason}: {work.reject.detail} (key {work.key})")
                self._write(work)
                yield work
        finally:
            self._sync()

    def _write(self, work: Work) -> None:
        pair = work.pair
        try:
            self.store.write([pair] if pair else [], [work.reject] if work.reject else [], sync=False)
        except UnwritableRecord as err:  # one bad record must not stop the shard
            work.fail("unwritable_record", f"{err}; fix the source record")
            pair = None
            self.store.write([], [work.reject], sync=False)
        self.done.add(work.key)
        reason = "pairs" if pair else work.reject.reason
        self.stats[reason] += 1
        if not pair:
            self.examples.setdefault(reason, work.reject.detail)
        if self.progress is not None:
            self.progress(1)
        self._unsynced += 1
        if self._unsynced >= self.every or time.monotonic() - self._since >= self.seconds:
            self._sync()

    def _sync(self) -> None:
        if self._unsynced:
            self.store.sync()
        self._unsynced = 0
        self._since = time.monotonic()


def run_steps(steps: list[Step]) -> None:
    """Chain the steps (each consumes the one before) and drive the stream to its end."""
    stream: Iterable[Work] = ()
    for step in steps:
        stream = step.run(stream)
    for _ in stream:
        pass
