"""The generation pipeline of one shard: units → sample → negatives → validate → shard store.

Steps run in one direction (DESIGN.md): a source reader yields units (and rejects for bad
records), the recipe's bottom-k sample and the shard hash pick this shard's units, units already
in the store are skipped, images are loaded, and batches go to the weakening or injection maker.
Every batch is written durably before the next one starts, so ``kill -9`` loses at most the batch
in flight and a rerun of the same command finishes the work.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from bpo_data.hashing import shard_of
from bpo_data.images import ImageError, load_image
from bpo_data.manifest import write_or_check_manifest
from bpo_data.recipe import Recipe, SourceSpec
from bpo_data.sampling import bottom_k, negative_types
from bpo_data.schema import NegativeType, Pair, Reject, Unit, pair_key
from bpo_data.sources import read_units
from bpo_data.store import ShardStore, count_lines


class NegativeMaker(Protocol):
    negative_type: str
    batch_size: int

    def make(self, items: list[tuple[Unit, Image.Image]]) -> tuple[list[Pair], list[Reject]]: ...


class StrictModeError(RuntimeError):
    """Raised by ``--strict`` at the first record that cannot become a pair."""


@dataclass
class SourceOverride:
    data: str | None = None
    image_root: str | None = None


@dataclass
class GenerateOptions:
    out_dir: Path
    shard_index: int = 0
    num_shards: int = 1
    sources: list[str] | None = None
    overrides: dict[str, SourceOverride] = field(default_factory=dict)
    strict: bool = False
    recipe_path: str = ""


@dataclass
class RunSummary:
    shard: str
    units_read: int = 0
    units_seen: int = 0
    pairs_planned: int = 0
    already_done: int = 0
    pairs_written: int = 0
    rejects: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    torn_bytes_repaired: int = 0
    models_loaded: bool = False

    @property
    def pairs_per_s(self) -> float:
        return self.pairs_written / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "shard": self.shard,
            "units_read": self.units_read,
            "units_seen": self.units_seen,
            "pairs_planned": self.pairs_planned,
            "already_done": self.already_done,
            "pairs_written": self.pairs_written,
            "rejects": dict(self.rejects),
            "elapsed_s": round(self.elapsed_s, 3),
            "pairs_per_s": round(self.pairs_per_s, 3),
            "models_loaded": self.models_loaded,
        }


ProgressHook = Callable[[int, int], None]  # (advance, new_total_or_-1)


def _source_with_overrides(
    spec: SourceSpec, override: SourceOverride | None
) -> tuple[str | None, str | None]:
    if override is None:
        return spec.data, spec.image_root
    return override.data or spec.data, override.image_root or spec.image_root


MakerFactory = Callable[[], tuple[dict[str, NegativeMaker], list[str]]]


class ShardRun:
    """One run of one shard.

    ``build_makers`` returns the makers (negative type → the object that makes it) and the generator
    ids they record. It is called only when the first unit with work left is reached, so a rerun of
    a finished or nearly finished shard on a preempted GPU does not pay for loading a 7B model.
    """

    def __init__(self, recipe: Recipe, options: GenerateOptions, build_makers: MakerFactory):
        self.recipe = recipe
        self.options = options
        self._build_makers = build_makers
        self._makers: dict[str, NegativeMaker] | None = None
        self.summary = RunSummary(shard=f"{options.shard_index}/{options.num_shards}")

    def _maker(self, kind: str) -> NegativeMaker:
        if self._makers is None:
            self._makers, generators = self._build_makers()
            self.summary.models_loaded = True
            opts = self.options
            write_or_check_manifest(opts.out_dir, self.recipe, opts.recipe_path, generators)
        return self._makers[kind]

    def _specs(self) -> list[SourceSpec]:
        wanted = self.options.sources
        specs = [s for s in self.recipe.sources if wanted is None or s.name in wanted]
        if wanted:
            unknown = sorted(set(wanted) - {s.name for s in specs})
            if unknown:
                raise ValueError(
                    f"recipe {self.recipe.name!r} has no source {unknown}; "
                    f"it has {[s.name for s in self.recipe.sources]}"
                )
        return specs

    def _units(self, spec: SourceSpec) -> Iterator[Unit | Reject]:
        data, image_root = _source_with_overrides(spec, self.options.overrides.get(spec.name))
        return read_units(spec, seed=self.recipe.seed, data=data, image_root=image_root)

    def _mine(self, key: str) -> bool:
        return shard_of(key, self.options.num_shards) == self.options.shard_index

    def _unit_keys(self, spec: SourceSpec) -> Iterator[str]:
        for item in self._units(spec):
            if isinstance(item, Unit):
                self.summary.units_read += 1
                yield item.key

    def plan(self, done: set[str]) -> dict[str, dict[str, list[NegativeType]]]:
        """First pass: per source, this shard's sampled units (bottom-k over the whole source) and the
        negative types each one gets. Decided once here; the second pass only looks them up."""
        selected: dict[str, dict[str, list[NegativeType]]] = {}
        for spec in self._specs():
            sampled = bottom_k(self._unit_keys(spec), spec.quota, self.recipe.seed)
            selected[spec.name] = {
                key: negative_types(key, spec, self.recipe.seed) for key in sampled if self._mine(key)
            }
        pair_keys = self._pair_keys(selected)
        self.summary.pairs_planned = len(pair_keys)
        self.summary.already_done = sum(key in done for key in pair_keys)
        return selected

    @staticmethod
    def _pair_keys(selected: dict[str, dict[str, list[NegativeType]]]) -> list[str]:
        return sorted(
            pair_key(key, kind)
            for units in selected.values()
            for key, kinds in units.items()
            for kind in kinds
        )

    def run(self, progress: ProgressHook | None = None) -> RunSummary:
        started = time.perf_counter()
        opts = self.options
        with ShardStore(opts.out_dir, opts.shard_index, opts.num_shards) as store:
            write_or_check_manifest(opts.out_dir, self.recipe, opts.recipe_path, [])
            self.summary.torn_bytes_repaired = store.torn_bytes
            done = store.done_keys()
            selected = self.plan(done)
            store.write_plan(self._plan_record(selected, store))
            if progress:
                progress(0, self.summary.pairs_planned - self.summary.already_done)
            for spec in self._specs():
                self._run_source(spec, selected[spec.name], done, store, progress)
            self.summary.elapsed_s = time.perf_counter() - started
            store.write_summary(self.summary.to_dict())
        return self.summary

    def _plan_record(self, selected: dict[str, dict[str, list[NegativeType]]], store: ShardStore) -> dict:
        """This run's pair keys and start, so ``bpo-data status`` counts progress exactly while it runs."""
        keys = self._pair_keys(selected)
        return {
            "shard": self.summary.shard,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": time.time(),
            "pairs_planned": len(keys),
            "already_done": self.summary.already_done,
            "pair_lines_at_start": count_lines(store.pairs_path),
            "pair_keys": keys,
        }

    def _reject(self, store: ShardStore, reject: Reject, done: set[str]) -> None:
        if self.options.strict:
            raise StrictModeError(f"{reject.reason}: {reject.detail} (key {reject.key})")
        store.write([], [reject])
        done.add(reject.key)
        self.summary.rejects[reject.reason] += 1

    def _run_source(
        self,
        spec: SourceSpec,
        selected: dict[str, list[NegativeType]],
        done: set[str],
        store: ShardStore,
        progress: ProgressHook | None,
    ) -> None:
        buffers: dict[str, list[tuple[Unit, Image.Image]]] = defaultdict(list)
        for item in self._units(spec):
            if isinstance(item, Reject):
                if item.key not in done and self._mine(item.key):
                    self._reject(store, item, done)
                continue
            if item.key not in selected:
                continue
            self.summary.units_seen += 1
            todo = [k for k in selected[item.key] if pair_key(item.key, k) not in done]
            if not todo:
                continue
            try:
                image = load_image(item.image_root, item.image, self.recipe.images.max_pixels)
            except ImageError as err:
                for kind in todo:
                    self._reject(
                        store,
                        Reject(
                            pair_key(item.key, kind),
                            item.source,
                            err.reason,
                            err.detail,
                            file=str(Path(item.image_root) / item.image),
                            negative_type=kind,
                        ),
                        done,
                    )
                    if progress:
                        progress(1, -1)
                continue
            for kind in todo:
                buffers[kind].append((item, image))
                if len(buffers[kind]) >= self._maker(kind).batch_size:
                    self._flush(kind, buffers[kind], store, done, progress)
                    buffers[kind] = []
        for kind, items in buffers.items():
            if items:
                self._flush(kind, items, store, done, progress)

    def _flush(
        self,
        kind: str,
        items: list[tuple[Unit, Image.Image]],
        store: ShardStore,
        done: set[str],
        progress: ProgressHook | None,
    ) -> None:
        pairs, rejects = self._make(self._maker(kind), items)
        if self.options.strict and rejects:
            first = rejects[0]
            raise StrictModeError(f"{first.reason}: {first.detail} (key {first.key})")
        store.write(pairs, rejects)
        done.update(p.key for p in pairs)
        done.update(r.key for r in rejects)
        self.summary.pairs_written += len(pairs)
        self.summary.rejects.update(r.reason for r in rejects)
        if progress:
            progress(len(items), -1)

    def _make(self, maker: NegativeMaker, items: list[tuple[Unit, Image.Image]]):
        """Run a batch; on an exception (e.g. out of memory) split it, and reject only what still fails."""
        try:
            return maker.make(items)
        except Exception as err:  # noqa: BLE001 - one bad batch must not end a long run
            if len(items) == 1:
                unit = items[0][0]
                detail = f"{type(err).__name__}: {err}"
                return [], [
                    Reject(
                        pair_key(unit.key, maker.negative_type),
                        unit.source,
                        "engine_error",
                        detail,
                        negative_type=maker.negative_type,
                    )
                ]
            half = len(items) // 2
            left = self._make(maker, items[:half])
            right = self._make(maker, items[half:])
            return left[0] + right[0], left[1] + right[1]
