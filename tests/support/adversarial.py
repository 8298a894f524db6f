"""Adversarial inputs for the reliability suite, and the run that makes RELIABILITY.md's table.

Each case is one kind of bad input (a row of the table), made here rather than stored, with what
must come of it: a reject with a named reason, a refusal with one ``error:`` line, or — for input
that is valid but unusual (an id of 2**64, a ``1e400``) — a pair like any other. Good records sit
around the bad ones, so a bad one that takes its neighbours down shows as records lost.

- ``bad_records()``: records as they appear in a file (a JSONL line, an array item), for both layouts;
- ``write_source()``: a source of good and bad records, images (also bad ones), and a private file
  outside the image root that a symbolic link inside it leads towards;
- ``run_suite()``: everything through the real CLI (generate, export), plus the folder, flag and
  engine scenarios; ``python tests/support/adversarial.py`` prints the table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

GOOD = 24  # good records in each layout, around the bad ones
MANY = 40  # records of the run that SIGTERM stops
SECRET = b"PRIVATE-BYTES-" + bytes(range(256)) * 8  # what must never reach an export
KEY = "sk-CANARY-9f1e2d3c4b5a69788796a5b4c3d2e1f0"  # an API key that must never be written anywhere
ANSWER = "There are {n} red dogs to the left of a blue car near two chairs."


@dataclass(frozen=True)
class BadRecord:
    """One bad (or unusual) record: its raw text in a file, and the reason it must be rejected with.

    ``reason`` "unit" means the record is valid and must become a pair; ``stage`` says where the
    reason is given: "read" (the reader), "image" (the pipeline, opening the image).
    """

    kind: str
    name: str
    text: bytes
    reason: str
    stage: str = "read"
    layouts: tuple[str, ...] = ("jsonl", "array")
    record_id: str | None = None  # the id the record's units or rejects are keyed by, when it has one


def _conv(question: str = "<image>\nWhat is in the picture?", answer: str = ANSWER.format(n=3)) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def _json(record: dict) -> bytes:
    return json.dumps(record).encode()


def good_record(i: int) -> dict:
    return {
        "id": f"g{i}",
        "image": f"good/{i}.jpg",
        "conversations": _conv(answer=ANSWER.format(n=i % 4 + 2)),
    }


def _with(rid: str, **fields) -> dict:
    return {"id": rid, "image": "good/0.jpg", "conversations": _conv(), **fields}


def bad_records() -> list[BadRecord]:
    """The record-level cases, each with its expected outcome."""
    deep = b"[" * 100_000 + b"]" * 100_000
    cases = [
        # encoding
        BadRecord(
            "encoding",
            "lone surrogate escape in an answer",
            _json(_with("enc-surrogate", conversations=_conv(answer="bad \ud800 text"))),
            "non_utf8",
            record_id="enc-surrogate",
        ),
        BadRecord("encoding", "lone surrogate escape in the id", _json(_with("enc-\udfff-id")), "non_utf8"),
        BadRecord(
            "encoding",
            "a byte that is not UTF-8 (0xff)",
            _json(_with("enc-ff", conversations=_conv(answer="caf@"))).replace(b"@", b"\xff"),
            "non_utf8",
        ),
        BadRecord(
            "encoding",
            "Latin-1 text (0xe9)",
            _json(_with("enc-latin", conversations=_conv(answer="caf@"))).replace(b"@", b"\xe9"),
            "non_utf8",
        ),
        BadRecord(
            "encoding",
            "a BOM before a later JSONL line",
            b"\xef\xbb\xbf" + _json(_with("enc-bom")),
            "unit",
            layouts=("jsonl",),
            record_id="enc-bom",
        ),
        # structure
        BadRecord(
            "structure",
            "one field nested 100,000 deep",
            _json(_with("deep-100k", meta="@")).replace(b'"@"', deep),
            "too_deep",
        ),
        BadRecord(
            "structure",
            "nested 100 deep (parses, over the bound)",
            _json(_with("deep-100", meta="@")).replace(b'"@"', b"[" * 100 + b"]" * 100),
            "too_deep",
        ),
        BadRecord(
            "structure",
            "an integer of 5,000 digits",
            _json(_with("num-5000", score="@")).replace(b'"@"', b"7" * 5000),
            "corrupt_json",
        ),
        BadRecord(
            "structure",
            "an integer id >= 2**63 (valid)",
            _json(_with("@")).replace(b'"@"', str(2**64 + 7).encode()),
            "unit",
            record_id=str(2**64 + 7),
        ),
        BadRecord(
            "structure",
            "1e400 in a field (valid)",
            _json(_with("num-1e400", score="@")).replace(b'"@"', b"1e400"),
            "unit",
            record_id="num-1e400",
        ),
        BadRecord(
            "structure",
            "a syntax error inside a record",
            b'{"id": "syntax", "image": , "x": 1}',
            "corrupt_json",
        ),
        BadRecord("structure", "an item that is not a record", b'["not", "a", "record"]', "corrupt_json"),
        BadRecord(
            "structure", "a record of 9 MB", _json(_with("huge", pad="x" * (9 << 20))), "record_too_large"
        ),
        # content
        BadRecord(
            "content",
            "an answer of zero-width characters only",
            _json(_with("zw-answer", conversations=_conv(answer="\u200b\u200d\ufeff \u2060"))),
            "empty_answer",
            record_id="zw-answer",
        ),
        BadRecord(
            "content",
            "a question of zero-width characters only",
            _json(_with("zw-question", conversations=_conv(question="<image>\u200b\u200c"))),
            "empty_question",
            record_id="zw-question",
        ),
        BadRecord(
            "content",
            "<image> inside an answer and glued into a question (valid)",
            _json(_with("marker", conversations=_conv("What<image>colour is it?", "A <image>red dog."))),
            "unit",
            record_id="marker",
        ),
        BadRecord(
            "content",
            "a question of 1 MB",
            _json(_with("long-q", conversations=_conv("Why? " * 200_000))),
            "prompt_too_long",
            record_id="long-q",
        ),
        BadRecord(
            "content",
            "an answer of 100 KB",
            _json(_with("long-a", conversations=_conv(answer="So red. " * 12_500))),
            "answer_too_long",
            record_id="long-a",
        ),
        BadRecord(
            "content",
            "600 exchanges with turns: all (each turn repeats the ones before)",
            _json(
                _with(
                    "long-chat",
                    conversations=[
                        m
                        for t in range(600)
                        for m in _conv(f"Question {t} about the red dog?", ANSWER.format(n=t % 4 + 2))
                    ],
                )
            ),
            "prompt_too_long",
            record_id="long-chat",
        ),
        # paths, by their text
        BadRecord(
            "paths",
            "an absolute image path",
            _json(_with("abs", image="/etc/passwd")),
            "unsafe_image_path",
            record_id="abs",
        ),
        BadRecord(
            "paths",
            "'..' out of the root",
            _json(_with("climb", image="../../secret/x.jpg")),
            "unsafe_image_path",
            record_id="climb",
        ),
        BadRecord(
            "paths",
            "a NUL in the path",
            _json(_with("nul", image="good/0.jpg\u0000.png")),
            "unsafe_image_path",
            record_id="nul",
        ),
        BadRecord(
            "paths",
            "a drive letter",
            _json(_with("drive", image="C:\\images\\a.jpg")),
            "unsafe_image_path",
            record_id="drive",
        ),
        BadRecord(
            "paths",
            "a path of 5,000 characters",
            _json(_with("longpath", image="a/" * 2500 + "x.jpg")),
            "unsafe_image_path",
            record_id="longpath",
        ),
        # paths, by what they resolve to (the pipeline opens them)
        BadRecord(
            "paths",
            "'..' through a symlinked sub-folder to a private file",
            _json(_with("via-link", image="coco/../private/secret.jpg")),
            "unsafe_image_path",
            stage="image",
            record_id="via-link",
        ),
        BadRecord(
            "paths",
            "a file symlink inside the root to a private file",
            _json(_with("file-link", image="good/link.jpg")),
            "unsafe_image_path",
            stage="image",
            record_id="file-link",
        ),
        BadRecord(
            "paths",
            "a symlinked sub-folder nobody trusted",
            _json(_with("untrusted", image="coco/train2017/1.jpg")),
            "unsafe_image_path",
            stage="image",
            record_id="untrusted",
        ),
        # images
        BadRecord(
            "images",
            "a missing image",
            _json(_with("missing", image="good/none.jpg")),
            "missing_image",
            stage="image",
            record_id="missing",
        ),
        BadRecord(
            "images",
            "not an image",
            _json(_with("text-img", image="bad/text.jpg")),
            "unreadable_image",
            stage="image",
            record_id="text-img",
        ),
        BadRecord(
            "images",
            "a PNG whose header claims 100000x100000",
            _json(_with("bomb", image="bad/bomb.png")),
            "image_too_large",
            stage="image",
            record_id="bomb",
        ),
        BadRecord(
            "images",
            "a 2000x1 image",
            _json(_with("thin", image="bad/thin.png")),
            "image_aspect_ratio",
            stage="image",
            record_id="thin",
        ),
        BadRecord(
            "images",
            "CMYK, palette and RGBA images (valid: converted)",
            _json(_with("modes", image="bad/cmyk.jpg")),
            "unit",
            stage="image",
            record_id="modes",
        ),
    ]
    return cases


def exact_duplicates() -> tuple[bytes, bytes]:
    """A record and its exact copy: the copy is a ``duplicate_record``."""
    record = _json(_with("twin"))
    return record, record


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def make_images(base: Path) -> Path:
    """The image root (good and bad images) beside ``outside/``: ``coco -> outside/coco`` and a private
    file, the layout README describes for ShareGPT4V's sub-folders. Returns the image root."""
    root, outside = base / "images", base / "outside"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    (outside / "coco" / "train2017").mkdir(parents=True)
    (outside / "private").mkdir()
    (outside / "private" / "secret.jpg").write_bytes(SECRET)
    for i in range(GOOD):
        Image.new("RGB", (40, 30), (i * 9 % 256, 80, 160)).save(root / "good" / f"{i}.jpg")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(outside / "coco" / "train2017" / "1.jpg")
    os.symlink(outside / "coco", root / "coco")
    os.symlink(outside / "private" / "secret.jpg", root / "good" / "link.jpg")
    (root / "bad" / "text.jpg").write_text("this is not an image", encoding="utf-8")
    (root / "bad" / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    Image.new("RGB", (2000, 1), (1, 2, 3)).save(root / "bad" / "thin.png")
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(root / "bad" / "cmyk.jpg")
    return root


@dataclass
class Placed:
    """A case written into a file: where (for reject keys of broken records) and under which id."""

    case: BadRecord
    tag: str  # "line7" / "item6"


def write_source(path: Path, layout: str, cases: list[BadRecord]) -> list[Placed]:
    """Good and bad records interleaved, plus an id-less record, an id shaped like its fallback id and an
    exact duplicate; returns where each bad case went."""
    items: list[tuple[bytes, BadRecord | None]] = [
        (json.dumps({"image": "good/1.jpg", "conversations": _conv()}).encode(), None)
    ]
    twin, copy = exact_duplicates()
    items += [(_json(_with("idx-0")), None), (twin, None)]
    placed_copy = BadRecord("content", "an exact duplicate record", copy, "duplicate_record")
    bad = [c for c in cases if layout in c.layouts] + [placed_copy]
    for i in range(max(GOOD, len(bad))):
        if i < GOOD:
            items.append((_json(good_record(i)), None))
        if i < len(bad):
            items.append((bad[i].text, bad[i]))
    placed = [
        Placed(case, f"line{n + 1}" if layout == "jsonl" else f"item{n}")
        for n, (_, case) in enumerate(items)
        if case
    ]
    if layout == "jsonl":
        path.write_bytes(b"\n".join(text for text, _ in items) + b"\n")
    else:
        path.write_bytes(b"[\n" + b",\n".join(text for text, _ in items) + b"\n]")
    return placed


def expected_good_ids() -> set[str]:
    """Record ids that must become pairs in every layout: the good records, the id-less one (idx-0),
    the one whose own id looks like it (escaped), the first twin."""
    return {f"g{i}" for i in range(GOOD)} | {"idx-0", "=idx-0", "twin"}


def outcome_of(placed: Placed, keys_by_reason: dict[str, set[str]], source: str) -> str:
    """The reason given for a placed case ('unit' when it became a unit/pair), or 'missing'."""
    case = placed.case
    own = {f"{source}/@{placed.tag}"}
    if case.record_id is not None:
        prefix = f"{source}/{case.record_id}"
        reasons = {
            reason
            for reason, keys in keys_by_reason.items()
            for key in keys
            if key in own or key == prefix or key.startswith(prefix + "/")
        }
    else:
        reasons = {reason for reason, keys in keys_by_reason.items() if keys & own}
    if case.record_id == "long-chat":
        reasons.discard("unit")  # its first turns fit the bound and are units
    if len(reasons) == 1:
        return reasons.pop()
    return "missing" if not reasons else "+".join(sorted(reasons))


# --- the CLI run ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a kind of bad input and what came of every case of it."""

    kind: str
    tried: int = 0
    handled: int = 0
    crashes: int = 0
    lost: int = 0
    duplicated: int = 0
    leaks: int = 0
    notes: list[str] = field(default_factory=list)


class Tally:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.skipped: list[str] = []

    def add(
        self,
        kind: str,
        name: str,
        *,
        handled: bool,
        crashed: bool = False,
        lost: int = 0,
        duplicated: int = 0,
        leaks: int = 0,
    ) -> None:
        row = self.rows.setdefault(kind, Row(kind))
        row.tried += 1
        row.handled += handled and not crashed
        row.crashes += crashed
        row.lost += lost
        row.duplicated += duplicated
        row.leaks += leaks
        if not handled or crashed or lost or duplicated or leaks:
            row.notes.append(name)

    def markdown(self) -> str:
        lines = [
            "| kind of bad input | tried | handled with a reason | crashes | records lost | duplicated "
            "| leaks |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows.values():
            lines.append(
                f"| {row.kind} | {row.tried} | {row.handled} | {row.crashes} | {row.lost} | "
                f"{row.duplicated} | {row.leaks} |"
            )
        return "\n".join(lines)

    def failures(self) -> list[str]:
        return [f"{row.kind}: {note}" for row in self.rows.values() for note in row.notes]


def cli(*args: str, env: dict, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bpo_data", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def crashed(result: subprocess.CompletedProcess) -> bool:
    """A traceback, or a death by signal: what no input may cause."""
    return "Traceback (most recent call last)" in result.stderr or result.returncode < 0


def one_error_line(result: subprocess.CompletedProcess, status: int = 2) -> bool:
    """Refused the way the CLI promises: the status, one ``error:`` line, no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result.returncode == status and len(errors) == 1 and not crashed(result)


def recipe(
    path: Path,
    sources: list[dict],
    *,
    negatives="both",
    injector: dict | None = None,
    run: dict | None = None,
) -> Path:
    body = {
        "name": "adversarial",
        "seed": 3,
        "model": "smoke",
        "sources": [
            {"format": "llava", "turns": "all", "style": "qa", "negatives": negatives, **s} for s in sources
        ],
        "weaken": {"sampling": {"temperature": 0.5, "max_new_tokens": 6}},
        "inject": injector or {"injector": "rules"},
        "run": {"device": "cpu", "weaken": {"batch_size": 16}, **(run or {})},
    }
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def _shard_keys(out: Path, kind: str) -> list[str]:
    keys = []
    for path in sorted(out.glob(f"{kind}-*.jsonl")):
        with open(path, "rb") as handle:
            keys += [json.loads(line)["key"] for line in handle if line.strip()]
    return keys


def _rejects_by_reason(out: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(out.glob("rejects-*.jsonl")):
        with open(path, "rb") as handle:
            for line in handle:
                record = json.loads(line)
                found.setdefault(record["reason"], set()).add(record["key"])
    return found


def _exported(dataset: Path) -> tuple[list[str], bytes]:
    """The ids of an export's rows, and all its parquet bytes (to look for leaked content)."""
    import pyarrow.parquet as pq

    ids: list[str] = []
    blob = b""
    for path in sorted(dataset.glob("data/*.parquet")):
        ids += pq.read_table(path, columns=["id"]).column("id").to_pylist()
        blob += path.read_bytes()
    return ids, blob


def _everything_written(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def _leaks(texts: list[str | bytes]) -> int:
    """Pieces of the canary key (any 8 characters of it) or of the private file found in ``texts``."""
    pieces = [KEY[i : i + 8].encode() for i in range(len(KEY) - 7)] + [SECRET[:32]]
    return sum(
        any(p in (t if isinstance(t, bytes) else t.encode("utf-8", "replace")) for p in pieces) for t in texts
    )


def records_scenario(tmp: Path, env: dict, tally: Tally) -> None:
    """Every bad record in both layouts, among good ones, through generate and export."""
    root = make_images(tmp)
    cases = bad_records()
    sources = []
    placed: dict[str, list[Placed]] = {}
    for layout in ("jsonl", "array"):
        data = tmp / f"{layout}.{'jsonl' if layout == 'jsonl' else 'json'}"
        placed[layout] = write_source(data, layout, cases)
        sources.append({"name": layout, "data": str(data), "image_root": str(root)})
    out, dataset = tmp / "out", tmp / "dataset"
    made = recipe(tmp / "r.json", sources, negatives={"inject": 1.0})  # no model: images are header-checked
    generated = cli("generate", "--recipe", str(made), "--out", str(out), "--no-progress", env=env)
    exported = cli("export", str(out), "--to", str(dataset), env=env)
    broke = crashed(generated) or crashed(exported) or generated.returncode or exported.returncode
    rejects = _rejects_by_reason(out)
    pairs = _shard_keys(out, "pairs")
    ids, blob = _exported(dataset) if not broke else ([], b"")
    pair_units = {key.rsplit("#", 1)[0] for key in pairs}
    leaked = _leaks([blob, _everything_written(out)])
    for layout, cases_here in placed.items():
        by_reason = {**rejects, "unit": pair_units}
        for spot in cases_here:
            got = outcome_of(spot, by_reason, layout)
            tally.add(
                spot.case.kind,
                f"{layout}: {spot.case.name} -> {got} (want {spot.case.reason})",
                handled=got == spot.case.reason,
                crashed=bool(broke),
            )
        want = {f"{layout}/{rid}/0" for rid in expected_good_ids()}
        lost = len(want - pair_units)
        lost_export = len({f"{unit}#inject" for unit in want} - set(ids))
        tally.add(
            "good records beside the bad ones",
            f"{layout}: every good record became pairs",
            handled=not lost and not lost_export,
            crashed=bool(broke),
            lost=max(lost, lost_export),
            duplicated=(len(pairs) - len(set(pairs))) + (len(ids) - len(set(ids))),
            leaks=leaked,
        )
    long_chat = sum(
        len(json.dumps(r))
        for p in out.glob("pairs-*.jsonl")
        for r in map(json.loads, open(p, "rb"))
        if "long-chat" in r["key"]
    )
    tally.add(
        "content",
        f"600 exchanges write a bounded amount ({long_chat:,} bytes of pairs, both layouts)",
        handled=0 < long_chat < 4_000_000,
    )  # unbounded: ~22 MB a layout


def trust_scenario(tmp: Path, env: dict, tally: Tally) -> None:
    """The symlinked sub-folder layout: refused unless its target is trusted; '..' through it never."""
    root = make_images(tmp)
    data = tmp / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps(_with(rid, image=image)) + "\n"
            for rid, image in (
                ("inside", "coco/train2017/1.jpg"),
                ("escape", "coco/../private/secret.jpg"),
                ("g", "good/2.jpg"),
            )
        )
    )
    source = [{"name": "s", "data": str(data), "image_root": str(root)}]
    out, dataset = tmp / "out", tmp / "dataset"
    flags = ["--trust-image-dir", str(tmp / "outside" / "coco")]
    generated = cli(
        "generate",
        "--recipe",
        str(recipe(tmp / "r.json", source, negatives={"inject": 1.0})),
        "--out",
        str(out),
        "--no-progress",
        *flags,
        env=env,
    )
    exported = cli("export", str(out), "--to", str(dataset), env=env)
    ids, blob = _exported(dataset) if exported.returncode == 0 else ([], b"")
    rejects = _rejects_by_reason(out)
    tally.add(
        "paths",
        "trusted symlinked sub-folder: its images make pairs (--trust-image-dir)",
        handled="s/inside/0#inject" in ids,
        crashed=crashed(generated) or crashed(exported),
    )
    tally.add(
        "paths",
        "trusted sub-folder: '..' through it to a private file is still refused",
        handled="s/escape/0#inject" in rejects.get("unsafe_image_path", set()),
        leaks=_leaks([blob]),
    )


def folder_scenarios(tmp: Path, env: dict, tally: Tally) -> None:
    """Another data file into the same folder, two shard counts at once, quota 0, empty sources,
    a relative image root, SIGTERM, an export killed half-way."""
    from filelock import FileLock

    root = make_images(tmp)
    first, second = tmp / "a.jsonl", tmp / "b.jsonl"
    first.write_text(
        "".join(json.dumps({k: v for k, v in good_record(i).items() if k != "id"}) + "\n" for i in range(4))
    )
    second.write_text(
        "".join(
            json.dumps({k: v for k, v in good_record(i + 10).items() if k != "id"}) + "\n" for i in range(4)
        )
    )
    out = tmp / "out-data"
    rules = ["--injector", "rules", "--model", "smoke", "--no-progress"]
    cli("generate", "--source", str(first), "--image-root", str(root), "--out", str(out), *rules, env=env)
    again = cli(
        "generate", "--source", str(second), "--image-root", str(root), "--out", str(out), *rules, env=env
    )
    tally.add(
        "folders",
        "another data file (ids by position) into the same --out is refused",
        handled=one_error_line(again) and "differs" in again.stderr,
        crashed=crashed(again),
    )

    shards = tmp / "out-shards"
    made = recipe(
        tmp / "r.json",
        [{"name": "s", "data": str(first), "image_root": str(root)}],
        negatives={"inject": 1.0},
    )
    shards.mkdir()
    with FileLock(shards / ".lock-00000-of-00002"):  # a live shard 0/2 (this process holds its lock)
        (shards / ".pid-00000-of-00002").write_text(str(os.getpid()))
        other = cli(
            "generate",
            "--recipe",
            str(made),
            "--out",
            str(shards),
            "--shard",
            "0/3",
            "--no-progress",
            env=env,
        )
    tally.add(
        "folders",
        "a second shard count while one is live is refused",
        handled=one_error_line(other) and "another count" in other.stderr,
        crashed=crashed(other),
    )

    zero = recipe(tmp / "zero.json", [{"name": "s", "data": str(first), "image_root": str(root), "quota": 0}])
    result = cli("generate", "--recipe", str(zero), "--out", str(tmp / "out-zero"), "--no-progress", env=env)
    tally.add(
        "folders",
        "quota: 0",
        handled=result.returncode == 0 and not _shard_keys(tmp / "out-zero", "pairs"),
        crashed=crashed(result),
    )

    for name, text in (("empty.jsonl", ""), ("empty.json", "[]"), ("blank.json", "  \n ")):
        (tmp / name).write_text(text)
        made = recipe(
            tmp / f"{name}.r.json", [{"name": "s", "data": str(tmp / name), "image_root": str(root)}]
        )
        result = cli(
            "generate", "--recipe", str(made), "--out", str(tmp / f"out-{name}"), "--no-progress", env=env
        )
        tally.add(
            "exit status",
            f"an empty source ({name!r}): exit 0 with a warning",
            handled=result.returncode == 0 and "warning: source 's' holds no units" in result.stderr,
            crashed=crashed(result),
        )

    relative = cli(
        "generate",
        "--source",
        str(first),
        "--image-root",
        "images",
        "--out",
        str(tmp / "out-rel"),
        *rules,
        env=env,
        cwd=tmp,
    )
    elsewhere = cli("export", str(tmp / "out-rel"), "--to", str(tmp / "ds-rel"), env=env, cwd=tmp / "outside")
    ids, _ = _exported(tmp / "ds-rel") if elsewhere.returncode == 0 else ([], b"")
    tally.add(
        "folders",
        "a relative --image-root, exported from another directory",
        handled=relative.returncode == 0 and len(ids) == 4,
        crashed=crashed(relative) or crashed(elsewhere),
        lost=4 - len(ids),
    )

    _sigterm_case(tmp, env, root, tally)
    _killed_export_case(tmp, env, tally)


def _sigterm_case(tmp: Path, env: dict, root: Path, tally: Tally) -> None:
    data = tmp / "many.jsonl"
    data.write_text("".join(json.dumps(good_record(i % GOOD) | {"id": f"m{i}"}) + "\n" for i in range(MANY)))
    made = recipe(
        tmp / "slow.json",
        [{"name": "s", "data": str(data), "image_root": str(root)}],
        negatives={"weaken": 1.0},
        run={"weaken": {"batch_size": 2}},
    )
    out = tmp / "out-term"
    args = [
        sys.executable,
        "-m",
        "bpo_data",
        "generate",
        "--recipe",
        str(made),
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pairs = out / "pairs-00000-of-00001.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (pairs.exists() and pairs.stat().st_size):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    left = sorted(p.name for p in out.glob(".pid-*"))
    rerun = cli("generate", "--recipe", str(made), "--out", str(out), "--no-progress", env=env)
    keys = _shard_keys(out, "pairs") + _shard_keys(out, "rejects")
    tally.add(
        "signals",
        "SIGTERM mid-run: no pid file left, a rerun completes without duplicates",
        handled=not left and rerun.returncode == 0 and len(set(keys)) == MANY,
        crashed="Traceback" in err or crashed(rerun),
        duplicated=len(keys) - len(set(keys)),
        lost=MANY - len(set(keys)),
    )


def _killed_export_case(tmp: Path, env: dict, tally: Tally) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    target = tmp / "ds-killed"
    stale = tmp / f".{target.name}.tmp-{os.uname().nodename}-{dead.pid}-abc123"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "part-00000.parquet").write_bytes(b"half")
    result = cli("export", str(tmp / "out-rel"), "--to", str(target), env=env)
    tally.add(
        "folders",
        "a staging folder left by a killed export is removed by the next one",
        handled=result.returncode == 0 and not stale.exists(),
        crashed=crashed(result),
    )


def flag_scenarios(tmp: Path, env: dict, tally: Tally) -> None:
    """Inputs at fault at the CLI: one ``error:`` line and exit 2, never a traceback."""
    root = make_images(tmp)
    data = tmp / "d.jsonl"
    data.write_text("".join(json.dumps(good_record(i)) + "\n" for i in range(3)))
    made = recipe(
        tmp / "r.json", [{"name": "s", "data": str(data), "image_root": str(root)}], negatives={"inject": 1.0}
    )
    (tmp / "a-file").write_text("x")
    (tmp / "a-dir").mkdir()
    generate = ["generate", "--recipe", str(made), "--no-progress"]
    cases = {
        "--out is a file": [*generate, "--out", str(tmp / "a-file")],
        "--recipe is a folder": ["generate", "--recipe", str(tmp / "a-dir")],
        "--data is a folder": [
            "generate",
            "--source",
            "llava-instruct",
            "--data",
            str(tmp / "a-dir"),
            "--image-root",
            str(root),
            "--out",
            str(tmp / "o1"),
            "--no-progress",
        ],
        "a model folder that does not exist": [
            *generate,
            "--model",
            str(tmp / "no-model"),
            "--out",
            str(tmp / "o2"),
        ],
        "a shard spec out of range": [*generate, "--shard", "3/2", "--out", str(tmp / "o3")],
        "export from a folder that is not a generation": [
            "export",
            str(tmp / "a-dir"),
            "--to",
            str(tmp / "o4"),
        ],
    }
    for name, args in cases.items():
        result = cli(*args, env=env)
        tally.add("flags and paths", name, handled=one_error_line(result), crashed=crashed(result))

    out = tmp / "out-bad-line"
    cli("generate", "--recipe", str(made), "--out", str(out), "--no-progress", env=env)
    pairs = next(out.glob("pairs-*.jsonl"))
    lines = pairs.read_text().splitlines()
    record = json.loads(lines[0]) | {"prompt": "a string, not messages"}
    pairs.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    onto_file = cli("export", str(out), "--to", str(tmp / "a-file"), env=env)
    tally.add(
        "flags and paths", "export onto a file", handled=one_error_line(onto_file), crashed=crashed(onto_file)
    )
    result = cli("export", str(out), "--to", str(tmp / "ds-bad-line"), env=env)
    tally.add(
        "flags and paths",
        "export of a pair line whose prompt is a string",
        handled=one_error_line(result) and f"{pairs}:1" in result.stderr,
        crashed=crashed(result),
    )
    _filesystem_cases(tmp, env, made, tally)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A small tmpfs at ``path`` (root in a container may mount one); False where that is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def _filesystem_cases(tmp: Path, env: dict, made: Path, tally: Tally) -> None:
    """A read-only --out (even for a finished shard), a full disk, a read-only export folder."""
    with _tmpfs(tmp / "fs", "4m") as mounted:
        if not mounted:
            tally.skipped.append("read-only and full file systems: mounting a tmpfs needs root")
            return
        out = tmp / "fs" / "out"
        done = cli("generate", "--recipe", str(made), "--out", str(out), "--no-progress", env=env)
        _remount(tmp / "fs", "ro")
        rerun = cli("generate", "--recipe", str(made), "--out", str(out), "--no-progress", env=env)
        tally.add(
            "flags and paths",
            "a read-only --out holding a finished shard",
            handled=done.returncode == 0 and one_error_line(rerun),
            crashed=crashed(rerun),
        )
        export = cli("export", str(out), "--to", str(tmp / "fs" / "ds"), env=env)
        tally.add(
            "flags and paths",
            "export into a read-only folder",
            handled=one_error_line(export),
            crashed=crashed(export),
        )
    with _tmpfs(tmp / "full", "96k"):
        data = tmp / "wide.jsonl"
        data.write_text(
            "".join(json.dumps(good_record(i % GOOD) | {"id": f"w{i}"}) + "\n" for i in range(600))
        )
        wide = recipe(
            tmp / "wide.json",
            [{"name": "s", "data": str(data), "image_root": str(tmp / "images")}],
            negatives={"inject": 1.0},
        )
        out = tmp / "full" / "out"
        full = cli("generate", "--recipe", str(wide), "--out", str(out), "--no-progress", env=env)
        _remount(tmp / "full", "size=16m")
        resumed = cli("generate", "--recipe", str(wide), "--out", str(out), "--no-progress", env=env)
        keys = _shard_keys(out, "pairs") + _shard_keys(out, "rejects")
        tally.add(
            "flags and paths",
            "the disk fills up mid-run, then a rerun resumes",
            handled=one_error_line(full) and "no space left" in full.stderr and resumed.returncode == 0,
            crashed=crashed(full) or crashed(resumed),
            duplicated=len(keys) - len(set(keys)),
            lost=600 - len(set(keys)),
        )


def engine_scenarios(tmp: Path, env: dict, tally: Tally) -> None:
    """An engine that makes nothing: exit 1 with the reasons (launch retries it); no key written anywhere."""
    from support.servers import error, free_port, scripted_server

    root = make_images(tmp)
    data = tmp / "d.jsonl"
    data.write_text("".join(json.dumps(good_record(i)) + "\n" for i in range(6)))
    keyed = {**env, "OPENAI_API_KEY": KEY}

    def run(name: str, url: str) -> subprocess.CompletedProcess:
        made = recipe(
            tmp / f"{name}.json",
            [{"name": "s", "data": str(data), "image_root": str(root)}],
            negatives={"inject": 1.0},
            injector={"injector": "llm", "model": "served"},
            run={"inject": {"engine": "openai", "base_url": url, "max_retries": 1, "timeout_s": 5}},
        )
        return cli(
            "generate", "--recipe", str(made), "--out", str(tmp / f"out-{name}"), "--no-progress", env=keyed
        )

    down = run("down", f"http://127.0.0.1:{free_port()}/v1")
    tally.add(
        "exit status",
        "the server is down: exit 1 naming engine_error",
        handled=one_error_line(down, status=1) and "engine_error" in down.stderr,
        crashed=crashed(down),
    )
    with scripted_server(lambda body: error(401, message=f"Incorrect API key provided: {KEY}")) as server:
        refused = run("refused", server.url)
    written = _everything_written(tmp / "out-refused")
    tally.add(
        "exit status",
        "the key is refused (401, the server echoes it): exit 1, the key nowhere",
        handled=one_error_line(refused, status=1),
        crashed=crashed(refused),
        leaks=_leaks([written, refused.stdout, refused.stderr]),
    )


SCENARIOS: dict[str, Callable[[Path, dict, Tally], None]] = {
    "records": records_scenario,
    "trust": trust_scenario,
    "folders": folder_scenarios,
    "flags": flag_scenarios,
    "engines": engine_scenarios,
}


def run_suite(tmp: Path, env: dict, only: list[str] | None = None) -> Tally:
    tally = Tally()
    for name, scenario in SCENARIOS.items():
        if only is None or name in only:
            folder = tmp / name
            folder.mkdir(parents=True)
            scenario(folder, env, tally)
    return tally


def main() -> None:
    """Build the smoke model once, run every scenario, print the table and any case that was not handled."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bpo_data.smoke_model import build_smoke_model

    with tempfile.TemporaryDirectory(prefix="bpo-adversarial-") as tmp:
        base = Path(tmp)
        cache = base / "cache"
        cache.mkdir()
        (cache / "smoke-llava-v1").symlink_to(build_smoke_model(base / "smoke"))
        env = {
            **os.environ,
            "BPO_DATA_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env.pop("OPENAI_API_KEY", None)
        started = time.perf_counter()
        tally = run_suite(base / "runs", env)
        print(tally.markdown())
        print(f"\n{sum(r.tried for r in tally.rows.values())} cases in {time.perf_counter() - started:.0f} s")
        for failure in tally.failures():
            print("NOT HANDLED:", failure)
        for skipped in tally.skipped:
            print("SKIPPED:", skipped)


if __name__ == "__main__":
    main()
